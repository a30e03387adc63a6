"""Search decoded archived events for personal data in clear, field by field.

A policy only scrubs the fields it tags, so checking the tagged fields alone reports a clean
archive while an untagged field holds an e-mail address. This scan reads every archived
value with its writer schema and runs the detectors over every string in every field,
including map keys and values (``ModelCalled.tags``) and text nested in lists and maps, and
whole JSON documents kept as text (``RunStarted.input``). A field's value that is a keyed
mask (``mask:<key id>:<hex>``) counts as masked.

Findings name the field (``EventType.field``), how many values held personal data, which
detectors fired and where the first one sits (segment and offset), never the value itself:
the report may be pasted anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from runstate.retention.masking import mask_key_id

__all__ = [
    "DETECTORS",
    "ArchiveScan",
    "Detector",
    "FieldTally",
    "detect",
    "scan_events",
]


@dataclass(frozen=True)
class Detector:
    """One kind of personal data, and the pattern that finds it in text.

    Attributes:
        kind: What it finds, for reports (``e-mail``).
        pattern: The regular expression.
        accept: Second look at a match (e.g. enough digits for a phone number).
    """

    kind: str
    pattern: re.Pattern[str]
    accept: Callable[[str], bool] = lambda _match: True


def _phone_digits(match: str) -> bool:
    return 9 <= sum(c.isdigit() for c in match) <= 15


DETECTORS: Final = (
    Detector(
        "e-mail",
        re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    ),
    # International (+7 701 123 45 67, +77011234567) or national with separators
    # (8 701 123 45); plain digit runs (ids, timestamps) are not phone numbers here, nor
    # digit groups inside a hyphenated id (a UUID's "-7123-8123-1234-" is not a number).
    Detector(
        "phone number",
        re.compile(
            r"(?<![\w+.:/-])(?:\+\d(?:[ ()-]{0,2}\d){8,14}|\d{1,4}(?:[ ()-]{1,2}\d{1,4}){2,6})"
            r"(?![\w.:/]|-\w)"
        ),
        _phone_digits,
    ),
    # The launch check's synthetic personal data (runstate.checks.synthetic.pii_plan).
    Detector("check token", re.compile(r"check-pii-[0-9a-f]{8}-[a-z-]+")),
)


def detect(text: str, detectors: Iterable[Detector] = DETECTORS) -> set[str]:
    """The kinds of personal data in ``text`` (empty when none, or when it is a mask)."""
    if mask_key_id(text) is not None:
        return set()
    return {
        d.kind for d in detectors if any(d.accept(m.group(0)) for m in d.pattern.finditer(text))
    }


def _strings(value: Any) -> Iterator[str]:
    """Every string in a decoded value: text, bytes as UTF-8, map keys and values, lists."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield value.decode("utf-8", "replace")
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


@dataclass
class FieldTally:
    """What one field (``EventType.field``) held across the scanned records.

    Attributes:
        clear: Records whose value of the field held personal data in clear.
        masked: Records whose value of the field was a keyed mask.
        kinds: The detectors that fired.
        example: Where the first clear value sits (segment and offset), never the value.
    """

    clear: int = 0
    masked: int = 0
    kinds: set[str] = field(default_factory=set)
    example: str | None = None


@dataclass
class ArchiveScan:
    """The fields of the scanned archived records that hold personal data, clear or masked."""

    records: int = 0  # counted by the caller: one record may add its headers too
    undecodable: int = 0
    fields: dict[str, FieldTally] = field(default_factory=dict)

    @property
    def in_clear(self) -> list[str]:
        """Fields with at least one value in clear, sorted."""
        return sorted(n for n, t in self.fields.items() if t.clear)

    @property
    def masked(self) -> list[str]:
        """Fields that were masked and never in clear, sorted."""
        return sorted(n for n, t in self.fields.items() if t.masked and not t.clear)

    def add(self, event_type: str, fields: Mapping[str, Any], where: str) -> None:
        """Tally the fields of one decoded event (or a record's headers) found at ``where``."""
        short = event_type.rsplit(".", 1)[-1]
        for name, value in fields.items():
            texts = list(_strings(value))
            if not texts:
                continue
            kinds: set[str] = set()
            for text in texts:
                kinds |= detect(text)
            masked = any(mask_key_id(t) is not None for t in texts)
            if not kinds and not masked:
                continue
            tally = self.fields.setdefault(f"{short}.{name}", FieldTally())
            if kinds:
                tally.clear += 1
                tally.kinds |= kinds
                tally.example = tally.example or where
            if masked:
                tally.masked += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "records_scanned": self.records,
            "undecodable": self.undecodable,
            "in_clear": {
                n: {
                    "values": self.fields[n].clear,
                    "kinds": sorted(self.fields[n].kinds),
                    "example": self.fields[n].example,
                }
                for n in self.in_clear
            },
            "masked": {n: self.fields[n].masked for n in self.masked},
        }


def scan_events(events: Iterable[tuple[str, str, Mapping[str, Any]]]) -> ArchiveScan:
    """Scan ``(where, event type, fields)`` triples; see the module docstring."""
    scan = ArchiveScan()
    for where, event_type, fields in events:
        scan.records += 1
        scan.add(event_type, fields, where)
    return scan

"""Check 4: where personal data sits, in clear or masked.

The retention policy's ``personal_data`` rules (events topic: event type -> field ->
keep/mask/drop) say which fields are personal. The synthetic run fills every field it can
with recognisable tokens (:func:`~runstate.checks.synthetic.pii_plan`). The check searches:

* the events, state-changes, latest-state, changelog and dead-letters topics (the records
  of the run written during the check) and any log files given, for the tokens (bytes: Avro
  writes strings as plain UTF-8); found means **clear**, else **absent**;
* each archived topic's segments that list the run (or all its live segments, with
  ``archive_scope="all"``), once the archiver has reached the run's last offset (waiting up
  to ``archive_wait_s``): every record in them, of any run, is decoded and every
  string of every field, tagged or not, is run through the personal-data detectors
  (e-mail, phone number, the check's tokens; :mod:`runstate.checks.archive_scan`). A field
  holding a keyed mask (``mask:<key id>:<hex>``) is **masked**.

Personal data in clear in the archive fails the check, whether the policy tags the field or
not, unless the policy says ``keep`` for that field (then it warns): the archive is the
long-term copy the policy promises to scrub. In clear anywhere else is a warning: hot topics
must hold the values (the live state needs them), but the changelog topic keeps each run's
state and the latest-state topic its summary (owner, approver, decider; not the input nor
the approval's subject) for ever (compaction only), and logs are outside the policy. The
summary line and ``--json`` are built from the same counts and name the same fields, each
with a count and an example location, never the value.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from runstate.checks.archive_scan import ArchiveScan
from runstate.checks.deployment import CheckedDeployment
from runstate.checks.results import CheckResult, Verdict
from runstate.checks.synthetic import PiiField
from runstate.errors import DecodeError
from runstate.retention.archiver import decode_archived_value
from runstate.retention.backends import ArchiveStore
from runstate.retention.manifest import SegmentManifest
from runstate.retention.policy import PersonalDataAction, format_duration
from runstate.schemas.codec import SingleObjectCodec
from runstate.streams.reader import RawRecord

__all__ = [
    "Exposure",
    "Place",
    "exposure",
    "found_in",
    "judge_personal_data",
    "scan_places",
    "scan_segments",
]

PlaceKind = Literal["archive", "hot", "compacted", "log"]
_CHUNK = 4 * 1024 * 1024


class Exposure(enum.StrEnum):
    """How a personal-data value appears in one place."""

    CLEAR = "clear"
    MASKED = "masked"
    ABSENT = "absent"


@dataclass(frozen=True)
class Place:
    """Somewhere a run's data may sit.

    Attributes:
        label: e.g. ``events topic``, ``archive: runstate.events``, ``log: worker.log``.
        kind: archive, hot (trimmed by retention), compacted (kept for ever) or log.
        blobs: The bytes to search for tokens; None when the place could not be searched.
        note: What the place keeps (or why it was not searched).
        scan: For an archive, its decoded records' findings (used instead of ``blobs``).
    """

    label: str
    kind: PlaceKind
    blobs: Iterable[bytes] | None
    note: str = ""
    scan: ArchiveScan | None = None


def _needles(fields: Iterable[PiiField]) -> set[bytes]:
    return {f.token.encode() for f in fields}


def found_in(blobs: Iterable[bytes], wanted: Collection[bytes]) -> set[bytes]:
    """The needles of ``wanted`` that occur in any blob (one pass over the blobs)."""
    found: set[bytes] = set()
    for blob in blobs:
        for needle in wanted:
            if needle not in found and needle in blob:
                found.add(needle)
        if len(found) == len(wanted):
            break
    return found


def exposure(found: Collection[bytes], field: PiiField) -> Exposure:
    """Clear if the field's token was found in the bytes, else absent."""
    return Exposure.CLEAR if field.token.encode() in found else Exposure.ABSENT


def _scanned_exposure(scan: ArchiveScan, name: str) -> Exposure:
    tally = scan.fields.get(name)
    if tally is not None and tally.clear:
        return Exposure.CLEAR
    if tally is not None and tally.masked:
        return Exposure.MASKED
    return Exposure.ABSENT


def scan_places(
    places: Sequence[Place], fields: Mapping[str, PiiField]
) -> dict[str, dict[str, Exposure] | None]:
    """``place label -> field name -> exposure``; None for places that were not searched."""
    wanted = _needles(fields.values())
    matrix: dict[str, dict[str, Exposure] | None] = {}
    for place in places:
        if place.scan is not None:
            scan = place.scan
            matrix[place.label] = {name: _scanned_exposure(scan, name) for name in fields}
            continue
        if place.blobs is None:
            matrix[place.label] = None
            continue
        found = found_in(place.blobs, wanted)
        matrix[place.label] = {name: exposure(found, f) for name, f in fields.items()}
    return matrix


def _describe(name: str, scan: ArchiveScan) -> str:
    t = scan.fields[name]
    # No "; " inside: the table view breaks the evidence into lines there.
    return f"{name} ({t.clear} values: {' + '.join(sorted(t.kinds))}, e.g. {t.example})"


def judge_personal_data(
    tags: Mapping[str, PersonalDataAction],
    fields: Mapping[str, PiiField],
    places: Sequence[Place],
    matrix: Mapping[str, Mapping[str, Exposure] | None],
) -> CheckResult:
    """The verdict over a scan; see the module docstring for the rules.

    Args:
        tags: ``EventType.field -> action`` from the policy.
        fields: The synthetic run's personal-data fields, by ``EventType.field``.
        places: The places searched (for their kind, note and archive findings).
        matrix: :func:`scan_places`' answer.
    """
    name = "where personal data sits"
    hidden = {n for n, action in tags.items() if action is not PersonalDataAction.KEEP}
    kept = {n for n, action in tags.items() if action is PersonalDataAction.KEEP}
    judged = sorted(hidden & set(fields))
    unexercised = sorted(set(tags) - set(fields))
    verdict = Verdict.PASS
    lines: list[str] = []
    problems: list[str] = []
    in_clear: dict[str, list[str]] = {}
    place_details: dict[str, dict[str, Any]] = {}
    for place in places:
        seen = matrix.get(place.label)
        detail: dict[str, Any] = {"kind": place.kind, "note": place.note, "fields": None}
        place_details[place.label] = detail
        if seen is None:
            lines.append(f"{place.label}: not searched ({place.note})")
            if place.kind == "archive":
                verdict = _worse(verdict, Verdict.WARN)
            continue
        detail["fields"] = {n: e.value for n, e in seen.items()}
        if place.scan is not None:
            scan = place.scan
            clear, masked = scan.in_clear, scan.masked
            absent = len([n for n in fields if n not in clear and n not in masked])
            detail.update(scan.as_json())
        else:
            clear = sorted(n for n, e in seen.items() if e is Exposure.CLEAR)
            masked = []
            absent = len(seen) - len(clear)
        detail["counts"] = {"clear": len(clear), "masked": len(masked), "absent": absent}
        summary = f"{len(clear)} clear, {len(masked)} masked, {absent} absent"
        if place.scan is not None:
            failing = [n for n in clear if n not in kept]
            if failing:
                verdict = Verdict.FAIL
                untagged = [n for n in failing if n not in hidden]
                problems.append(
                    f"{place.label} holds personal data in clear in {len(failing)} field(s)"
                    f" ({len(untagged)} not tagged by the policy): "
                    + ", ".join(_describe(n, place.scan) for n in failing)
                )
            if set(clear) - set(failing):
                verdict = _worse(verdict, Verdict.WARN)
                problems.append(
                    f"{place.label}: in clear where the policy says keep: "
                    + ", ".join(sorted(set(clear) - set(failing)))
                )
            if place.scan.undecodable:
                verdict = _worse(verdict, Verdict.WARN)
                problems.append(
                    f"{place.label}: {place.scan.undecodable} record(s) could not be decoded,"
                    " so only searched as bytes"
                )
        elif clear:
            verdict = _worse(verdict, Verdict.WARN)
            in_clear.setdefault(place.kind, []).append(place.label)
        lines.append(f"{place.label}: {summary}" + (f" ({place.note})" if place.note else ""))
    if not judged:
        verdict = _worse(verdict, Verdict.WARN)
        problems.append(
            "the policy tags none of the fields the synthetic run fills as mask/drop, so"
            " nothing is scrubbed anywhere"
        )
    if in_clear.get("hot"):
        problems.append(
            f"clear in {', '.join(in_clear['hot'])}: expected, the live run needs them, until"
            " retention trims them"
        )
    if in_clear.get("compacted"):
        problems.append(
            f"clear in {', '.join(in_clear['compacted'])}: these keep each run's latest state"
            " (the latest-state topic its summary) for ever (compaction only)"
        )
    if in_clear.get("log"):
        problems.append(f"clear in {', '.join(in_clear['log'])}: no policy scrubs logs")
    if unexercised:
        lines.append("tagged but not exercised by the synthetic run: " + ", ".join(unexercised))
    details: dict[str, Any] = {
        "tagged": {n: tags[n].value for n in sorted(tags)},
        "judged_fields": judged,
        "not_exercised": unexercised,
        "tokens": {n: f.token for n, f in sorted(fields.items())},
        "places": place_details,
    }
    evidence = "; ".join([*problems, *lines])
    return CheckResult(4, name, verdict, evidence, details)


_RANKS = {Verdict.PASS: 0, Verdict.WARN: 1, Verdict.FAIL: 2}


def _worse(a: Verdict, b: Verdict) -> Verdict:
    return a if _RANKS[a] >= _RANKS[b] else b


# -- collecting the places ----------------------------------------------------------------


def _record_blobs(records: Iterable[RawRecord]) -> list[bytes]:
    out = []
    for r in records:
        out.append((r.key or b"") + b"\n" + (r.value or b""))
        out.extend(v for _k, v in r.headers if v)
    return out


def _file_chunks(path: Path, overlap: int) -> Iterator[bytes]:
    """The file in chunks that overlap by ``overlap`` bytes, so no needle is cut in two."""
    with path.open("rb") as f:
        tail = b""
        while chunk := f.read(_CHUNK):
            yield tail + chunk
            tail = chunk[-overlap:]


def _hot_note(d: CheckedDeployment, topic: str) -> str:
    rules = d.topic_policy(topic)
    if rules is None:
        return "no policy: Kafka keeps it for ever"
    return f"hot: trimmed by `retention apply` after {format_duration(rules.hot)}"


def collect_places(
    d: CheckedDeployment, run_id: str, fields: Mapping[str, PiiField]
) -> list[Place]:
    """Every place to search for the run's values, with the bytes to search."""
    places: list[Place] = []
    records: dict[str, list[RawRecord]] = {}
    for label, topic in d.kafka_places().items():
        records[topic] = d.run_records(topic, run_id)
        compacted = topic in (d.names.latest_state, d.names.runs_changelog)
        note = (
            "compacted: the run's latest state stays for ever" if compacted else _hot_note(d, topic)
        )
        places.append(
            Place(label, "compacted" if compacted else "hot", _record_blobs(records[topic]), note)
        )
    for topic in (d.names.events, d.names.state_changes):
        if d.archive(topic) is not None:
            places.append(_archive_place(d, topic, run_id, records[topic]))
    if d.archive(d.names.events) is None:
        places.append(Place("archive", "archive", None, "the policy archives no events topic"))
    overlap = max((len(n) for n in _needles(fields.values())), default=0)
    for path in d.config.log_files:
        if path.is_file():
            places.append(Place(f"log: {path}", "log", _file_chunks(path, overlap), "no policy"))
        else:
            places.append(Place(f"log: {path}", "log", None, "no such file"))
    return places


def _archive_place(
    d: CheckedDeployment, topic: str, run_id: str, records: Sequence[RawRecord]
) -> Place:
    label = f"archive: {topic}"
    store = d.archive(topic)
    assert store is not None
    if not records:
        return Place(label, "archive", None, "the run wrote nothing to this topic")
    partition = records[0].partition
    first, last = min(r.offset for r in records), max(r.offset for r in records)
    wait = d.config.archive_wait_s
    deadline = time.monotonic() + wait
    while True:
        live = [m for m in store.list_manifests(topic, partition) if m.is_live]
        if any(m.last_offset >= last for m in live):
            break
        if time.monotonic() >= deadline:
            return Place(
                label,
                "archive",
                None,
                f"offset {partition}@{last} not archived within {wait:.0f}s: is `runstate"
                " archive run` running?",
            )
        time.sleep(0.5)
    if d.config.archive_scope == "all":
        chosen = [
            m
            for p in store.partitions(topic)
            for m in (live if p == partition else store.list_manifests(topic, p))
            if m.is_live
        ]
        what = "every live segment of the archive"
    else:
        chosen = [
            m
            for m in live
            if m.last_offset >= first and m.first_offset <= last and run_id in store.run_ids(m)
        ]
        what = "segment(s) holding the run"
    scan = scan_segments(store, chosen, d.codec)
    note = f"{scan.records} records in {len(chosen)} {what}, every field"
    return Place(label, "archive", None, note, scan=scan)


def scan_segments(
    store: ArchiveStore, manifests: Iterable[SegmentManifest], codec: SingleObjectCodec
) -> ArchiveScan:
    """Decode every record of ``manifests`` and tally the personal data in its fields.

    A value that cannot be decoded is counted (``undecodable``) and searched as text all the
    same: Avro keeps strings as plain UTF-8. Headers are searched as ``header.<name>``.
    """
    scan = ArchiveScan()
    for m in manifests:
        segment = f"segment {m.topic}/{m.partition}/{m.first_offset}-{m.last_offset}"
        for r in store.read_segment(m):
            where = f"{segment} offset {r.offset}"
            scan.records += 1
            for header, value in r.headers:
                if value:
                    scan.add("header", {header: value}, where)
            if r.value is None:
                continue
            try:
                event_type, decoded = decode_archived_value(codec, r.value, offset=r.offset)
            except DecodeError:
                scan.undecodable += 1
                scan.add("undecodable", {"value": r.value}, where)
                continue
            scan.add(event_type, decoded, where)
    return scan

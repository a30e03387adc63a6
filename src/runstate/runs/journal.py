"""A run's event journal: one compact entry per event applied to it (or set aside), in order.

The run page's timeline ("who did what, when") needs a run's events without reading whole
partitions from offset 0 as ``runstate replay --history`` does. So the processor keeps, beside
the run's head and entries (:mod:`runstate.runs.keyspace`), one journal entry per event:

==============================================  ============================================
key                                             value
==============================================  ============================================
``j\\0`` run offset                             one entry (:func:`encode_entry`)
==============================================  ============================================

``offset`` is the event's offset in the events topic, 8 big-endian bytes: a run's events are
all in one partition (keyed by run id), so offsets order them, and a record redone after an
aborted checkpoint writes the same key again rather than a second entry. One prefix scan from
a cursor reads a page: a query reads what it returns.

The value is a fixed binary layout, not Avro: it is written for every event and read only by
this module, and a version byte in front lets a later layout be told apart::

    B  layout version (1)         B  outcome (see OUTCOMES)
    H  event schema version (0 unknown)
    q  occurred_at, ms since the epoch
    I  attempt (0 when the event has none)
    5H the byte lengths of 5 texts, then the texts (UTF-8): event type, event id, actor,
       step, detail

No free text a person wrote is kept (comments, reasons, failure messages, inputs: personal
fields of the state, masked by the console): an entry holds names of principals, steps,
systems and codes only, so it needs no masking and no erasure of its own. Texts are cut to
:data:`MAX_TEXT` bytes, so an entry stays under 1.1 KiB whatever the event carries; the
payloads themselves (inputs, comments) stay in the events (``replay``).

Pure: the runtime writes and reads these through its store; eviction drops a run's journal
with the run (:func:`journal_prefix`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from runstate.runs.keyspace import KeyValueReader, prefix_end, text_part
from runstate.schemas.events import (
    AgentEvent,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    ExternalActionIntended,
    ExternalActionRecorded,
    ExternalActionResolved,
    ModelCalled,
    RetryScheduled,
    RunCancelled,
    RunClaimed,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepRetryRequested,
    StepStarted,
)

__all__ = [
    "JOURNAL",
    "MAX_TEXT",
    "OUTCOMES",
    "JournalEntry",
    "decode_entry",
    "encode_entry",
    "encode_event_entry",
    "entry_for_event",
    "journal_key",
    "journal_prefix",
    "read_journal",
]

JOURNAL: Final = b"j\x00"
#: Longest text kept in an entry, in UTF-8 bytes (cut on a character boundary).
MAX_TEXT: Final = 200
#: What happened to the event; the index is the byte stored.
OUTCOMES: Final = ("applied", "rejected", "error")

_LAYOUT = 1
_FIXED = struct.Struct(">BBHqI5H")
_OFFSET = struct.Struct(">Q")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One event of a run as the journal keeps it.

    Attributes:
        offset: The event's offset in its partition of the events topic (the sort key).
        outcome: ``applied``, ``rejected`` (dead-lettered by the run's rules) or ``error``
            (dead-lettered by a processing failure).
        event_type: ``ApprovalGranted``, ``StepStarted``...
        schema_version: The event schema version the producer wrote (0: not known here).
        occurred_at: The event's own time.
        event_id: The producer's id of the event.
        actor: Who acted, where the event names one: the decider, the operator, the claimant,
            the run's owner for ``RunStarted``, the approver asked for ``ApprovalRequested``.
        step: The step the event is about, if any.
        attempt: The step attempt, if any (0 otherwise).
        detail: A short note: the reject code and reason, a failure reason, a system.
    """

    offset: int
    outcome: str
    event_type: str
    schema_version: int
    occurred_at: datetime
    event_id: str
    actor: str = ""
    step: str = ""
    attempt: int = 0
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "offset": self.offset,
            "outcome": self.outcome,
            "event_type": self.event_type,
            "schema_version": self.schema_version or None,
            "occurred_at": self.occurred_at.isoformat().replace("+00:00", "Z"),
            "event_id": self.event_id,
            "actor": self.actor or None,
            "step": self.step or None,
            "attempt": self.attempt or None,
            "detail": self.detail or None,
        }


def journal_prefix(run_id: str) -> bytes:
    """Every journal entry of the run starts with this."""
    return JOURNAL + text_part(run_id)


def journal_key(run_id: str, offset: int) -> bytes:
    return journal_prefix(run_id) + _OFFSET.pack(offset)


def _cut(raw: bytes) -> bytes:
    if len(raw) <= MAX_TEXT:
        return raw
    return raw[:MAX_TEXT].decode("utf-8", errors="ignore").encode("utf-8")


def _pack(
    outcome: int, version: int, ms: int, attempt: int, texts: tuple[str, str, str, str, str]
) -> bytes:
    raw = [_cut(t.encode("utf-8")) for t in texts]
    head = _FIXED.pack(
        _LAYOUT,
        outcome,
        min(version, 0xFFFF),
        ms,
        min(max(attempt, 0), 0xFFFFFFFF),
        *map(len, raw),
    )
    return head + b"".join(raw)


def _millis(at: datetime) -> int:
    return (at - _EPOCH) // _MS


def encode_entry(entry: JournalEntry) -> bytes:
    """The entry's value (its offset is in the key)."""
    return _pack(
        OUTCOMES.index(entry.outcome),
        entry.schema_version,
        _millis(entry.occurred_at),
        entry.attempt,
        (entry.event_type, entry.event_id, entry.actor, entry.step, entry.detail),
    )


def decode_entry(offset: int, data: bytes) -> JournalEntry:
    """The entry stored at ``offset``.

    Raises:
        ValueError: not an entry of a layout this code knows (restore the partition from
            its changelog, or upgrade runstate).
    """
    try:
        layout, outcome, version, ms, attempt, *lengths = _FIXED.unpack_from(data)
        if layout != _LAYOUT:
            raise ValueError(f"layout {layout} is unknown here; upgrade runstate")
        if _FIXED.size + sum(lengths) != len(data):
            raise ValueError(f"{len(data)} bytes, not the {_FIXED.size + sum(lengths)} expected")
        at = _FIXED.size
        texts: list[str] = []
        for n in lengths:
            texts.append(data[at : at + n].decode("utf-8"))
            at += n
        return JournalEntry(
            offset=offset,
            outcome=OUTCOMES[outcome],
            event_type=texts[0],
            schema_version=version,
            occurred_at=_EPOCH + ms * _MS,
            event_id=texts[1],
            actor=texts[2],
            step=texts[3],
            attempt=attempt,
            detail=texts[4],
        )
    except (struct.error, IndexError, ValueError) as exc:
        raise ValueError(f"journal entry at offset {offset} is unreadable: {exc}") from exc


def _who_and_what(event: AgentEvent) -> tuple[str, str, int, str]:
    """(actor, step, attempt, detail) of an event, by its type."""
    if isinstance(event, ApprovalGranted | ApprovalRejected):
        return event.by, "", 0, "admin override" if event.override_reason else ""
    if isinstance(event, RunStarted):
        return event.owner, "", 0, f"agent {event.agent} from {event.source}"
    if isinstance(event, RunClaimed):
        return event.claimed_by, "", 0, f"epoch {event.epoch}" if event.epoch else ""
    if isinstance(event, StepStarted):
        return "", event.step, event.attempt, ""
    if isinstance(event, StepCompleted):
        return "", event.step, event.attempt, ""
    if isinstance(event, StepFailed):
        return "", event.step, event.attempt, event.reason.value
    if isinstance(event, RetryScheduled):
        return "", event.step, event.attempt, f"not before {event.not_before.isoformat()}"
    if isinstance(event, ApprovalRequested):
        return event.approver, event.step, 0, f"due {event.due_at.isoformat()}"
    if isinstance(event, ExternalActionIntended | ExternalActionRecorded):
        return "", event.step, 0, f"{event.idempotency_key} ({event.system})"
    if isinstance(event, ModelCalled):
        return "", event.step or "", 0, f"{event.model} {event.model_request_id}"
    if isinstance(event, RunFailed):
        return "", event.step or "", 0, event.reason.value
    if isinstance(event, RunCancelled):
        return event.by, "", 0, ""
    if isinstance(event, StepRetryRequested):
        return event.by, event.step, 0, ""
    if isinstance(event, ExternalActionResolved):
        return event.by, "", 0, f"{event.idempotency_key} found={event.found}"
    return "", "", 0, ""


def encode_event_entry(
    event: AgentEvent, *, schema_version: int = 0, outcome: str = "applied", why: str = ""
) -> bytes:
    """``encode_entry(entry_for_event(...))`` without the entry in between: the processor
    writes one per event, so this is on its hot path."""
    actor, step, attempt, detail = _who_and_what(event)
    return _pack(
        OUTCOMES.index(outcome),
        schema_version,
        _millis(event.occurred_at),
        attempt,
        (event.event_type, event.event_id, actor, step, why or detail),
    )


def entry_for_event(
    event: AgentEvent,
    *,
    offset: int,
    schema_version: int = 0,
    outcome: str = "applied",
    why: str = "",
) -> JournalEntry:
    """The journal entry of ``event`` read at ``offset``; ``why`` (a reject's code and
    reason) replaces the detail of an event that was not applied."""
    actor, step, attempt, detail = _who_and_what(event)
    return JournalEntry(
        offset=offset,
        outcome=outcome,
        event_type=event.event_type,
        schema_version=schema_version,
        occurred_at=event.occurred_at,
        event_id=event.event_id,
        actor=actor,
        step=step,
        attempt=attempt,
        detail=why or detail,
    )


def read_journal(
    reader: KeyValueReader, run_id: str, *, after: int | None = None, limit: int = 100
) -> tuple[list[JournalEntry], int | None]:
    """Up to ``limit`` entries of the run after offset ``after``, oldest first, and the
    cursor of the next page (None: no more now). Reads ``limit + 1`` entries at most.

    Raises:
        ValueError: an entry is unreadable.
    """
    prefix = journal_prefix(run_id)
    start = prefix if after is None else journal_key(run_id, after + 1)
    out: list[JournalEntry] = []
    items: Iterator[tuple[bytes, bytes]] = reader.items(start, prefix_end(prefix))
    for key, value in items:
        if len(out) == limit:
            return out, out[-1].offset
        (offset,) = _OFFSET.unpack_from(key, len(prefix))
        out.append(decode_entry(offset, value))
    return out, None

"""Where a run lives in one partition's ordered key space, and which index keys it owns.

The runtime's store is ordered bytes per partition, and every write is also a changelog
record with the same key and value; so a run stored as several keys, with its indexes
beside it, is restored from the changelog exactly, indexes included. The scheme:

==============================================  ============================================
key                                             value
==============================================  ============================================
``h\\0`` run                                    the head: the state without its collections
                                                (``RunState`` record, single-object)
``c\\0`` run kind position                      one collection entry (``<Kind>Entry`` record)
``i\\0status\\0`` status run                    empty
``i\\0owner\\0`` owner run                      empty
``i\\0approver\\0`` approver run                empty (the latest approval's approver)
``i\\0due\\0`` due-ms run                       subject hash (pending approvals only)
``i\\0step\\0`` step run                        empty (the current step)
``i\\0phase\\0`` phase run                      empty
``i\\0attention\\0`` run                        empty (runs that need a person: failed)
``i\\0unknown\\0`` run                          empty (failed runs with an action intended
                                                and never recorded: outcome unknown)
``i\\0updated\\0`` updated-ms run               empty
``i\\0finished\\0`` updated-ms run              empty (finished runs only: which may leave)
``i\\0times\\0`` run                            due-ms and updated-ms (a run's range values)
==============================================  ============================================

* Text parts (run ids, owners, steps...) are written by :func:`text_part`: the UTF-8 bytes
  with ``00`` escaped as ``00 FF``, ended by ``00 01``. The end marker cannot occur inside a
  part, so a part never runs into the next one and the run ``a`` is never a prefix of the
  run ``a\\0b``; and the escape keeps byte order, so keys sort as their texts do.
* Times are milliseconds since the epoch, offset by 2**63 and written as 8 big-endian bytes
  (:func:`millis_part`): ranges of time are ranges of keys. States hold millisecond times
  (the Avro layout does), which the index compares exactly.
* ``kind`` is one byte (``s`` completed steps, ``a`` external actions, ``m`` model calls) and
  ``position`` 4 big-endian bytes, so one prefix scan reads a run's entries in order.
* ``times`` is a per-run index row: it lets a query check "overdue" and "idle for" with one
  point lookup instead of decoding the run.

Every value a run's index keys hold is derived from its head alone (:func:`index_entries`),
so indexes can be rebuilt, and checked, from the heads; ``unknown`` also reads the actions
of a failed run (few: a failed run gets few events).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from runstate.runs.state import ApprovalOutcome, RunState, RunStatus, StepPhase

__all__ = [
    "ENTRY",
    "HEAD",
    "INDEX",
    "KINDS",
    "NO_TIME",
    "KeyValueReader",
    "Write",
    "decode_text_part",
    "entry_key",
    "entry_prefix",
    "head_key",
    "index_entries",
    "index_key",
    "index_prefix",
    "millis",
    "millis_part",
    "pending_due",
    "prefix_end",
    "read_times",
    "text_part",
    "times_value",
]

#: One write to the store: ``(key, value)``; ``None`` deletes the key (a changelog tombstone).
Write = tuple[bytes, bytes | None]

HEAD: Final = b"h\x00"
ENTRY: Final = b"c\x00"
INDEX: Final = b"i\x00"

#: Collection field of :class:`RunState` -> its one-byte kind in entry keys.
KINDS: Final = {"completed_steps": b"s", "external_actions": b"a", "model_calls": b"m"}

_END: Final = b"\x00\x01"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_BIAS: Final = 1 << 63
_POSITION = struct.Struct(">I")
_MILLIS = struct.Struct(">Q")
_TIMES = struct.Struct(">QQ")

#: The ``due`` half of a ``times`` row when nothing is due: after every real time.
NO_TIME: Final = (1 << 64) - 1


class KeyValueReader(Protocol):
    """What reading a run needs from a partition store (the runtime's stores fit it)."""

    def get(self, key: bytes) -> bytes | None: ...

    def items(
        self, start: bytes, end: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Entries with ``start <= key < end`` in key order; lazy, so stopping early is cheap."""
        ...


def text_part(text: str) -> bytes:
    """``text`` as a key part that sorts like the text and cannot run into the next part."""
    return text.encode("utf-8").replace(b"\x00", b"\x00\xff") + _END


def decode_text_part(key: bytes, start: int) -> tuple[str, int]:
    """The text part of ``key`` at ``start`` and the index just after it.

    Raises:
        ValueError: no part ends there; the key was not written by this module.
    """
    end = start
    while True:
        end = key.find(b"\x00", end)
        if end < 0 or end + 1 >= len(key):
            raise ValueError(f"key {key!r} has no text part at {start}")
        if key[end + 1] == 0x01:
            raw = key[start:end].replace(b"\x00\xff", b"\x00")
            return raw.decode("utf-8"), end + 2
        end += 2


def millis(at: datetime) -> int:
    """Milliseconds since the epoch (floored), as stored in keys."""
    return (at - _EPOCH) // _MS


def millis_part(ms: int) -> bytes:
    """A millisecond time as 8 bytes that sort as the times do (negative ones too)."""
    return _MILLIS.pack(ms + _BIAS)


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix`` (for ``items(start, end)``).

    Every prefix here ends in a byte below ``FF`` (a separator, a text part's end, a kind),
    so bumping the last byte is enough.
    """
    return prefix[:-1] + bytes([prefix[-1] + 1])


def head_key(run_id: str) -> bytes:
    return HEAD + text_part(run_id)


def entry_prefix(run_id: str) -> bytes:
    """Every collection entry of the run starts with this."""
    return ENTRY + text_part(run_id)


def entry_key(run_id: str, kind: bytes, position: int) -> bytes:
    return entry_prefix(run_id) + kind + _POSITION.pack(position)


def index_prefix(name: str) -> bytes:
    """Every entry of the index ``name`` starts with this."""
    return INDEX + name.encode("ascii") + b"\x00"


def index_key(name: str, value: bytes, run_id: str) -> bytes:
    """The entry of run ``run_id`` in index ``name`` under ``value`` (an encoded part)."""
    return index_prefix(name) + value + text_part(run_id)


def times_value(due_ms: int | None, updated_ms: int) -> bytes:
    """The ``times`` row: when the pending approval is due (:data:`NO_TIME` if none) and
    when the run last changed."""
    return _TIMES.pack(NO_TIME if due_ms is None else due_ms + _BIAS, updated_ms + _BIAS)


def read_times(value: bytes) -> tuple[int | None, int]:
    """``(due_ms or None, updated_ms)`` from a ``times`` row."""
    due, updated = _TIMES.unpack(value)
    return (None if due == NO_TIME else due - _BIAS), updated - _BIAS


def pending_due(state: RunState) -> datetime | None:
    """When the run's pending approval is due, if it waits on one (as the deadline timer and
    the ``overdue`` filter see it)."""
    a = state.approval
    if (
        state.status is not RunStatus.WAITING_APPROVAL
        or a is None
        or a.outcome is not ApprovalOutcome.PENDING
    ):
        return None
    return a.due_at


def _enum_part(value: RunStatus | StepPhase) -> bytes:
    return text_part(value.value)


def index_entries(state: RunState) -> dict[bytes, bytes]:
    """Every index key of the run and its value, derived from the head fields alone."""
    run = state.run_id
    updated = millis(state.updated_at)
    due_at = pending_due(state)
    due = None if due_at is None else millis(due_at)
    out = {
        index_key("status", _enum_part(state.status), run): b"",
        index_key("owner", text_part(state.owner), run): b"",
        index_key("updated", millis_part(updated), run): b"",
        index_key("times", b"", run): times_value(due, updated),
    }
    if state.approval is not None:
        out[index_key("approver", text_part(state.approval.approver), run)] = b""
        if due is not None:
            out[index_key("due", millis_part(due), run)] = state.approval.subject_hash.encode()
    if state.current_step is not None:
        out[index_key("step", text_part(state.current_step), run)] = b""
    if state.step_phase is not None:
        out[index_key("phase", _enum_part(state.step_phase), run)] = b""
    if state.needs_person:
        out[index_key("attention", b"", run)] = b""
    if state.has_unknown_actions:
        out[index_key("unknown", b"", run)] = b""
    if state.is_terminal:
        out[index_key("finished", millis_part(updated), run)] = b""
    return out

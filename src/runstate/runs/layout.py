"""A run in the store as a small head plus one entry per collection item, indexes beside it.

Encoding the whole :class:`~runstate.runs.state.RunState` per event made a run's 1,000th
event cost about ten times its 10th: ``completed_steps``, ``external_actions`` and
``model_calls`` grow with the run and were rewritten every time. Here the head (the state
with those three collections empty, a ``RunState`` record) is rewritten per event, and a
collection item only when it is appended or changed; so an event costs the same at any age
of the run. Where each part lives is :mod:`runstate.runs.keyspace`; the queries over the
indexes are :mod:`runstate.runs.run_index`.

The head is not tiny: it keeps the last 128 event-id digests for deduplication, 1 KiB of its
about 1.3 KiB once a run has had 128 events. That is bounded, not growing with the run; moving
the digests into entries of their own would trade those bytes per event for up to 128 more
keys per run, kept for every finished run too, which costs more in a year of runs.

Every part is Avro single-object encoded, so each says which schema wrote it: the head with
``RunState.vN.avsc`` (upgraded on read as :mod:`~runstate.runs.state_codec` does), the
entries with ``CompletedStepEntry``, ``ExternalActionEntry`` and ``ModelCallEntry``.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from runstate.errors import DecodeError
from runstate.runs.keyspace import (
    KINDS,
    KeyValueReader,
    Write,
    entry_key,
    entry_prefix,
    head_key,
    index_entries,
    prefix_end,
)
from runstate.runs.state import ActionState, CompletedStep, ExternalAction, ModelCall, RunState
from runstate.runs.state_codec import StateCodec
from runstate.schemas.codec import SingleObjectCodec, default_codec, encode

__all__ = [
    "ENTRY_RECORDS",
    "KeyValueReader",
    "LayoutCodec",
    "load_run",
    "run_deletes",
    "run_writes",
]

Item = CompletedStep | ExternalAction | ModelCall

#: Entry kind (see :data:`~runstate.runs.keyspace.KINDS`) -> the record its entries are.
ENTRY_RECORDS: Mapping[bytes, str] = {
    b"s": "runstate.state.CompletedStepEntry",
    b"a": "runstate.state.ExternalActionEntry",
    b"m": "runstate.state.ModelCallEntry",
}

_FIELD_OF_KIND = {kind: field for field, kind in KINDS.items()}


def _item_to_record(item: Item) -> dict[str, Any]:
    if isinstance(item, ModelCall):
        return {"request_id": item.request_id, "model": item.model, "step": item.step}
    if isinstance(item, CompletedStep):
        return {
            "step": item.step,
            "step_index": item.step_index,
            "attempt": item.attempt,
            "completed_at": item.completed_at,
            "output_ref": item.output_ref,
        }
    return {
        "idempotency_key": item.idempotency_key,
        "system": item.system,
        "step": item.step,
        "state": item.state.value,
        "intended_at": item.intended_at,
        "external_id": item.external_id,
        "output_ref": item.output_ref,
        "recorded_at": item.recorded_at,
    }


def _record_to_item(kind: bytes, record: dict[str, Any]) -> Item:
    if kind == b"m":
        return ModelCall(**record)
    if kind == b"s":
        return CompletedStep(**record)
    return ExternalAction(**{**record, "state": ActionState(record["state"])})


class LayoutCodec:
    """Heads and entries to bytes and back; build one per processor (it caches plans).

    Raises:
        CompatibilityError: (at construction) as :class:`StateCodec`.
    """

    def __init__(self, codec: SingleObjectCodec | None = None) -> None:
        self._codec = codec or default_codec()
        self._states = StateCodec(self._codec)
        self._entry_schemas = {
            kind: self._codec.catalog.latest(name) for kind, name in ENTRY_RECORDS.items()
        }

    def encode_head(self, state: RunState) -> bytes:
        """The state without its collections (those are entries of their own)."""
        head = replace(state, completed_steps=(), external_actions=(), model_calls=())
        return self._states.encode_state(head)

    def decode_head(self, data: bytes) -> RunState:
        """The head's state, collections empty.

        Raises:
            DecodeError: not a readable state record.
            UnknownSchema: written by a layout unknown here.
        """
        return self._states.decode_state(data)

    def encode_entry(self, kind: bytes, item: Item) -> bytes:
        return encode(_item_to_record(item), self._entry_schemas[kind])

    def decode_entry(self, kind: bytes, data: bytes) -> Item:
        """The collection item in ``data``, read into this code's layout of ``kind``.

        Raises:
            DecodeError: not a readable entry of that kind.
            UnknownSchema: written by a layout unknown here.
        """
        decoded = self._codec.decode(data, reader_name=ENTRY_RECORDS[kind])
        try:
            return _record_to_item(kind, decoded.record)
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"{ENTRY_RECORDS[kind]} record breaks its rules: {exc}") from exc


@functools.cache
def _default() -> LayoutCodec:
    return LayoutCodec()


def _changed_positions(before: Sequence[Item], after: Sequence[Item]) -> list[int]:
    """Positions of ``after`` to write: changed or appended.

    The reducer builds a new tuple around the very same items. Most events append or change
    nothing shared, which one tuple comparison (identity first, at C speed) settles; else an
    identity pass finds the few changed ones. Equal but distinct items are not rewritten.
    """
    shared = min(len(before), len(after))
    if before[:shared] == after[:shared]:
        return list(range(shared, len(after)))
    maybe = itertools.compress(range(shared), map(operator.is_not, before, after))
    changed = [i for i in maybe if before[i] != after[i]]
    changed.extend(range(shared, len(after)))
    return changed


def run_writes(
    old: RunState | None, new: RunState, *, codec: LayoutCodec | None = None
) -> list[Write]:
    """What storing ``new`` over ``old`` writes: the head, the collection entries appended or
    changed, and the index entries whose value changed (``None`` deletes a stale one).

    Args:
        old: the run as stored now (None for a new run); must be what was last written,
            or stale entries and index keys are left behind.
        new: the run after the event.
        codec: encodes heads and entries; the shared default if None.

    Raises:
        ValueError: ``old`` and ``new`` are different runs.
    """
    if old is new:
        return []
    if old is not None and old.run_id != new.run_id:
        raise ValueError(f"cannot write run {new.run_id!r} over run {old.run_id!r}")
    codec = codec or _default()
    run = new.run_id
    writes: list[Write] = [(head_key(run), codec.encode_head(new))]
    for field, kind in KINDS.items():
        after: tuple[Item, ...] = getattr(new, field)
        before: tuple[Item, ...] = () if old is None else getattr(old, field)
        if before is after:
            continue
        for position in _changed_positions(before, after):
            writes.append(
                (entry_key(run, kind, position), codec.encode_entry(kind, after[position]))
            )
        for position in range(len(after), len(before)):
            writes.append((entry_key(run, kind, position), None))
    stale = {} if old is None else index_entries(old)
    for key, value in index_entries(new).items():
        if stale.pop(key, None) != value:
            writes.append((key, value))
    writes.extend((key, None) for key in stale)
    return writes


def run_deletes(state: RunState) -> list[Write]:
    """Tombstones for every key of the run (head, entries, index entries), e.g. to drop a
    finished run; ``state`` must be the run as stored."""
    run = state.run_id
    writes: list[Write] = [(head_key(run), None)]
    for field, kind in KINDS.items():
        count = len(getattr(state, field))
        writes.extend((entry_key(run, kind, position), None) for position in range(count))
    writes.extend((key, None) for key in index_entries(state))
    return writes


def load_run(
    reader: KeyValueReader, run_id: str, *, codec: LayoutCodec | None = None
) -> RunState | None:
    """The run as stored: its head and one prefix scan of its entries; None if unknown.

    Raises:
        DecodeError: a part is unreadable, or the entries have a gap (the store lost writes:
            restore the partition from its changelog).
    """
    head = reader.get(head_key(run_id))
    if head is None:
        return None
    codec = codec or _default()
    state = codec.decode_head(head)
    items: dict[bytes, list[Any]] = {kind: [] for kind in _FIELD_OF_KIND}
    prefix = entry_prefix(run_id)
    for key, value in reader.items(prefix, prefix_end(prefix)):
        kind = key[len(prefix) : len(prefix) + 1]
        position = int.from_bytes(key[len(prefix) + 1 :], "big")
        found = items.get(kind)
        if found is None or position != len(found):
            raise DecodeError(
                f"run {run_id!r} has a stray or missing collection entry at {key!r};"
                " restore the partition from its changelog"
            )
        found.append(codec.decode_entry(kind, value))
    return replace(
        state,
        completed_steps=tuple(items[KINDS["completed_steps"]]),
        external_actions=tuple(items[KINDS["external_actions"]]),
        model_calls=tuple(items[KINDS["model_calls"]]),
    )

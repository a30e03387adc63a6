"""Queries over the run indexes: list runs by filter, due approvals, and index checks.

A partition holds up to millions of runs (a year of them), so a query must not decode runs
it does not return. :func:`list_runs` scans one index (see :mod:`runstate.runs.keyspace`)
for the filter, checks the other criteria with point lookups of index keys (no decoding),
and loads only the runs it returns. :func:`due_approvals` reads the due-time index alone, so
the deadline timer needs no scan of every run after a rebalance. :func:`rebuild_indexes`
derives the indexes from the heads and says what differs, to check a restored partition.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from runstate.errors import QueryError
from runstate.runs.deadlines import Deadline
from runstate.runs.keyspace import (
    HEAD,
    INDEX,
    KeyValueReader,
    Write,
    decode_text_part,
    index_entries,
    index_key,
    index_prefix,
    millis,
    millis_part,
    prefix_end,
    read_times,
    text_part,
)
from runstate.runs.layout import LayoutCodec, load_run
from runstate.runs.run_view import RunFilter
from runstate.runs.state import RunState, RunStatus

__all__ = [
    "FILTER_INDEXES",
    "ApprovalCounts",
    "count_approvals",
    "due_approvals",
    "finished_before",
    "list_order",
    "list_runs",
    "pending_approvals",
    "rebuild_indexes",
    "runs_needing_attention",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME_WIDTH = 8

#: Every :class:`RunFilter` criterion -> the index that answers it. A new criterion needs an
#: index in :func:`~runstate.runs.keyspace.index_entries` and a place in :func:`_plan` and
#: :func:`_matches_rest`; a test fails until it is listed here.
FILTER_INDEXES: Mapping[str, str] = {
    "status": "status",
    "owner": "owner",
    "approver": "approver",
    "overdue": "due",
    "step": "step",
    "phase": "phase",
    "idle_for": "updated",
    "needs_attention": "attention",
    "unknown_actions": "unknown",
}

#: Equality criteria in the order they are preferred to drive a scan (most selective first,
#: by what they usually select: one approver's queue is short, every ``completed`` run is not).
_EQUALITY_ORDER = ("unknown", "attention", "approver", "step", "owner", "phase", "status")


@dataclass(frozen=True, slots=True)
class _Scan:
    """One index range to walk and where the run id sits in its keys."""

    index: str
    start: bytes
    end: bytes
    #: Offset of the run id part in every key of the range.
    run_at: int


def _equalities(f: RunFilter) -> dict[str, bytes]:
    """The filter's equality criteria as ``index name -> encoded value part``."""
    values = {
        "approver": f.approver,
        "step": f.step,
        "owner": f.owner,
        "phase": None if f.phase is None else f.phase.value,
        "status": None if f.status is None else f.status.value,
    }
    parts = {name: text_part(v) for name, v in values.items() if v is not None}
    # Presence indexes: the key is the index name and the run id, no value part.
    if f.unknown_actions:
        parts["unknown"] = b""
    if f.needs_attention:
        parts["attention"] = b""
    return parts


def _plan(f: RunFilter, now: datetime) -> _Scan:
    """The index range to walk for ``f``: overdue approvals (usually few), else the first
    equality criterion of :data:`_EQUALITY_ORDER`, else the idle range, else every head."""
    if f.overdue:
        prefix = index_prefix("due")
        end = prefix + millis_part(millis(now) + 1)
        return _Scan("due", prefix, end, len(prefix) + _TIME_WIDTH)
    equal = _equalities(f)
    for name in _EQUALITY_ORDER:
        if name in equal:
            prefix = index_prefix(name) + equal[name]
            return _Scan(name, prefix, prefix_end(prefix), len(prefix))
    if f.idle_for is not None:
        prefix = index_prefix("updated")
        end = prefix + millis_part(millis(now - f.idle_for) + 1)
        return _Scan("updated", prefix, end, len(prefix) + _TIME_WIDTH)
    return _Scan("heads", HEAD, prefix_end(HEAD), len(HEAD))


def list_order(f: RunFilter) -> str:
    """How :func:`list_runs` orders what ``f`` selects (the index that drives the scan):

    * ``due_at`` - ``overdue`` filters: by the approval's due time, then run id;
    * ``run_id`` - any filter with status, owner, approver, step, phase, needs_attention or
      unknown_actions, and the empty one;
    * ``updated_at`` - ``idle_for`` alone (with nothing above): least recently changed first,
      then run id.
    """
    if f.overdue:
        return "due_at"
    if _equalities(f) or f.idle_for is None:
        return "run_id"
    return "updated_at"


def _matches_rest(
    reader: KeyValueReader,
    f: RunFilter,
    scan: _Scan,
    lookups: Mapping[str, bytes],
    run_id: str,
    now: datetime,
) -> bool:
    """Whether the run meets the criteria its scan did not, from index keys alone."""
    for name, part in lookups.items():
        if reader.get(index_key(name, part, run_id)) is None:
            return False
    need_due = f.overdue and scan.index != "due"
    need_idle = f.idle_for is not None and scan.index != "updated"
    if not (need_due or need_idle):
        return True
    row = reader.get(index_key("times", b"", run_id))
    if row is None:
        return False
    due, updated = read_times(row)
    if need_due and (due is None or due > millis(now)):
        return False
    return not (need_idle and f.idle_for is not None and updated > millis(now - f.idle_for))


def _cursor(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii")


def _resume_at(scan: _Scan, after: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(after.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        key = b""
    if not scan.start <= key < scan.end:
        raise QueryError(
            f"cursor {after!r} does not belong to this filter (or this time); list again"
            " without a cursor"
        )
    return key + b"\x00"


def list_runs(
    reader: KeyValueReader,
    f: RunFilter,
    *,
    now: datetime,
    after: str | None = None,
    limit: int = 100,
    codec: LayoutCodec | None = None,
) -> tuple[list[RunState], str | None]:
    """One page of the runs ``f`` selects, in the order :func:`list_order` names.

    The scan walks the most selective index the filter has (:func:`_plan`); each other
    criterion costs a point lookup of an index key, and only returned runs are decoded. A
    filter with no criterion walks the head keys (it returns every run anyway); one with only
    ``idle_for`` walks the ``updated`` index up to ``now - idle_for``.

    Args:
        reader: the partition's store.
        f: the criteria, all of which must hold (as :meth:`RunFilter.matches`).
        now: the time ``overdue`` and ``idle_for`` are judged at; keep it across the pages
            of one listing, or a page may skip or repeat a run whose times moved.
        after: the cursor a previous page returned, or None for the first page.
        limit: at most this many runs.
        codec: decodes the runs returned; the shared default if None.

    Returns:
        The runs, and the cursor of the next page (None when this page is the last).

    Raises:
        QueryError: ``after`` is not a cursor of this filter's listing.
        ValueError: ``limit`` is below 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    scan = _plan(f, now)
    lookups = {name: part for name, part in _equalities(f).items() if name != scan.index}

    def keep(run_id: str) -> bool:
        return _matches_rest(reader, f, scan, lookups, run_id, now)

    return _page(reader, scan, keep, after, limit, codec)


def runs_needing_attention(
    reader: KeyValueReader,
    *,
    after: str | None = None,
    limit: int = 100,
    codec: LayoutCodec | None = None,
) -> tuple[list[RunState], str | None]:
    """One page of the runs a person must look at (:attr:`RunState.needs_person`), by run id.

    Raises:
        QueryError: ``after`` is not a cursor of this listing.
        ValueError: ``limit`` is below 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    prefix = index_prefix("attention")
    scan = _Scan("attention", prefix, prefix_end(prefix), len(prefix))
    return _page(reader, scan, lambda run_id: True, after, limit, codec)


def _page(
    reader: KeyValueReader,
    scan: _Scan,
    keep: Callable[[str], bool],
    after: str | None,
    limit: int,
    codec: LayoutCodec | None,
) -> tuple[list[RunState], str | None]:
    """Walk ``scan`` from the cursor, keep up to ``limit`` runs, then load only those.

    One more kept run is looked for (by key) so the last page says so: no empty last page.
    """
    start = scan.start if after is None else _resume_at(scan, after)
    found: list[tuple[bytes, str]] = []
    more = False
    for key, _ in reader.items(start, scan.end):
        run_id, _end = decode_text_part(key, scan.run_at)
        if not keep(run_id):
            continue
        if len(found) == limit:
            more = True
            break
        found.append((key, run_id))
    runs = [s for _, run_id in found if (s := load_run(reader, run_id, codec=codec)) is not None]
    return runs, (_cursor(found[-1][0]) if more else None)


def _deadlines(reader: KeyValueReader, end: bytes, partition: int) -> Iterator[Deadline]:
    prefix = index_prefix("due")
    for key, value in reader.items(prefix, end):
        ms = int.from_bytes(key[len(prefix) : len(prefix) + _TIME_WIDTH], "big") - (1 << 63)
        run_id, _end = decode_text_part(key, len(prefix) + _TIME_WIDTH)
        due_at = _EPOCH + timedelta(milliseconds=ms)
        yield Deadline(run_id, partition, value.decode("utf-8"), due_at)


def due_approvals(reader: KeyValueReader, now: datetime, *, partition: int) -> Iterator[Deadline]:
    """Pending approvals due at ``now`` or before (earliest first), from the due index alone.

    Args:
        reader: the store of ``partition``.
        now: the deadline timer's clock.
        partition: the partition ``reader`` holds (each :class:`Deadline` names it).
    """
    return _deadlines(reader, index_prefix("due") + millis_part(millis(now) + 1), partition)


def pending_approvals(reader: KeyValueReader, *, partition: int) -> Iterator[Deadline]:
    """Every pending approval of the partition, earliest due first (to seed a timer)."""
    return _deadlines(reader, prefix_end(index_prefix("due")), partition)


@dataclass(frozen=True, slots=True)
class ApprovalCounts:
    """Pending approvals of one partition, from the due index alone.

    Attributes:
        waiting: approvals pending (at most the ``limit`` counted).
        overdue: of those, the ones due at ``now`` or before.
        capped: the count stopped at ``limit``; the figures are floors.
    """

    waiting: int
    overdue: int
    capped: bool = False


def count_approvals(reader: KeyValueReader, now: datetime, *, limit: int) -> ApprovalCounts:
    """How many approvals wait, and how many are overdue, reading the due index's keys only
    (no run is decoded): its cost is the number of pending approvals, up to ``limit``, never
    the number of runs held. The keys sort by due time, so the overdue ones come first."""
    prefix = index_prefix("due")
    overdue_end = prefix + millis_part(millis(now) + 1)
    waiting = overdue = 0
    for key, _ in reader.items(prefix, prefix_end(prefix)):
        if waiting >= limit:
            return ApprovalCounts(waiting, overdue, capped=True)
        waiting += 1
        if key < overdue_end:
            overdue += 1
    return ApprovalCounts(waiting, overdue)


def finished_before(reader: KeyValueReader, before: datetime, *, limit: int = 1000) -> list[str]:
    """Runs that finished (completed, failed, cancelled) with nothing applied since before
    ``before``, oldest first, from the ``finished`` index alone: what may leave the hot
    store. Reads at most ``limit`` index entries.
    """
    prefix = index_prefix("finished")
    end = prefix + millis_part(millis(before))
    found: list[str] = []
    for key, _ in reader.items(prefix, end):
        run_id, _end = decode_text_part(key, len(prefix) + _TIME_WIDTH)
        found.append(run_id)
        if len(found) >= limit:
            break
    return found


def rebuild_indexes(reader: KeyValueReader, *, codec: LayoutCodec | None = None) -> list[Write]:
    """The writes that make the partition's indexes exactly what its heads imply.

    Empty when the indexes are exact (as after a faithful restore); otherwise stale entries
    to delete and missing or wrong ones to write. Decodes every head and holds the derived
    index of the whole partition in memory: a check and repair tool, not a hot path.

    Raises:
        DecodeError: a head is unreadable.
    """
    codec = codec or LayoutCodec()
    derived: dict[bytes, bytes] = {}
    for _, head in reader.items(HEAD, prefix_end(HEAD)):
        state = codec.decode_head(head)
        if state.status is RunStatus.FAILED:
            # ``unknown`` reads a failed run's actions, which live beside the head.
            state = load_run(reader, state.run_id, codec=codec) or state
        derived.update(index_entries(state))
    writes: list[Write] = []
    for key, value in reader.items(INDEX, prefix_end(INDEX)):
        wanted = derived.pop(key, None)
        if wanted is None:
            writes.append((key, None))
        elif wanted != value:
            writes.append((key, wanted))
    writes.extend(sorted(derived.items()))
    return writes

"""A partition transaction reads its own writes, by key and by range, over the store."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runstate.runtime.memory_store import MemoryPartitionStore
from runstate.runtime.store import PartitionTransaction

_KEYS = st.binary(min_size=1, max_size=3)
_VALUES = st.one_of(st.none(), st.binary(min_size=1, max_size=3))


@given(
    committed=st.dictionaries(_KEYS, st.binary(min_size=1, max_size=3)),
    pending=st.lists(st.tuples(_KEYS, _VALUES)),
    bounds=st.tuples(_KEYS, _KEYS),
    reverse=st.booleans(),
)
def test_ranges_merge_pending_writes_over_committed_data(
    committed: dict[bytes, bytes],
    pending: list[tuple[bytes, bytes | None]],
    bounds: tuple[bytes, bytes],
    reverse: bool,
) -> None:
    store = MemoryPartitionStore(0)
    store.apply(list(committed.items()), changelog_offset=0)
    txn = PartitionTransaction(store)
    model: dict[bytes, bytes | None] = dict(committed)
    for key, value in pending:
        if value is None:
            txn.delete(key)
        else:
            txn.set(key, value)
        model[key] = value
    start, end = sorted(bounds)

    got = list(txn.items(start, end, reverse=reverse))

    expected = sorted(
        ((k, v) for k, v in model.items() if v is not None and start <= k < end),
        reverse=reverse,
    )
    assert got == expected
    assert all(txn.get(k) == v for k, v in model.items())


def test_a_range_without_pending_writes_reads_the_store_lazily() -> None:
    store = MemoryPartitionStore(0)
    store.apply([(b"a", b"1"), (b"b", b"2")], changelog_offset=0)
    txn = PartitionTransaction(store)
    txn.set(b"z", b"9")
    it = txn.items(b"a", b"c")
    assert next(it) == (b"a", b"1")
    assert txn.writes() == [(b"z", b"9")] and txn

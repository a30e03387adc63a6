"""A run's journal entries: a small fixed layout that round-trips, keys ordered by offset,
pages read from a cursor, each entry once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runstate.runs.journal import (
    MAX_TEXT,
    JournalEntry,
    decode_entry,
    encode_entry,
    encode_event_entry,
    entry_for_event,
    journal_key,
    journal_prefix,
    read_journal,
)
from tests.factories import make_run
from tests.runs.sorted_store import CountingReader, SortedStore

AT = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)


def test_an_entry_round_trips_and_long_texts_are_cut_on_a_character() -> None:
    entry = JournalEntry(
        offset=42,
        outcome="rejected",
        event_type="ApprovalGranted",
        schema_version=2,
        occurred_at=AT,
        event_id="e-1",
        actor="alice",
        step="review",
        attempt=3,
        detail="é" * 300,
    )
    back = decode_entry(42, encode_entry(entry))
    assert back.detail == "é" * (MAX_TEXT // 2)
    assert back == JournalEntry(**{**_fields(entry), "detail": back.detail})
    assert len(encode_entry(entry)) < 300


def _fields(entry: JournalEntry) -> dict[str, object]:
    return {name: getattr(entry, name) for name in JournalEntry.__slots__}


def test_an_unreadable_entry_is_a_value_error() -> None:
    good = encode_entry(entry_for_event(make_run("r")[0], offset=1))
    for bad in (b"", good[:-1], good + b"x", b"\x09" + good[1:]):
        with pytest.raises(ValueError, match="journal entry"):
            decode_entry(1, bad)


def test_the_decider_is_the_actor_of_a_decision_and_the_claimant_of_a_claim() -> None:
    events = make_run("r", with_approval=True)
    by_type = {e.event_type: entry_for_event(e, offset=0) for e in events}
    granted = next(e for e in events if e.event_type == "ApprovalGranted")
    asked = next(e for e in events if e.event_type == "ApprovalRequested")
    assert by_type["ApprovalGranted"].actor == granted.by  # type: ignore[attr-defined]
    assert by_type["ApprovalRequested"].actor == asked.approver  # type: ignore[attr-defined]
    assert by_type["StepStarted"].step and by_type["StepStarted"].attempt >= 1


def test_keys_sort_by_offset_and_a_run_is_never_a_prefix_of_another() -> None:
    assert journal_key("a", 2) < journal_key("a", 256) < journal_key("a", 1 << 40)
    assert not journal_key("a\x00b", 1).startswith(journal_prefix("a"))


def test_pages_from_a_cursor_return_each_entry_once_and_read_no_other_run() -> None:
    store = SortedStore()
    events = make_run("run-a", with_approval=True)
    offsets = [10 + 3 * i for i in range(len(events))]
    for offset, event in zip(offsets, events, strict=True):
        value = encode_entry(entry_for_event(event, offset=offset))
        store.apply([(journal_key("run-a", offset), value), (journal_key("run-b", offset), value)])
    seen: list[int] = []
    after = None
    for _ in range(len(events) + 1):
        reader = CountingReader(store)
        page, after = read_journal(reader, "run-a", after=after, limit=4)
        assert len(page) <= 4
        assert len(reader.read) <= len(page) + 1  # what it returns, and one to know "more"
        assert all(k.startswith(journal_prefix("run-a")) for k in reader.read)
        seen += [e.offset for e in page]
        if after is None:
            break
    assert seen == offsets
    assert [e.event_type for e in read_journal(store, "run-a", limit=1000)[0]] == [
        e.event_type for e in events
    ]
    assert read_journal(store, "run-c") == ([], None)


def test_the_processors_fast_path_writes_the_same_bytes() -> None:
    for event in make_run("r", with_approval=True, failures=1, with_action=True):
        for outcome, why in (("applied", ""), ("rejected", "run_ended: too late")):
            entry = entry_for_event(event, offset=5, schema_version=3, outcome=outcome, why=why)
            assert encode_event_entry(
                event, schema_version=3, outcome=outcome, why=why
            ) == encode_entry(entry)

"""Approval expiries: one event id per approval whoever makes it, never before the due time."""

from __future__ import annotations

from datetime import UTC, datetime

from runstate.runs.deadlines import Deadline, expiry_event, expiry_event_id


def test_expiry_event_id_is_the_same_for_every_producer() -> None:
    due = datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert expiry_event_id("r", "sha256:a", due) == expiry_event_id("r", "sha256:a", due)
    assert expiry_event_id("r", "sha256:a", due) != expiry_event_id("r", "sha256:b", due)


def test_expiry_never_precedes_the_due_time() -> None:
    due = datetime(2030, 1, 1, tzinfo=UTC)
    event = expiry_event(
        Deadline("r", 0, "h", due), now=datetime(2029, 1, 1, tzinfo=UTC), producer="t"
    )
    assert event.occurred_at == due
    assert event.event_id == expiry_event_id("r", "h", due)

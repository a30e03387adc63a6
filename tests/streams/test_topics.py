"""`ensure_topics` creates what is missing and refuses silent differences."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from runstate.errors import TopicMismatch
from runstate.streams.topics import TopicNames, admin_client, ensure_topics, topic_specs

pytestmark = pytest.mark.integration


def test_creates_then_verifies(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> None:
    admin = admin_client(kafka_bootstrap)
    specs = topic_specs(TopicNames(unique_name("t")), partitions=3)
    first = ensure_topics(admin, specs)
    assert sorted(first.created) == sorted(s.name for s in specs)
    second = ensure_topics(admin, specs)
    assert second.created == [] and sorted(second.verified) == sorted(s.name for s in specs)
    meta = admin.list_topics(timeout=10).topics
    assert len(meta[specs[0].name].partitions) == 3


def test_partition_mismatch_is_an_error(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    admin = admin_client(kafka_bootstrap)
    names = TopicNames(unique_name("t"))
    ensure_topics(admin, topic_specs(names, partitions=2))
    with pytest.raises(TopicMismatch, match=r"events: 2 partitions, expected 4"):
        ensure_topics(admin, topic_specs(names, partitions=4))


def test_cleanup_policy_mismatch_is_an_error(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    admin = admin_client(kafka_bootstrap)
    names = TopicNames(unique_name("t"))
    specs = topic_specs(names, partitions=1)
    # someone created the latest-state topic by hand without compaction
    wrong = [s if s.name != names.latest_state else s.__class__(s.name, 1, {}) for s in specs]
    ensure_topics(admin, wrong)
    with pytest.raises(TopicMismatch, match=r"run-state: cleanup.policy=delete, expected compact"):
        ensure_topics(admin, specs)


def test_an_events_topic_that_expires_by_time_is_an_error(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """Created with the cluster's default retention (7 days), events would expire unarchived."""
    admin = admin_client(kafka_bootstrap)
    names = TopicNames(unique_name("t"))
    specs = topic_specs(names, partitions=1)
    wrong = [
        s if s.name != names.events else s.__class__(s.name, 1, {"retention.ms": "604800000"})
        for s in specs
    ]
    ensure_topics(admin, wrong)
    with pytest.raises(TopicMismatch, match=r"events: retention.ms=604800000, expected -1"):
        ensure_topics(admin, specs)

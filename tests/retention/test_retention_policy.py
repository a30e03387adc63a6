"""The policy file: the shipped example validates, and every error names its key."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from runstate.errors import ConfigError, PolicyError
from runstate.retention import (
    ArchiveConfig,
    PersonalDataAction,
    RetentionPolicy,
    format_duration,
    load_policy,
    parse_duration,
    parse_policy,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "retention-policy.yaml"


def policy_with(topic_yaml: str, *, head: str = "") -> str:
    """A policy whose only topic, ``events``, has the given body."""
    body = textwrap.indent(textwrap.dedent(topic_yaml).strip(), "    ")
    return f"{head}topics:\n  events:\n{body}\n"


def test_the_shipped_example_validates() -> None:
    policy = load_policy(EXAMPLE)

    events = policy.topic("runstate.events")
    assert events.hot == timedelta(days=7)
    assert events.archived and events.archive is not None
    assert events.archive.bucket_and_prefix == ("runstate-archive", "events")
    assert events.archive_retention == timedelta(days=400)
    assert events.personal_data["RunStarted"]["input"] is PersonalDataAction.MASK
    changes = policy.topic("runstate.state-changes")
    assert not changes.archived and changes.hold_archive is not None
    assert changes.hold_archive.bucket_and_prefix == ("runstate-archive", "holds")
    assert policy.topic("runstate.dead-letters").archive_retention is None  # forever
    assert policy.held_run_ids == {"run-2024-11-0042"}


def test_a_minimal_policy() -> None:
    policy = parse_policy(policy_with("hot: 12h"))

    events = policy.topic("events")
    assert events.hot == timedelta(hours=12)
    assert not events.archived
    assert events.archive_retention is None
    assert policy.legal_holds == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("30s", timedelta(seconds=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(hours=36)),
        ("1d 12h", timedelta(hours=36)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["7", 7, "", "7 days", "d", "0d", "-1d", "1.5d", "7D", None])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (policy_with("hot: 7"), "policy.yaml: topics.events.hot: 7 is not a duration"),
        (policy_with("hot: 0h"), "policy.yaml: topics.events.hot: '0h': a duration must be"),
        (policy_with("{}"), "policy.yaml: topics.events.hot: Field required"),
        (policy_with("hot: 7d\nhott: 1d"), "policy.yaml: topics.events.hott: Extra inputs"),
        (
            policy_with("hot: 7d\narchive_retention: 10 years"),
            "topics.events.archive_retention: '10 years' is not a duration.*or 'forever'",
        ),
        (
            policy_with("hot: 7d\narchive: {target: local:/a}\narchive_retention: 1d"),
            r"topics.events.archive_retention: 1d is shorter than hot \(7d\)",
        ),
        (
            policy_with("hot: 7d\narchive: {target: ftp://host/x}"),
            "topics.events.archive.target: 'ftp://host/x': use 'local:<path>' or 's3://",
        ),
        (
            policy_with("hot: 7d\narchive: {target: 's3://'}"),
            "topics.events.archive.target:",
        ),
        (
            policy_with("hot: 7d\narchive: {target: 'local:/a', endpoint: 'http://x:9000'}"),
            "topics.events.archive.endpoint: only an s3:// target takes an endpoint",
        ),
        (
            policy_with("hot: 7d\narchive: {target: 's3://b', endpoint: 'x:9000'}"),
            "topics.events.archive.endpoint: 'x:9000': an endpoint is an http",
        ),
        (
            policy_with("hot: 7d\narchive: {enabled: maybe, target: 'local:/a'}"),
            "topics.events.archive.enabled:",
        ),
        (
            policy_with("hot: 7d\npersonal_data: {RunStarted: {input: hide}}"),
            "topics.events.personal_data.RunStarted.input: Input should be 'keep', 'mask'",
        ),
        (
            policy_with("hot: 7d\npersonal_data: {RunStartd: {input: mask}}"),
            "topics.events.personal_data: RunStartd: unknown event type; known: ",
        ),
        (
            policy_with("hot: 7d\npersonal_data: {RunStarted: {inptu: mask}}"),
            "topics.events.personal_data: RunStarted.inptu: RunStarted has no such field;"
            " fields: agent, input, owner",
        ),
        (
            policy_with("hot: 7d\npersonal_data: {RunStarted: {input: drop}}"),
            "RunStarted.input: required and not nullable, so it cannot be dropped; use mask",
        ),
        (
            policy_with("hot: 7d\npersonal_data: {StepStarted: {step_index: mask}}"),
            "StepStarted.step_index: only text fields can be masked; use drop",
        ),
        (
            policy_with("hot: 7d\npersonal_data: {StepFailed: {reason: mask}}"),
            "StepFailed.reason: only text fields can be masked",
        ),
        (
            policy_with("hot: 7d\npersonal_data: {RunStarted: {run_id: mask}}"),
            "RunStarted.run_id: envelope fields route events",
        ),
        (policy_with("hot: 7d", head="legal_holds: ['']\n"), "policy.yaml: legal_holds.0:"),
        (policy_with("hot: 7d", head="version: 2\n"), "policy.yaml: version: Input should be 1"),
        ("legal_holds: []\n", "policy.yaml: topics: Field required"),
        ("- a list\n", "expected a mapping with a 'topics' key"),
        ("topics: {events: {hot: [7d}\n", "policy.yaml: not valid YAML"),
    ],
)
def test_errors_name_the_bad_key(document: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(document)


def test_all_problems_are_reported_at_once() -> None:
    document = "topics:\n  a: {hot: 7}\n  b: {hot: 1d, archive: {target: nowhere}}\n"

    with pytest.raises(PolicyError) as caught:
        parse_policy(document, source="retention.yaml")

    problems = str(caught.value).splitlines()
    assert [p.split(": ")[1] for p in problems] == ["topics.a.hot", "topics.b.archive.target"]
    assert all(p.startswith("retention.yaml: ") for p in problems)


def test_policy_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the retention policy"):
        load_policy(tmp_path / "missing.yaml")
    (tmp_path / "mine.yaml").write_text("topics: {events: {hot: soon}}\n")
    with pytest.raises(PolicyError, match=r"^mine\.yaml: topics\.events\.hot: 'soon'"):
        load_policy(tmp_path / "mine.yaml")


def test_unknown_topics_are_named() -> None:
    policy = parse_policy(policy_with("hot: 1d"))

    with pytest.raises(PolicyError, match=r"'other' has no retention policy.*configured: events"):
        policy.topic("other")


def test_event_types_may_be_qualified_and_drops_know_their_replacement() -> None:
    policy = parse_policy(
        policy_with(
            """
            hot: 1d
            personal_data:
              runstate.events.StepFailed: {message: drop}
              ModelCalled: {tags: drop, step: drop}
            """
        )
    )

    events = policy.topic("events")
    assert set(events.personal_data) == {"StepFailed", "ModelCalled"}
    assert events.drop_value("StepFailed", "message") == ""
    assert events.drop_value("ModelCalled", "tags") == {}
    assert events.drop_value("ModelCalled", "step") is None


def test_archive_targets() -> None:
    local = ArchiveConfig(target="local:~/archive")
    s3 = ArchiveConfig(target="s3://bucket", endpoint="https://minio.internal:9000")

    assert local.kind == "local" and local.local_path == Path.home() / "archive"
    assert s3.kind == "s3" and s3.bucket_and_prefix == ("bucket", "")
    assert not ArchiveConfig(enabled=False, target="local:/x").enabled


def test_models_are_frozen() -> None:
    policy = parse_policy(policy_with("hot: 1d"))

    with pytest.raises(ValueError, match="frozen"):
        policy.topics["events"].hot = timedelta(days=2)  # type: ignore[misc]
    assert isinstance(policy, RetentionPolicy)

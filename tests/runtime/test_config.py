"""The runtime's settings and crash points: validated at start-up, with clear messages; the
advertised URL apart from the bind address."""

from __future__ import annotations

import socket

import pytest

from runstate.errors import ConfigError
from runstate.runtime import fault_hooks
from runstate.runtime.clients import consumer_settings
from runstate.runtime.config import load_runtime_config, retired_settings
from runstate.runtime.fault_hooks import CrashPoints
from runstate.runtime.owners import parse_client_id
from runstate.settings import Settings


def test_settings_come_from_runstate_runtime_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNSTATE_RUNTIME_COMMIT_INTERVAL_S", "0.5")
    monkeypatch.setenv("RUNSTATE_RUNTIME_WORKER_ID", "w-7")
    monkeypatch.setenv("RUNSTATE_RUNTIME_EXACTLY_ONCE", "false")
    config = load_runtime_config(Settings(topic_prefix="acme"), batch_size=10)
    assert (config.commit_interval_s, config.worker_id, config.batch_size) == (0.5, "w-7", 10)
    assert config.exactly_once is False
    assert config.names.runs_changelog == "acme.runs-changelog"
    assert config.group_id == "acme-runs"
    assert config.transactional_id == "acme-runs-w-7"  # stable: a restart fences its old self


def test_a_bad_setting_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNSTATE_RUNTIME_COMMIT_INTERVAL_S", "0")
    with pytest.raises(ConfigError, match="commit_interval_s"):
        load_runtime_config(Settings())


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CHECKPOINT_MAX_RECORDS", "0"), ("SWITCH_INTERVAL_MS", "0"), ("SWITCH_INTERVAL_MS", "500")],
)
def test_the_loops_bounds_come_from_variables_and_nonsense_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    defaults = load_runtime_config(Settings())
    assert (defaults.checkpoint_max_records, defaults.switch_interval_ms) == (2_000, 1.0)
    monkeypatch.setenv("RUNSTATE_RUNTIME_CHECKPOINT_MAX_RECORDS", "300")
    monkeypatch.setenv("RUNSTATE_RUNTIME_SWITCH_INTERVAL_MS", "2.5")
    config = load_runtime_config(Settings())
    assert (config.checkpoint_max_records, config.switch_interval_ms) == (300, 2.5)
    monkeypatch.setenv(f"RUNSTATE_RUNTIME_{variable}", value)
    with pytest.raises(ConfigError, match=variable.lower()):
        load_runtime_config(Settings())


def test_crash_points_exit_137_on_the_armed_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[int] = []
    monkeypatch.setattr(fault_hooks.os, "_exit", exits.append)
    points = CrashPoints("after_commit:3, before_commit:1")
    points.reached("after_commit")
    points.reached("after_commit")
    points.reached("after_apply")  # not armed
    assert exits == []
    points.reached("after_commit")
    assert exits == [137]
    points.reached("before_commit")
    assert exits == [137, 137]


@pytest.mark.parametrize("spec", ["somewhere:1", "after_commit", "after_commit:0"])
def test_a_bad_crash_point_is_refused(spec: str) -> None:
    with pytest.raises(ConfigError, match="bad crash point"):
        CrashPoints(spec)


def test_standby_replicas_come_from_the_variable_or_the_cli(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_runtime_config(Settings()).standby_replicas == 0
    monkeypatch.setenv("RUNSTATE_RUNTIME_STANDBY_REPLICAS", "2")
    assert load_runtime_config(Settings()).standby_replicas == 2
    assert load_runtime_config(Settings(), standby_replicas=1).standby_replicas == 1
    with pytest.raises(ConfigError, match="standby_replicas"):
        load_runtime_config(Settings(), standby_replicas=-1)


def test_settings_of_the_retired_processor_are_named_not_silently_dropped() -> None:
    warnings = retired_settings(
        {
            "RUNSTATE_PROCESSOR_SESSION_TIMEOUT_S": "6",
            "RUNSTATE_PROCESSOR_EXPIRY_RESEND_S": "30",
            "RUNSTATE_PROCESSOR_STALL_FENCE_SHARE": "0.5",
            "RUNSTATE_RUNTIME_WORKER_ID": "w1",
        }
    )
    assert warnings == [
        "RUNSTATE_PROCESSOR_EXPIRY_RESEND_S is not read any more (the faust processor's"
        " setting); use RUNSTATE_RUNTIME_EXPIRY_RESEND_S",
        "RUNSTATE_PROCESSOR_SESSION_TIMEOUT_S is not read any more (the faust processor's"
        " setting); use RUNSTATE_RUNTIME_SESSION_TIMEOUT_MS",
        "RUNSTATE_PROCESSOR_STALL_FENCE_SHARE is not read any more (the faust processor's"
        " setting); it has no equivalent",
    ]
    assert retired_settings({"RUNSTATE_RUNTIME_WORKER_ID": "w1"}) == []


def test_the_advertised_url_is_apart_from_the_bind_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNSTATE_RUNTIME_WEB_HOST", "0.0.0.0")
    monkeypatch.setenv("RUNSTATE_RUNTIME_ADVERTISED_URL", "http://runstate-1.runstate:6066/")
    config = load_runtime_config(Settings())
    assert config.web_host == "0.0.0.0"
    assert config.url == "http://runstate-1.runstate:6066"
    assert load_runtime_config(Settings(), advertised_url="http://10.0.0.7:7000").url == (
        "http://10.0.0.7:7000"
    )


def test_without_one_the_url_comes_from_the_bind_and_never_names_a_wildcard() -> None:
    assert load_runtime_config(Settings(), web_host="127.0.0.1", web_port=7001).url == (
        "http://127.0.0.1:7001"
    )
    assert load_runtime_config(Settings(), web_host="::1", web_port=7001).url == (
        "http://[::1]:7001"
    )
    for wildcard in ("0.0.0.0", "::"):
        url = load_runtime_config(Settings(), web_host=wildcard, web_port=7001).url
        assert url == f"http://{socket.gethostname()}:7001"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("http://0.0.0.0:6066", "where to listen"),
        ("http://[::]:6066", "where to listen"),
        ("runstate-0:6066", "not a URL"),
        ("ftp://runstate-0:6066", "not a URL"),
        ("http://runstate-0:6066/api", "not a URL"),
        ("http://runstate 0:6066", "not a URL"),
        ("http://runstate-0:0", "port 0"),
        ("http://runstate-0:99999", "advertised_url"),
    ],
)
def test_an_advertised_url_others_cannot_dial_is_refused_at_start_up(value: str, says: str) -> None:
    with pytest.raises(ConfigError, match="advertised_url") as caught:
        load_runtime_config(Settings(), advertised_url=value)
    assert says in str(caught.value)


def test_the_group_learns_the_advertised_url_not_the_bind_address() -> None:
    config = load_runtime_config(
        Settings(), worker_id="w-2", web_host="0.0.0.0", advertised_url="http://runstate-2:6066"
    )
    assert parse_client_id(consumer_settings(config)["client.id"]) == (
        "w-2",
        "http://runstate-2:6066",
    )

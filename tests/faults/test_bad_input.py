"""Scenario 8: a flood of bad input. Each bad record lands in the dead-letter topic with its
reason, exactly once (the oracle reads it ``read_committed``); the good runs around it are
processed exactly; the worker never restarts."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from confluent_kafka import Producer

from runstate.runs.dead_letters import DeadLetterReason
from runstate.schemas.catalog import fingerprint_of, load_schema_text
from runstate.schemas.codec import encode
from runstate.schemas.convert import encode_event
from runstate.schemas.events import StepCompleted
from runstate.streams.topics import TopicNames
from tests.factories import RunBuilder
from tests.faults.conftest import DeploymentFactory
from tests.faults.harness import Deployment, agent_runs, interleave
from tests.faults.oracle import Oracle, converge
from tests.faults.report import ScenarioResult
from tests.polling import assert_eventually

#: A StepStarted whose ``step`` became an int: registered, but unreadable as StepStarted.
_INCOMPATIBLE = {
    "type": "record",
    "name": "StepStarted",
    "namespace": "runstate.events",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "run_id", "type": "string"},
        {"name": "step", "type": "long"},
    ],
}

BadRecord = tuple[str, DeadLetterReason, bytes | None, bytes | None]


def _register_incompatible(bootstrap: str, names: TopicNames) -> bytes:
    schema = load_schema_text(json.dumps(_INCOMPATIBLE))
    assert fingerprint_of(schema.canonical_form) == schema.fingerprint
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(names.schemas, key=schema.fingerprint_hex.encode(), value=json.dumps(_INCOMPATIBLE))
    assert p.flush(10) == 0
    return encode({"event_id": "e-x", "run_id": "run-incompatible", "step": 7}, schema)


def bad_records(per_kind: int, *, incompatible: bytes, seed: int) -> list[BadRecord]:
    """``(kind, expected reason, key, value)`` for every kind of garbage, ``per_kind`` each."""
    rng = random.Random(seed)
    out: list[BadRecord] = []
    for i in range(per_kind):
        good = RunBuilder(f"run-bad-{i}", seed=i)
        valid = encode_event(good.start())
        noise = bytes([rng.randrange(0, 0xC3)]) + rng.randbytes(rng.randrange(0, 200))
        out += [
            ("random_bytes", DeadLetterReason.UNDECODABLE, b"run-bad", noise),
            (
                "truncated_avro",
                DeadLetterReason.UNDECODABLE,
                f"run-bad-{i}".encode(),
                valid[: rng.randrange(11, len(valid))],
            ),
            (
                "unknown_fingerprint",
                DeadLetterReason.UNKNOWN_SCHEMA,
                b"run-bad",
                b"\xc3\x01" + rng.randbytes(8) + valid[10:],
            ),
            (
                "incompatible_schema",
                DeadLetterReason.UNDECODABLE,
                b"run-incompatible",
                incompatible,
            ),
            (
                "oversize",
                DeadLetterReason.OVERSIZE,
                b"run-bad",
                b"\xc3\x01" + rng.randbytes(70 * 1024),
            ),
            ("null_value", DeadLetterReason.NULL_VALUE, b"run-bad", None),
            ("missing_key", DeadLetterReason.MISSING_KEY, None, valid),
            ("key_mismatch", DeadLetterReason.KEY_MISMATCH, b"run-someone-else", valid),
            (
                "orphan_event",
                DeadLetterReason.REJECTED,
                f"run-orphan-{i}".encode(),
                encode_event(
                    RunBuilder(f"run-orphan-{i}").emit(StepCompleted, step="x", attempt=1)
                ),
            ),
        ]
    rng.shuffle(out)
    return out


def flood(d: Deployment, *, per_kind: int, runs: int, seed: int) -> dict[str, object]:
    """Send good runs and bad records mixed; check the DLQ, the oracle and the worker."""
    w = d.worker("w1").start()
    w.wait_ready()
    pid = w.pid
    incompatible = _register_incompatible(d.bootstrap, d.names)
    sent_bad = bad_records(per_kind, incompatible=incompatible, seed=seed)
    bad = list(sent_bad)
    good = list(interleave(agent_runs(runs, prefix="good", seed=seed), active=20, seed=seed))
    raw = Producer({"bootstrap.servers": d.bootstrap, "message.max.bytes": 2_000_000})
    acked: list[str] = []
    with d.producer() as p:
        step = max(1, len(good) // max(1, len(bad)))
        for n, event in enumerate(good):
            p.send(event)
            acked.append(event.event_id)
            if n % step == 0 and bad:
                kind, _reason, key, value = bad.pop()
                raw.produce(d.names.events, key=key, value=value, headers=[("fault-kind", kind)])
                raw.poll(0)
        for kind, _reason, key, value in bad:
            raw.produce(d.names.events, key=key, value=value, headers=[("fault-kind", kind)])
    assert raw.flush(30) == 0
    expected = Counter((kind, reason.value) for kind, reason, _k, _v in sent_bad)

    def dead_lettered() -> Counter[tuple[str, str]]:
        got: Counter[tuple[str, str]] = Counter()
        for r in d.read_dead_letters():
            h = dict(r.headers)
            kind = (h.get("fault-kind") or b"?").decode()
            got[(kind, (h.get("rs-reason") or b"?").decode())] += 1
        assert sum(got.values()) >= sum(expected.values()), f"{sum(got.values())} so far"
        return got

    got = assert_eventually(dead_lettered, timeout_s=120, interval_s=1, what="dead letters")
    verdict, _ = converge(Oracle(d.bootstrap, d.names), timeout_s=120, acked=acked)
    assert w.alive and w.pid == pid, "the worker restarted"
    return {"expected": expected, "got": got, "verdict": verdict, "restarts": w.starts - 1}


def _check(outcome: dict[str, object], scenario: ScenarioResult | None) -> None:
    expected, got, verdict = outcome["expected"], outcome["got"], outcome["verdict"]
    assert isinstance(expected, Counter) and isinstance(got, Counter)
    if scenario is not None:
        scenario.verdict(verdict)
        scenario.figures["bad records sent"] = sum(expected.values())
        scenario.figures["dead letters"] = dict(
            sorted((f"{k}/{r}", n) for (k, r), n in got.items())
        )
        scenario.figures["worker restarts"] = outcome["restarts"]
        scenario.figures["dead-letter copies (exactly once: 0)"] = verdict.dead_letter_copies  # type: ignore[attr-defined]
    assert got == expected, f"dead letters by (kind, reason): {got} != {expected}"
    assert verdict.clean, verdict.summary()  # type: ignore[attr-defined]


@pytest.mark.faults
@pytest.mark.timeout(900)
def test_flood_of_bad_input_is_dead_lettered(
    kafka_bootstrap: str,
    deployment_factory: DeploymentFactory,
    scenario: ScenarioResult,
    seed: int,
) -> None:
    scenario.scenario, scenario.title = "8", "flood of bad input"
    scenario.injections = "9 kinds x 50 bad records (450) among 200 good runs"
    d = deployment_factory(kafka_bootstrap, partitions=4)
    _check(flood(d, per_kind=50, runs=200, seed=seed), scenario)


@pytest.mark.integration
def test_bad_input_quick(
    kafka_bootstrap: str, deployment_factory: DeploymentFactory, seed: int
) -> None:
    """The fast variant in ``make test``: ~54 bad records among 30 runs."""
    d = deployment_factory(kafka_bootstrap, partitions=2)
    _check(flood(d, per_kind=6, runs=30, seed=seed), None)

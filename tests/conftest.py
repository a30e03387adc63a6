"""Session-wide fixtures: a real Kafka broker on loopback, and unique names per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import Phase
from hypothesis import settings as hypothesis_settings

from runstate.streams.broker import KAFKA_VERSION, BrokerConfig, LocalBroker, free_port

# No per-example deadline: on a shared 2-core machine an example's duration says nothing
# about correctness, and a timing failure there is not a test that can fail for a reason.
hypothesis_settings.register_profile("runstate", deadline=None)
# `make mutation` runs the property tests once per mutant: fewer examples, and the same ones
# every time, so a mutant that survives survives again; no shrinking, since a killed mutant
# needs a failing example, not the smallest one (shrinking took a state-codec mutant from
# 7 s to 40 s).
hypothesis_settings.register_profile(
    "mutation",
    deadline=None,
    max_examples=25,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
)
hypothesis_settings.load_profile(os.environ.get("RUNSTATE_HYPOTHESIS_PROFILE", "runstate"))

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker | None]:
    """The test session's own broker (free ports, temp dir); None when an external cluster
    is given through RUNSTATE_BOOTSTRAP_SERVERS."""
    if os.environ.get("RUNSTATE_BOOTSTRAP_SERVERS"):
        yield None
        return
    broker = LocalBroker(
        BrokerConfig(
            data_dir=tmp_path_factory.mktemp("kafka"),
            jars_dir=ROOT / ".runstate" / "jars" / f"kafka-{KAFKA_VERSION}",
            port=free_port(),
            controller_port=free_port(),
        )
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: LocalBroker | None) -> str:
    """Bootstrap servers of the broker the integration tests use."""
    if kafka_broker is None:
        return os.environ["RUNSTATE_BOOTSTRAP_SERVERS"]
    return kafka_broker.config.bootstrap


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Names that no other test uses (topics, groups, prefixes)."""

    def make(hint: str) -> str:
        return f"{hint}-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace(
            "]", ""
        )

    return make

"""A secured cluster: SASL/SCRAM, ACLs on, one principal per role (issue 14).

A broker of its own started the way ``runstate broker start --secure`` starts it. Each role
works with its own credentials and is refused what it should not do; a client without
credentials gets nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from typer.testing import CliRunner

from runstate.cli import app
from runstate.schemas.events import RunStarted
from runstate.settings import load_settings
from runstate.streams import clients
from runstate.streams.broker import KAFKA_VERSION, BrokerConfig, LocalBroker, free_port
from tests.polling import assert_eventually
from tests.workers import Deployment

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    broker = LocalBroker(
        BrokerConfig(
            data_dir=tmp_path_factory.mktemp("secure-kafka"),
            jars_dir=ROOT / ".runstate" / "jars" / f"kafka-{KAFKA_VERSION}",
            port=free_port(),
            controller_port=free_port(),
            heap_mb=384,
            secure=True,
        )
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@contextmanager
def role(broker: LocalBroker, user: str) -> Iterator[None]:
    """runstate's clients, made inside, connect as ``user``."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in broker.client_env(user).items():
            env.setenv(name, value)
        load_settings.cache_clear()
        try:
            yield
        finally:
            load_settings.cache_clear()
    load_settings.cache_clear()


@pytest.fixture
def deployment(secure_broker: LocalBroker, tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(
        bootstrap=secure_broker.config.bootstrap,
        prefix=f"sec-{uuid.uuid4().hex[:8]}",
        partitions=2,
        root=tmp_path,
    )
    with role(secure_broker, "admin"):
        d.ensure_topics()
        with pytest.MonkeyPatch.context() as env:
            env.setenv("RUNSTATE_TOPIC_PREFIX", d.prefix)
            load_settings.cache_clear()
            applied = CliRunner().invoke(
                app, ["topics", "acls", "--apply", "--bootstrap", d.bootstrap]
            )
        assert applied.exit_code == 0, applied.output
        assert "applied" in applied.output
    try:
        yield d
    finally:
        d.close()


def started(run_id: str) -> RunStarted:
    return RunStarted(
        event_id=str(uuid.uuid4()),
        run_id=run_id,
        occurred_at=datetime.now(UTC),
        producer="secure-test",
        agent="a",
        input="{}",
        prompt_version="p1",
        owner="ops",
        source="test",
    )


def refused(exc: KafkaException) -> bool:
    code = exc.args[0].code()
    return code in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED)


def test_each_role_works_with_its_own_credentials_and_no_more(
    secure_broker: LocalBroker, deployment: Deployment
) -> None:
    names = deployment.names
    run_id = f"run-{uuid.uuid4().hex[:8]}"

    # The agent writes events.
    with role(secure_broker, "agent"), deployment.producer("agent") as producer:
        producer.emit(started(run_id), timeout_s=120)

    # The processor, a real worker process with its own credentials, applies them.
    worker = deployment.worker("w1", env=secure_broker.client_env("processor")).start()
    worker.wait_ready(timeout_s=90)
    assert_eventually(lambda: worker.get(f"/runs/{run_id}")[0] == 200, timeout_s=60)

    # The agent cannot read the changelog.
    with role(secure_broker, "agent"):
        consumer = clients.consumer(
            {
                "bootstrap.servers": deployment.bootstrap,
                "group.id": f"{deployment.prefix}-reactor-x",
                "enable.auto.commit": False,
            }
        )
        try:
            consumer.subscribe([names.runs_changelog])
            message = None
            for _ in range(60):
                message = consumer.poll(0.5)
                if message is not None:
                    break
            assert message is not None and message.error() is not None
            assert message.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        finally:
            consumer.close()

    # The archiver reads events but cannot write them.
    with role(secure_broker, "archiver"):
        producer = clients.producer(
            {"bootstrap.servers": deployment.bootstrap, "message.timeout.ms": 10000}
        )
        failures: list[KafkaError] = []
        producer.produce(
            names.events,
            key=run_id.encode(),
            value=b"forged",
            on_delivery=lambda err, _msg: failures.append(err),
        )
        producer.flush(15)
        assert failures and failures[0] is not None
        assert failures[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        consumer = clients.consumer(
            {
                "bootstrap.servers": deployment.bootstrap,
                "group.id": f"{deployment.prefix}-archiver-events",
                "isolation.level": "read_committed",
            }
        )
        try:
            parts = [TopicPartition(names.events, p, 0) for p in range(deployment.partitions)]
            consumer.assign(parts)
            seen = []
            for _ in range(40):
                message = consumer.poll(0.5)
                if message is not None and message.error() is None:
                    seen.append(message.key())
                if seen:
                    break
            assert seen == [run_id.encode()]
        finally:
            consumer.close()


def test_only_a_super_user_can_apply_the_acls(
    secure_broker: LocalBroker, deployment: Deployment
) -> None:
    with role(secure_broker, "agent"):
        result = CliRunner().invoke(
            app, ["topics", "acls", "--apply", "--bootstrap", deployment.bootstrap]
        )
    assert result.exit_code != 0
    assert "could not create the role ACLs" in result.output
    assert "Traceback" not in result.output
    # The local broker's own path gives the same grants, and repeating them is harmless.
    assert secure_broker.grant_role_acls(deployment.names) > 0


def test_a_client_without_credentials_gets_nothing(
    secure_broker: LocalBroker, deployment: Deployment
) -> None:
    admin = clients.admin_client(deployment.bootstrap)  # no RUNSTATE_KAFKA_* set: plaintext
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)


def test_a_wrong_password_is_refused(secure_broker: LocalBroker, deployment: Deployment) -> None:
    def admin(password: str) -> object:
        return clients.admin_client(
            deployment.bootstrap,
            **{
                "security.protocol": "sasl_plaintext",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "agent",
                "sasl.password": password,
            },
        )

    # librdkafka reports a failed SASL handshake as a transport failure of the request.
    with pytest.raises(KafkaException):
        admin("not-the-password").list_topics(timeout=10)  # type: ignore[attr-defined]
    listed = admin(secure_broker.password("agent")).list_topics(timeout=30)  # type: ignore[attr-defined]
    assert deployment.names.events in listed.topics


def test_passwords_stay_out_of_the_broker_log_and_are_private(
    secure_broker: LocalBroker,
) -> None:
    passwords = [secure_broker.password(u) for u in ("admin", "agent", "processor")]
    log = secure_broker.log_file.read_text(errors="replace")
    assert not any(p in log for p in passwords)
    for path in secure_broker.credentials_dir.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
    saved = json.loads((secure_broker.config.data_dir / "broker.json").read_text())
    assert saved["secure"] is True


def test_security_settings_without_a_password_are_one_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNSTATE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("RUNSTATE_KAFKA_SASL_USERNAME", "agent")
    load_settings.cache_clear()
    try:
        with pytest.raises(Exception, match="RUNSTATE_KAFKA_SASL_PASSWORD"):
            clients.client_config({"bootstrap.servers": "127.0.0.1:1"})
    finally:
        load_settings.cache_clear()

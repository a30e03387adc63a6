"""``runstate demo``: the main job end to end on the local broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import typer
from rich.console import Console
from rich.table import Table

from runstate.cli.broker import _broker
from runstate.errors import Error
from runstate.schemas.catalog import default_catalog
from runstate.schemas.codec import SingleObjectCodec
from runstate.schemas.convert import decode_event
from runstate.schemas.events import (
    ApprovalGranted,
    ApprovalRequested,
    ExternalActionIntended,
    ExternalActionRecorded,
    ModelCalled,
    RunCompleted,
    RunStarted,
    StepCompleted,
    StepStarted,
)
from runstate.settings import load_settings
from runstate.streams.producer import EventProducer
from runstate.streams.reader import read_topic
from runstate.streams.schema_topic import SchemaTopicSource
from runstate.streams.topics import TopicNames, admin_client, ensure_topics, topic_specs


def demo() -> None:
    """Start the local broker, produce a sample agent run through the SDK, read it back."""
    console = Console()
    s = load_settings()
    try:
        broker = _broker(None)
        status = broker.status() or broker.start()
        console.print(f"[bold]broker[/] {status.bootstrap} (log {status.log_file})")
        bootstrap = status.bootstrap
        names = TopicNames(s.topic_prefix)
        ensure_topics(admin_client(bootstrap), topic_specs(names, partitions=s.partitions))
        with EventProducer(s, bootstrap_servers=bootstrap) as producer:
            run = producer.run()
            due = datetime.now(UTC) + timedelta(hours=4)
            run.emit(
                RunStarted,
                agent="credit-limit",
                owner="loans-desk",
                source="demo",
                prompt_version="credit-check@3",
                input=json.dumps({"company": "Acme", "limit": 50000, "phone": "+7 701 000"}),
            )
            run.emit(StepStarted, step="check_form", step_index=0, attempt=1)
            run.emit(
                ModelCalled,
                model_request_id="req-1",
                model="gpt-4o-mini",
                step="check_form",
                tags={"route": "gateway"},
            )
            run.emit(StepCompleted, step="check_form", attempt=1, output_ref="form/clean/v2")
            run.emit(StepStarted, step="manager_approval", step_index=1, attempt=1)
            run.emit(
                ApprovalRequested,
                step="manager_approval",
                approver="manager.aliya",
                due_at=due,
                subject_hash="sha256:3f1a",
                subject="limit 50,000 for Acme",
            )
            run.emit(ApprovalGranted, by="manager.aliya", subject_hash="sha256:3f1a")
            run.emit(StepCompleted, step="manager_approval", attempt=1)
            run.emit(StepStarted, step="notify_client", step_index=2, attempt=1)
            run.emit(
                ExternalActionIntended,
                step="notify_client",
                idempotency_key=f"{run.run_id}:notify",
                system="email",
            )
            run.emit(
                ExternalActionRecorded,
                step="notify_client",
                idempotency_key=f"{run.run_id}:notify",
                system="email",
                external_id="msg-7781",
            )
            run.emit(StepCompleted, step="notify_client", attempt=1)
            last = run.emit(RunCompleted, output_ref="decision/approved")
        console.print(
            f"produced run [bold]{run.run_id}[/] to {last.topic} "
            f"partition {last.partition}, last offset {last.offset}"
        )
        codec = SingleObjectCodec(
            default_catalog(), writer_source=SchemaTopicSource(bootstrap, names.schemas)
        )
        table = Table("offset", "at", "event", "details", title=f"run {run.run_id}, read back")
        for record in read_topic(bootstrap, names.events, partitions=[last.partition]):
            if record.key != run.run_id.encode() or record.value is None:
                continue
            event = decode_event(
                record.value,
                codec=codec,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            details = event.model_dump(
                exclude={"event_id", "run_id", "occurred_at", "producer"},
                exclude_none=True,
                mode="json",
            )
            table.add_row(
                str(record.offset),
                event.occurred_at.strftime("%H:%M:%S.%f")[:-3],
                event.event_type,
                json.dumps(details)[:90],
            )
        console.print(table)
    except Error as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc

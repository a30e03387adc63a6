"""``runstate archive``: copy topics into the policy's archive, and check what is there."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from runstate.cli.options import policy_option
from runstate.cli.output import stdout_console
from runstate.cli.progress import Bar, progress_bar, progress_console, watched
from runstate.errors import Error
from runstate.streams.clients import KAFKA_LOGGER, require_reachable

if TYPE_CHECKING:
    from runstate.retention.verify import ChainHead

app = typer.Typer(
    help="Archive topics to the retention policy's store, and verify the archive.",
    no_args_is_help=True,
)

PolicyOption = Annotated[Path, policy_option("retention policy YAML file")]
TopicOption = Annotated[
    str, typer.Option("--topic", help="events, state-changes, or a full topic name")
]
BootstrapOption = Annotated[
    str | None, typer.Option("--bootstrap", help="Kafka bootstrap servers [RUNSTATE_*]")
]
PrefixOption = Annotated[
    str | None, typer.Option("--topic-prefix", help="prefix of every topic name [RUNSTATE_*]")
]


@app.command()
def run(
    policy: PolicyOption,
    topic: TopicOption = "events",
    once: Annotated[
        bool, typer.Option("--once", help="archive up to the end of every partition, then exit")
    ] = False,
    roll_records: Annotated[
        int, typer.Option(help="close a segment at this many records")
    ] = 10_000,
    roll_seconds: Annotated[
        float, typer.Option(help="... or this many seconds after its first record")
    ] = 60.0,
    group: Annotated[
        str | None, typer.Option(help="consumer group [default: <prefix>-archiver-<topic>]")
    ] = None,
    instance_id: Annotated[
        str | None,
        typer.Option(help="static group membership id: restarts take partitions back at once"),
    ] = None,
    metrics_port: Annotated[
        int,
        typer.Option(
            min=0,
            help="serve Prometheus /metrics on 127.0.0.1:PORT (0: none); see docs/metrics.md",
        ),
    ] = 0,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
    log_level: Annotated[str, typer.Option(help="debug|info|warning|error")] = "info",
) -> None:
    """Run the archiver: segments per partition, masked per policy, committed after publish.

    Safe to kill at any moment: a restart resumes from what the archive holds, so no offset
    is skipped or archived twice. With --metrics-port, Prometheus reads its watermark and
    lag per partition there.
    """
    from runstate.retention.archiver import Archiver, ArchiverConfig, writer_schema_mask
    from runstate.retention.archiver_metrics import ArchiverMetrics
    from runstate.retention.context import load_context
    from runstate.retention.masking import mask_keys_from_settings, masker_for_topic
    from runstate.settings import load_settings

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # librdkafka's own lines follow --log-level here (other commands keep them at WARNING)
    logging.getLogger(KAFKA_LOGGER).setLevel(log_level.upper())
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    context = load_context(policy, bootstrap_servers=bootstrap, topic_prefix=topic_prefix)
    full = context.resolve(topic)
    # A policy that masks without a key is refused before anything is reached or written.
    masker = masker_for_topic(context.policy, full, keys=mask_keys_from_settings(load_settings()))
    require_reachable(context.bootstrap_servers)
    store = context.store(full)
    mask = writer_schema_mask(masker, context.event_codec()) if masker else None
    config = ArchiverConfig(
        bootstrap_servers=context.bootstrap_servers,
        topic=full,
        group_id=group or f"{context.names.prefix}-archiver-{topic.replace('.', '-')}",
        roll_records=roll_records,
        roll_seconds=roll_seconds,
        instance_id=instance_id,
    )
    archiver = Archiver(config, store, mask=mask)
    metrics = ArchiverMetrics(archiver)
    if metrics_port:
        metrics.serve(metrics_port)

    def refresh(bar: Bar) -> None:
        marks, ends = archiver.watermarks(), archiver.ends
        left = sum(max(0, ends[p] - mark) for p, mark in marks.items() if p in ends)
        done = archiver.stats.records
        bar.update(completed=done, total=done + left if ends else None)

    # a bar for a backfill (--once) only: a running archiver is a service that logs
    console = progress_console() if once else None
    try:
        with (
            progress_bar(f"archiving {full}", console=console) as bar,
            watched(bar, refresh),
        ):
            stats = archiver.run(once=once, stop=stop)
    finally:
        metrics.stop()
    typer.echo(
        f"archived {stats.records} records of {full} in {stats.segments} segments"
        f" ({stats.segment_bytes} bytes archived, {stats.payload_bytes} bytes of payload)"
        f" at {stats.records_per_s:.0f} records/s to {store.location}"
    )


@app.command()
def verify(
    policy: PolicyOption,
    topic: TopicOption = "events",
    partition: Annotated[
        list[int] | None, typer.Option(help="only this partition (repeatable)")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="compare manifests only; do not read segments")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON, not a table")] = False,
    from_offset: Annotated[
        int,
        typer.Option(
            "--from-offset",
            min=0,
            help="prove coverage from this offset, not 0 (an archive continuing another store's)",
        ),
    ] = 0,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="do not ask Kafka; holes between the archive and Kafka's log go unchecked",
        ),
    ] = False,
    anchor: Annotated[
        Path | None,
        typer.Option(
            "--anchor",
            help="chain heads written earlier by `archive anchor`: the chain must pass them",
        ),
    ] = None,
    bootstrap: BootstrapOption = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Check the archive for gaps, overlaps, damaged segments and a broken hash chain
    (exit 1 on any issue).

    Coverage is proven from offset 0 (or --from-offset) for every partition of the topic,
    and up to Kafka's earliest offset: an offset neither archived nor in Kafka is an issue.
    Without --offline, Kafka must be reachable. For a topic that is not archived, its
    hold_archive is checked instead (hold segments only, no coverage, Kafka not asked).
    The manifests' hash chain is recomputed; with --anchor, it must also still pass through
    the heads recorded then (removing the newest segments, or rewriting the whole chain,
    shows only there).
    """
    from runstate.retention.context import load_context
    from runstate.retention.kafka_log import ConfluentKafkaLog
    from runstate.retention.verify import verify as verify_partition

    context = load_context(policy, bootstrap_servers=bootstrap, topic_prefix=topic_prefix)
    full = context.resolve(topic)
    anchors = {} if anchor is None else {h.partition: h for h in read_anchor(anchor, full)}
    # An unarchived topic's hold_archive holds only held runs' records: no coverage.
    holds_only = not context.topic_policy(full).archived
    store = context.hold_store(full)
    earliest: dict[int, int] = {}
    if not offline and not holds_only:
        require_reachable(context.bootstrap_servers)
        kafka = ConfluentKafkaLog(context.bootstrap_servers, timeout_s=15.0)
        if full not in kafka.topics():
            raise Error(f"topic {full} is not in Kafka; pass --offline to check the archive alone")
        earliest = {p: low for p, (low, _high) in kafka.watermarks(full).items()}
    partitions = partition or sorted(set(store.partitions(full)) | set(earliest))
    reports = [
        verify_partition(
            store,
            full,
            p,
            deep=not quick,
            start=from_offset,
            kafka_earliest=earliest.get(p),
            holds_only=holds_only,
            anchor=anchors.get(p),
        )
        for p in sorted(set(partitions) | set(anchors))
    ]
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "partition": r.partition,
                        "segments": r.segments,
                        "expired": r.expired,
                        "records": r.records,
                        "first_offset": r.first_offset,
                        "watermark": r.watermark,
                        "issues": [str(i) for i in r.issues],
                        "orphans": list(r.orphans),
                        "hold_segments": r.hold_segments,
                        "held_records": r.held_records,
                        "chain_head": None if r.head is None else r.head.link,
                        "unchained": r.unchained,
                    }
                    for r in reports
                ],
                indent=2,
            )
        )
    else:
        table = Table(title=f"{full} in {store.location}")
        for column in ("partition", "segments", "expired", "records", "held", "offsets", "issues"):
            table.add_column(column)
        for r in reports:
            span = "-" if r.first_offset is None else f"{r.first_offset}..{(r.watermark or 1) - 1}"
            table.add_row(
                str(r.partition),
                str(r.segments),
                str(r.expired),
                str(r.records),
                f"{r.held_records} in {r.hold_segments}" if r.hold_segments else "-",
                span,
                "\n".join(str(i) for i in r.issues) or "ok",
            )
        console = stdout_console()
        console.print(table)
        orphans = sum(len(r.orphans) for r in reports)
        if orphans:
            console.print(f"{orphans} orphan blobs (interrupted puts; harmless)")
    if any(not r.ok for r in reports):
        raise typer.Exit(1)


@app.command()
def anchor(
    policy: PolicyOption,
    topic: TopicOption = "events",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="write the heads to this file (keep it where the archive's writer cannot"
            " rewrite it); default: print them",
        ),
    ] = None,
    topic_prefix: PrefixOption = None,
) -> None:
    """Record each partition's hash-chain head, for a later `archive verify --anchor`.

    Reads manifests only. Refuses (exit 1) while the chain is broken: an anchor vouches
    for the history up to it. Store the output outside the archive (another store, a
    ticket, a signed mail): a head kept only beside the archive proves nothing against its
    writer.
    """
    from runstate.retention.context import load_context
    from runstate.retention.verify import IssueKind
    from runstate.retention.verify import verify as verify_partition

    context = load_context(policy, topic_prefix=topic_prefix)
    full = context.resolve(topic)
    store = context.store(full)
    heads = []
    for p in store.partitions(full):
        report = verify_partition(store, full, p, deep=False)
        broken = [i for i in report.issues if i.kind is IssueKind.CHAIN]
        if broken:
            raise Error(f"{full}/{p}: the chain is broken, not anchoring it: {broken[0]}")
        if report.head is not None:
            heads.append(report.head)
    text = json.dumps(
        [
            {
                "topic": h.topic,
                "partition": h.partition,
                "last_offset": h.last_offset,
                "link": h.link,
            }
            for h in heads
        ],
        indent=2,
    )
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n")
        typer.echo(f"anchored {len(heads)} partitions of {full} in {out}", err=True)


def read_anchor(path: Path, topic: str) -> list[ChainHead]:
    """The heads of ``topic`` in an anchor file written by `archive anchor`.

    Raises:
        Error: the file is missing or not an anchor file.
    """
    from runstate.retention.verify import ChainHead

    try:
        entries = json.loads(path.read_text())
        heads = [
            ChainHead(str(e["topic"]), int(e["partition"]), int(e["last_offset"]), str(e["link"]))
            for e in entries
        ]
    except OSError as exc:
        raise Error(f"cannot read the anchor file {path}: {exc.strerror}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise Error(f"{path} is not an anchor file written by `archive anchor`: {exc}") from exc
    return [h for h in heads if h.topic == topic]

"""``runstate dead-letters list|show|requeue``: the records the processor set aside.

Every dead letter is the original record (key, value, headers) plus ``rs-*`` headers saying
why (:mod:`runstate.runs.dead_letters`). ``requeue`` puts one back on the events topic,
unchanged but for the headers the processor added (a ``rs-requeue-of`` instead), in the
run's partition, once the cause is fixed (the run it needed exists now, the producer bug is
fixed and the record is still right): the processor judges it afresh. Once: a requeue writes
a marker to the dead-letter topic (key ``requeued:<ref>``) after the record is delivered, and
a second requeue of the same dead letter is refused. (A crash between the two leaves no
marker; the requeued event keeps its event id, so the processor drops a second copy as a
duplicate.)

Listing reads the dead-letter topic from ``--from-offset`` (default: the last ``--limit``
records), never the whole history unless asked.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from runstate.cli.output import stdout_console
from runstate.cli.principals import By, acting_principal
from runstate.errors import Error
from runstate.identity import Role, require_role
from runstate.runs.dead_letters import (
    HEADER_DETAIL,
    HEADER_ERROR_CLASS,
    HEADER_REASON,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    HEADER_WORKER,
)
from runstate.schemas.convert import decode_event
from runstate.settings import load_settings
from runstate.streams import clients
from runstate.streams.partitioning import partition_for
from runstate.streams.reader import RawRecord, end_offsets, read_topic
from runstate.streams.topics import TopicNames

app = typer.Typer(
    help="The records the processor set aside, with the reason (dead-letter topic).",
    no_args_is_help=True,
)

HEADER_REQUEUE_OF = "rs-requeue-of"
#: What the processor added when it set the record aside; the producer's own headers stay.
_SET_ASIDE_HEADERS = frozenset(
    {
        HEADER_REASON,
        HEADER_DETAIL,
        HEADER_ERROR_CLASS,
        HEADER_SOURCE_TOPIC,
        HEADER_SOURCE_PARTITION,
        HEADER_SOURCE_OFFSET,
        HEADER_WORKER,
    }
)
_MARKER = b"requeued:"

Ref = Annotated[
    str, typer.Argument(help="the dead letter as PARTITION:OFFSET (from `dead-letters list`)")
]


def _names() -> tuple[str, TopicNames]:
    s = load_settings()
    clients.require_reachable(s.bootstrap_servers)
    return s.bootstrap_servers, TopicNames(s.topic_prefix)


def _ref(text: str) -> tuple[int, int]:
    partition, _, offset = text.partition(":")
    try:
        return int(partition), int(offset)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not PARTITION:OFFSET, e.g. 0:42") from None


def _text(record: RawRecord, header: str) -> str:
    return (record.header(header) or b"").decode("utf-8", "replace")


def _records(bootstrap: str, topic: str, start: dict[int, int] | None) -> list[RawRecord]:
    return list(read_topic(bootstrap, topic, start=start))


def _requeued(records: list[RawRecord]) -> set[str]:
    return {r.key[len(_MARKER) :].decode() for r in records if r.key and r.key.startswith(_MARKER)}


@app.command(name="list")
def list_dead_letters(
    limit: Annotated[int, typer.Option(min=1, help="the newest this many records")] = 50,
    from_offset: Annotated[
        int | None, typer.Option(help="read from this offset of every partition instead")
    ] = None,
    run: Annotated[str | None, typer.Option(help="only this run's records")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON, not a table")] = False,
) -> None:
    """List dead letters: where, the run, why, and whether it was requeued."""
    bootstrap, names = _names()
    topic = names.dead_letters
    marks = end_offsets(bootstrap, topic)
    start = {
        p: (from_offset if from_offset is not None else hi - limit) for p, (_, hi) in marks.items()
    }
    records = _records(bootstrap, topic, start)
    done = _requeued(records)
    rows = []
    for r in records:
        if r.key is not None and r.key.startswith(_MARKER):
            continue
        key = None if r.key is None else r.key.decode("utf-8", "replace")
        if run is not None and key != run:
            continue
        ref = f"{r.partition}:{r.offset}"
        rows.append(
            {
                "ref": ref,
                "run_id": key,
                "reason": _text(r, HEADER_REASON),
                "class": _text(r, HEADER_ERROR_CLASS),
                "detail": _text(r, HEADER_DETAIL),
                "requeued": ref in done,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"{len(rows)} dead letters")
    for column in ("ref", "run_id", "reason", "class", "requeued", "detail"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            *(str(row[c]) for c in ("ref", "run_id", "reason", "class", "requeued", "detail"))
        )
    stdout_console().print(table)


@app.command()
def show(ref: Ref) -> None:
    """Print one dead letter: its headers, and the event if it decodes."""
    bootstrap, names = _names()
    record = _one(bootstrap, names.dead_letters, ref)
    body: dict[str, object] = {
        "ref": ref,
        "key": None if record.key is None else record.key.decode("utf-8", "replace"),
        "headers": {k: (v or b"").decode("utf-8", "replace") for k, v in record.headers},
    }
    try:
        event = decode_event(record.value or b"")
        body["event"] = json.loads(event.model_dump_json())
        body["event_type"] = event.event_type
    except Error as exc:
        body["undecodable"] = str(exc)
    typer.echo(json.dumps(body, indent=2))


@app.command()
def requeue(ref: Ref, by: By = None) -> None:
    """Put one dead letter back on the events topic, once (needs the operator role)."""
    who = acting_principal(by)
    require_role(who, Role.OPERATOR, doing=f"requeue dead letter {ref}")
    bootstrap, names = _names()
    record = _one(bootstrap, names.dead_letters, ref)
    if record.key is not None and record.key.startswith(_MARKER):
        raise Error(f"{ref} is a requeue marker, not a dead letter")
    partition, _ = _ref(ref)
    markers = _records(bootstrap, names.dead_letters, {partition: record.offset})
    if ref in _requeued(markers):
        raise Error(f"dead letter {ref} was already requeued; it goes back only once")
    headers: list[tuple[str, str | bytes | None]] = [
        (k, v) for k, v in record.headers if k not in _SET_ASIDE_HEADERS
    ]
    headers += [(HEADER_REQUEUE_OF, ref.encode()), ("rs-requeued-by", who.name.encode())]
    if record.key is None:
        raise Error(f"dead letter {ref} has no key (no run); fix its producer, it cannot go back")
    # The run's partition, as every producer of runstate picks it (murmur2 of the run id).
    partition_count = len(end_offsets(bootstrap, names.events))
    target = partition_for(record.key, partition_count)
    producer = clients.producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce(
        names.events, key=record.key, value=record.value, headers=headers, partition=target
    )
    if producer.flush(30) != 0:
        raise Error(f"the events topic did not confirm the requeue of {ref}; run it again")
    producer.produce(
        names.dead_letters,
        key=_MARKER + ref.encode(),
        value=json.dumps({"requeued_by": who.name}).encode(),
    )
    if producer.flush(30) != 0:
        raise Error(f"requeued {ref}, but its marker was not confirmed; do not requeue it again")
    typer.echo(f"requeued dead letter {ref} (run {_text_key(record)}) by {who.name}")


def _text_key(record: RawRecord) -> str:
    return "" if record.key is None else record.key.decode("utf-8", "replace")


def _one(bootstrap: str, topic: str, ref: str) -> RawRecord:
    partition, offset = _ref(ref)
    for record in read_topic(bootstrap, topic, start={partition: offset}, partitions=[partition]):
        if record.offset == offset:
            return record
        break
    raise Error(f"no dead letter at {ref} of {topic}; see `runstate dead-letters list`")

"""``runstate approve`` / ``runstate reject``: decide a run's pending approval from a shell.

Both read the run's state first (with every event already written applied) and refuse, with
nothing emitted and exit code 1, when the run is not waiting, the approval was decided,
``--subject-hash`` names a subject other than the pending one, or the acting principal
(:mod:`runstate.cli.principals`) is not the approver, not in the approver group, and not an
admin giving ``--override-reason``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from runstate.agents.approvals import DecisionReceipt
from runstate.agents.approvals import approve as approve_run
from runstate.agents.approvals import reject as reject_run
from runstate.agents.client import HttpRunStateReader
from runstate.cli.principals import By, acting_principal
from runstate.crypto import cipher_from_settings
from runstate.settings import load_settings
from runstate.streams.clients import require_reachable
from runstate.streams.producer import EventProducer

RunId = Annotated[str, typer.Argument(help="the run waiting for a decision")]
Override = Annotated[
    str | None,
    typer.Option(
        "--override-reason",
        help="an admin deciding an approval that is not theirs: why (recorded with it)",
    ),
]
SubjectHash = Annotated[
    str | None,
    typer.Option(
        "--subject-hash",
        help="hash of the subject you reviewed (from `runstate runs show`); refuse if changed",
    ),
]
Url = Annotated[
    str | None,
    typer.Option("--url", help="a processor worker's query API [default: RUNSTATE_QUERY_URL]"),
]


def approve(
    run_id: RunId,
    by: By = None,
    comment: Annotated[str | None, typer.Option("--comment", help="note kept with it")] = None,
    subject_hash: SubjectHash = None,
    override_reason: Override = None,
    url: Url = None,
) -> None:
    """Grant the approval a run waits for; the agent can then continue."""
    _decide(run_id, by, True, comment, subject_hash, override_reason, url)


def reject(
    run_id: RunId,
    reason: Annotated[str, typer.Option("--reason", help="why; the agent sees it")],
    by: By = None,
    subject_hash: SubjectHash = None,
    override_reason: Override = None,
    url: Url = None,
) -> None:
    """Reject the approval a run waits for, with a reason."""
    _decide(run_id, by, False, reason, subject_hash, override_reason, url)


def _decide(
    run_id: str,
    by_name: str | None,
    grant: bool,
    text: str | None,
    expected: str | None,
    override_reason: str | None,
    url: str | None,
) -> None:
    s = load_settings()
    require_reachable(s.bootstrap_servers)  # first: with Kafka down, one line and exit 3
    by = acting_principal(by_name)
    with EventProducer(s, producer_name="runstate-cli", sealer=cipher_from_settings(s)) as producer:
        reader = cli_reader(producer, url)
        receipt: DecisionReceipt
        if grant:
            receipt = approve_run(
                producer,
                reader,
                run_id,
                by=by,
                comment=text,
                expected_subject_hash=expected,
                override_reason=override_reason,
            )
        else:
            receipt = reject_run(
                producer,
                reader,
                run_id,
                by=by,
                reason=text or "",
                expected_subject_hash=expected,
                override_reason=override_reason,
            )
    d = receipt.delivery
    typer.echo(
        f"run {run_id}: {receipt.outcome.value} by {by.name} (subject {receipt.subject_hash}),"
        f" event at {d.topic}[{d.partition}]@{d.offset}; run is now"
        f" {receipt.state.status.value}"
    )


def cli_reader(producer: EventProducer, url: str | None) -> HttpRunStateReader:
    """The query API reader the CLI's commands confirm their events with."""
    s = load_settings()
    return HttpRunStateReader(
        url or s.query_url,
        bootstrap_servers=s.bootstrap_servers,
        events_topic=producer.names.events,
    )

"""``runstate approve`` / ``runstate reject``: decide a run's pending approval from a shell.

Both read the run's state first (with every event already written applied) and refuse, with
nothing emitted and exit code 1, when the run is not waiting, the approval was decided, or
``--subject-hash`` names a subject other than the pending one.
"""

from __future__ import annotations

from typing import Annotated

import typer

from runstate.agents.approvals import DecisionReceipt
from runstate.agents.approvals import approve as approve_run
from runstate.agents.approvals import reject as reject_run
from runstate.agents.client import HttpRunStateReader
from runstate.settings import load_settings
from runstate.streams.clients import require_reachable
from runstate.streams.producer import EventProducer

RunId = Annotated[str, typer.Argument(help="the run waiting for a decision")]
By = Annotated[str, typer.Option("--by", help="who decides (user or group member)")]
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
    by: By,
    comment: Annotated[str | None, typer.Option("--comment", help="note kept with it")] = None,
    subject_hash: SubjectHash = None,
    url: Url = None,
) -> None:
    """Grant the approval a run waits for; the agent can then continue."""
    _decide(run_id, by=by, grant=True, text=comment, expected=subject_hash, url=url)


def reject(
    run_id: RunId,
    by: By,
    reason: Annotated[str, typer.Option("--reason", help="why; the agent sees it")],
    subject_hash: SubjectHash = None,
    url: Url = None,
) -> None:
    """Reject the approval a run waits for, with a reason."""
    _decide(run_id, by=by, grant=False, text=reason, expected=subject_hash, url=url)


def _decide(
    run_id: str, *, by: str, grant: bool, text: str | None, expected: str | None, url: str | None
) -> None:
    s = load_settings()
    require_reachable(s.bootstrap_servers)
    with EventProducer(s, producer_name="runstate-cli") as producer:
        reader = HttpRunStateReader(
            url or s.query_url,
            bootstrap_servers=s.bootstrap_servers,
            events_topic=producer.names.events,
        )
        receipt: DecisionReceipt
        if grant:
            receipt = approve_run(
                producer, reader, run_id, by=by, comment=text, expected_subject_hash=expected
            )
        else:
            receipt = reject_run(
                producer,
                reader,
                run_id,
                by=by,
                reason=text or "",
                expected_subject_hash=expected,
            )
    d = receipt.delivery
    typer.echo(
        f"run {run_id}: {receipt.outcome.value} by {by} (subject {receipt.subject_hash}),"
        f" event at {d.topic}[{d.partition}]@{d.offset}; run is now"
        f" {receipt.state.status.value}"
    )

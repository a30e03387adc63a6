"""What a compliance replay reports: a run's timeline, and where live state disagrees.

The timeline answers the audit questions the design names (who did what when, approvals,
external ids, failures) from the events themselves, including events the reducer rejected
or dropped as duplicates: an auditor needs to see those too.

:func:`compare_states` checks the live processor against the replay, like with like: the
latest-state topic carries each run's :class:`~runstate.runs.summary.RunSummary` (not the
whole state: that record would grow with the run), so against summaries the replayed states
are summarised the same way; against whole states (the query API's ``GET /runs/{id}``) whole
states are compared. Differences it tolerates, because they are expected rather than wrong:

* **Masked personal data.** Archived events had the policy's ``mask`` and ``drop`` rules
  applied, so a state rebuilt from the archive holds ``mask:<key id>:…`` (or null / the
  default) where the live state holds the clear value. A field is accepted when the replayed
  value equals the clear value, is a well-formed mask (the audit has no mask key, so it
  cannot recompute one), or (for ``drop``) anything.
* **Live ahead of the replay.** The replay stops at each partition's end offset as of its
  start; a live state that already applied a later event (``last_offset`` at or after that
  end) is skipped, not reported.

Everything else is a mismatch, including runs missing on either side (a lagging processor
shows up as mismatches: run ``--verify`` when it has caught up).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from runstate.crypto import Opener, reveal_event, shown_value
from runstate.retention.masking import mask_key_id
from runstate.retention.policy import PersonalDataAction, TopicPolicy
from runstate.retention.replay import HistoryRecord
from runstate.runs.reducer import Applied, Duplicate, Outcome
from runstate.runs.run_view import run_to_json, summary_to_json
from runstate.runs.state import RunState
from runstate.runs.summary import RunSummary, SummaryCodec, summarize
from runstate.schemas.events import (
    AgentEvent,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    ExternalActionIntended,
    ExternalActionRecorded,
    ModelCalled,
    RetryScheduled,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
)
from runstate.streams.partitioning import partition_for
from runstate.streams.reader import read_topic

__all__ = [
    "Mismatch",
    "Timeline",
    "TimelineEntry",
    "compare_states",
    "describe_event",
    "read_live_summaries",
]


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One event of a run's history, as an auditor reads it."""

    partition: int
    offset: int
    origin: str
    occurred_at: datetime
    event_type: str
    actor: str
    detail: str
    outcome: str
    status: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "offset": self.offset,
            "origin": self.origin,
            "occurred_at": self.occurred_at.isoformat(),
            "event_type": self.event_type,
            "actor": self.actor,
            "detail": self.detail,
            "outcome": self.outcome,
            "status": self.status,
        }


def describe_event(event: AgentEvent) -> tuple[str, str]:
    """``(who, what)`` of an event in words: the person or system acting, and the facts."""
    e = event
    if isinstance(e, RunStarted):
        return e.owner, f"agent={e.agent} prompt={e.prompt_version} source={e.source}"
    if isinstance(e, StepStarted):
        return e.producer, f"step {e.step}#{e.step_index} attempt {e.attempt}"
    if isinstance(e, StepCompleted):
        return e.producer, f"step {e.step} attempt {e.attempt} output={e.output_ref}"
    if isinstance(e, StepFailed):
        return e.producer, f"step {e.step} attempt {e.attempt} failed: {e.reason} {e.message}"
    if isinstance(e, RetryScheduled):
        return e.producer, f"retry {e.step} attempt {e.attempt} not before {e.not_before:%c}"
    if isinstance(e, ApprovalRequested):
        return e.producer, f"approval of {e.step} asked from {e.approver} due {e.due_at:%c}"
    if isinstance(e, ApprovalGranted | ApprovalRejected):
        verb = "granted" if isinstance(e, ApprovalGranted) else "rejected"
        return e.by, f"{verb} {e.subject_hash}" + (f": {e.comment}" if e.comment else "")
    if isinstance(e, ApprovalExpired):
        return "deadline", f"approval {e.subject_hash} expired (due {e.due_at:%c})"
    if isinstance(e, ExternalActionIntended):
        return e.producer, f"about to call {e.system} key={e.idempotency_key}"
    if isinstance(e, ExternalActionRecorded):
        return e.producer, f"{e.system} returned external id {e.external_id}"
    if isinstance(e, ModelCalled):
        return e.producer, f"model {e.model} request {e.model_request_id}"
    if isinstance(e, RunCompleted):
        return e.producer, f"completed output={e.output_ref}"
    if isinstance(e, RunFailed):
        attention = " (needs attention)" if e.needs_attention else ""
        return e.producer, f"failed: {e.reason} {e.message}{attention}"
    if isinstance(e, RunCancelled):
        return e.by, f"cancelled: {e.reason}"
    return e.producer, ""


class Timeline:
    """Collects timeline entries; pass :meth:`observe` as the replay's ``observe``."""

    def __init__(self, *, opener: Opener | None = None) -> None:
        self.entries: list[TimelineEntry] = []
        #: How sealed personal fields are shown (opened with the master key, or masked).
        self.opener = opener or shown_value(None, allowed=False)

    def observe(self, record: HistoryRecord, event: AgentEvent, outcome: Outcome) -> None:
        actor, detail = describe_event(reveal_event(event, self.opener))
        if isinstance(outcome, Applied):
            verdict, status = "applied", outcome.state.status.value
        elif isinstance(outcome, Duplicate):
            verdict, status = f"duplicate ({outcome.why.value})", outcome.state.status.value
        else:
            verdict, status = f"rejected ({outcome.code.value})", None
        self.entries.append(
            TimelineEntry(
                record.partition,
                record.offset,
                record.origin,
                event.occurred_at,
                event.event_type,
                actor,
                detail,
                verdict,
                status,
            )
        )


# Where each event field ends up in the state (as run_to_json paths; lists as ``[]``); the
# ones a summary leaves out (input, the approval's subject, the collections) never differ.
_STATE_PATHS: Mapping[tuple[str, str], str] = {
    ("RunStarted", "input"): "input",
    ("RunStarted", "owner"): "owner",
    ("RunStarted", "tenant"): "tenant",
    ("RunStarted", "agent"): "agent",
    ("RunStarted", "prompt_version"): "prompt_version",
    ("RunStarted", "source"): "source",
    ("RunClaimed", "claimed_by"): "holder",
    ("ApprovalRequested", "approver"): "approval.approver",
    ("ApprovalRequested", "subject"): "approval.subject",
    ("ApprovalGranted", "by"): "approval.decided_by",
    ("ApprovalGranted", "comment"): "approval.comment",
    ("ApprovalRejected", "by"): "approval.decided_by",
    ("ApprovalRejected", "comment"): "approval.comment",
    ("RunCancelled", "by"): "cancelled_by",
    ("RunCancelled", "reason"): "cancel_reason",
    ("StepFailed", "message"): "last_error_message",
    ("RunFailed", "message"): "last_error_message",
    ("StepCompleted", "output_ref"): "completed_steps[].output_ref",
    ("RunCompleted", "output_ref"): "output_ref",
    ("ExternalActionRecorded", "external_id"): "external_actions[].external_id",
    ("ExternalActionRecorded", "output_ref"): "external_actions[].output_ref",
    ("ModelCalled", "model"): "model_calls[].model",
}


def _tolerances(rules: TopicPolicy | None) -> dict[str, set[PersonalDataAction]]:
    allowed: dict[str, set[PersonalDataAction]] = {}
    if rules is None:
        return allowed
    for event_type, fields in rules.personal_data.items():
        for name, action in fields.items():
            path = _STATE_PATHS.get((event_type, name))
            if path is not None and action is not PersonalDataAction.KEEP:
                allowed.setdefault(path, set()).add(action)
    return allowed


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One disagreement between the replayed and the live state of a run."""

    run_id: str
    kind: Literal["field", "missing_live", "missing_replay"]
    path: str = ""
    replayed: Any = None
    live: Any = None

    def __str__(self) -> str:
        if self.kind == "field":
            return f"{self.run_id}: {self.path}: replayed {self.replayed!r}, live {self.live!r}"
        side = "the live state" if self.kind == "missing_live" else "the replay"
        return f"{self.run_id}: missing from {side}"


def _diff(a: Any, b: Any, path: str) -> Iterable[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            yield from _diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _diff(x, y, f"{path}[{i}]")
    elif a != b:
        yield path, a, b


_UNKEYED_MASK: Final = re.compile(r"sha256:[0-9a-f]{16}")


def _tolerated(actions: set[PersonalDataAction], replayed: Any, live: Any) -> bool:
    if PersonalDataAction.DROP in actions:
        return True
    # Without the archiver's keys a mask cannot be recomputed here; a well-formed mask where
    # the policy masks and the live state holds text is what masking leaves behind (the
    # unkeyed ``sha256:`` form too, in segments archived before masks were keyed).
    if not isinstance(live, str) or not isinstance(replayed, str):
        return False
    return mask_key_id(replayed) is not None or _UNKEYED_MASK.fullmatch(replayed) is not None


def compare_states(
    replayed: Mapping[str, RunState],
    live: Mapping[str, RunSummary] | Mapping[str, RunState],
    *,
    rules: TopicPolicy | None = None,
    ends: Mapping[int, int] | None = None,
    partitions: int = 1,
) -> list[Mismatch]:
    """Every difference between replayed and live states that is not expected.

    Args:
        replayed: States from :func:`~runstate.retention.replay.replay_all`.
        live: Summaries from the latest-state topic (:func:`read_live_summaries`): each
            replayed state is then summarised (:func:`~runstate.runs.summary.summarize`)
            before the comparison; or whole states (from the query API).
        rules: The events topic's policy, whose personal-data rules make masked or dropped
            values acceptable.
        ends: Per partition, the offset the replay stopped at; live states past it are
            skipped (the processor saw newer events). None compares everything.
        partitions: Partition count of the events topic, to place a run in ``ends``.
    """
    allowed = _tolerances(rules)
    mismatches: list[Mismatch] = []
    for run_id in sorted(set(replayed) | set(live)):
        mine, theirs = replayed.get(run_id), live.get(run_id)
        if ends is not None and theirs is not None and theirs.last_offset is not None:
            end = ends.get(partition_for(run_id.encode(), partitions))
            if end is None or theirs.last_offset >= end:
                continue
        if theirs is None:
            mismatches.append(Mismatch(run_id, "missing_live"))
            continue
        if mine is None:
            mismatches.append(Mismatch(run_id, "missing_replay"))
            continue
        if isinstance(theirs, RunSummary):
            pair = summary_to_json(summarize(mine)), summary_to_json(theirs)
        else:
            pair = run_to_json(mine), run_to_json(theirs)
        for path, a, b in _diff(*pair, ""):
            actions = allowed.get(re.sub(r"\[\d+\]", "[]", path))
            if actions and _tolerated(actions, a, b):
                continue
            mismatches.append(Mismatch(run_id, "field", path, a, b))
    return mismatches


def read_live_summaries(
    bootstrap_servers: str, topic: str, *, codec: SummaryCodec | None = None
) -> dict[str, RunSummary]:
    """The newest summary of every run on the latest-state topic (highest version wins);
    a whole ``RunState`` record an older worker wrote reads as its summary.

    Raises:
        DecodeError: a record cannot be decoded.
    """
    codec = codec or SummaryCodec()
    states: dict[str, RunSummary] = {}
    for record in read_topic(bootstrap_servers, topic):
        if record.key is None:
            continue
        run_id = record.key.decode("utf-8", errors="backslashreplace")
        if record.value is None:
            states.pop(run_id, None)
            continue
        state = codec.decode_summary(
            record.value, topic=topic, partition=record.partition, offset=record.offset
        )
        # At-least-once processing can re-send a state after a newer one; versions only grow.
        have = states.get(run_id)
        if have is None or state.version >= have.version:
            states[run_id] = state
    return states

"""A run's summary: the bounded record the latest-state topic carries.

The latest-state topic (``<prefix>.run-state``, compacted, keyed by run id) used to carry the
whole :class:`~runstate.runs.state.RunState`, encoded once per touched run per batch. That
grew with the run twice over: the encode was 73% of a run's 1,000th event (12.5x its 10th),
and a run with thousands of model calls outgrows Kafka's ``message.max.bytes`` (1 MB by
default), so its transaction would fail on every retry and stop the partition.

A :class:`RunSummary` is where the run *is*: status, step and phase, the latest approval,
errors, times, versions, and *counts* of its completed steps, external actions and model
calls instead of the items. Free text that the run's events supply (the failure message, the
cancellation reason) is cut to :data:`SUMMARY_TEXT_LIMIT` characters, and the large texts
(the run's input, the approval's subject, comment and override reason) are left out, as is
whether the approval enforces its decider (a rule of the request; the full state has it).
So the record's size and encode cost do not depend on the run's length, and stay far below
any sane message limit (every field is either fixed-size, an identifier the events already
cap at 1,024 characters, cut here, or ``output_ref``, which came in one event within the
event limit).

The whole run stays available where it always was: the query API (``GET /runs/{id}``), the
changelog, and a replay of the events. Readers of the latest-state topic decode it with
:class:`SummaryCodec`, which also reads a whole ``RunState`` record written by an older
worker (summarising it), so a topic written before the change still reads.

Schema: ``avsc/state/RunSummary.vN.avsc``; the summary's own layout version is
:data:`SUMMARY_SCHEMA_VERSION`, independent of the state's.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from runstate.errors import CompatibilityError, DecodeError
from runstate.runs.state import (
    TERMINAL_STATUSES,
    Approval,
    ApprovalOutcome,
    RunState,
    RunStatus,
    StepPhase,
)
from runstate.runs.state_codec import STATE_RECORD, StateCodec
from runstate.schemas.codec import MARKER, SingleObjectCodec, default_codec, encode
from runstate.schemas.events import ApproverKind, FailureReason

__all__ = [
    "SUMMARY_RECORD",
    "SUMMARY_SCHEMA_VERSION",
    "SUMMARY_TEXT_LIMIT",
    "ApprovalSummary",
    "RunSummary",
    "SummaryCodec",
    "decode_summary",
    "encode_summary",
    "summarize",
]

SUMMARY_RECORD: Final = "runstate.state.RunSummary"
#: Version of the summary record layout (``RunSummary.vN.avsc``).
SUMMARY_SCHEMA_VERSION: Final = 1
#: Free text in a summary is cut to this many characters (what events allow for names).
SUMMARY_TEXT_LIMIT: Final = 1024
_CUT_MARK: Final = "…"
_HEADER: Final = 10  # single-object marker (2) + fingerprint (8)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalSummary:
    """The latest approval without its subject and comment (in ``GET /runs/{id}``)."""

    step: str
    approver: str
    approver_kind: ApproverKind
    subject_hash: str
    requested_at: datetime
    due_at: datetime
    outcome: ApprovalOutcome
    decided_by: str | None = None
    decided_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSummary:
    """Where a run is, in a record whose size does not grow with the run (module docstring).

    ``version`` and ``last_offset`` are the run's, so a reader keeps the newest summary per
    run and a replay can tell a live summary that is ahead of it.
    """

    run_id: str
    version: int
    status: RunStatus
    agent: str
    owner: str
    prompt_version: str
    source: str
    created_at: datetime
    updated_at: datetime
    tenant: str | None = None
    current_step: str | None = None
    step_index: int | None = None
    step_attempt: int = 0
    step_phase: StepPhase | None = None
    completed_step_count: int = 0
    external_action_count: int = 0
    model_call_count: int = 0
    retry_count: int = 0
    retry_not_before: datetime | None = None
    last_error_reason: FailureReason | None = None
    last_error_message: str | None = None
    last_attempt_at: datetime | None = None
    approval: ApprovalSummary | None = None
    needs_attention: bool = False
    output_ref: str | None = None
    cancelled_by: str | None = None
    cancel_reason: str | None = None
    epoch: int | None = None
    holder: str | None = None
    lease_ms: int | None = None
    lease_until: datetime | None = None
    last_offset: int | None = None
    schema_version: int = SUMMARY_SCHEMA_VERSION

    @property
    def is_terminal(self) -> bool:
        """True once the run completed, failed or was cancelled."""
        return self.status in TERMINAL_STATUSES


def _cut(text: str | None) -> str | None:
    if text is None or len(text) <= SUMMARY_TEXT_LIMIT:
        return text
    return text[: SUMMARY_TEXT_LIMIT - len(_CUT_MARK)] + _CUT_MARK


def _approval(a: Approval | None) -> ApprovalSummary | None:
    if a is None:
        return None
    return ApprovalSummary(
        step=a.step,
        approver=a.approver,
        approver_kind=a.approver_kind,
        subject_hash=a.subject_hash,
        requested_at=a.requested_at,
        due_at=a.due_at,
        outcome=a.outcome,
        decided_by=a.decided_by,
        decided_at=a.decided_at,
    )


def summarize(state: RunState) -> RunSummary:
    """The summary of ``state``; costs the same for a run's 10th event as for its 10,000th
    (the collections are only counted)."""
    return RunSummary(
        run_id=state.run_id,
        version=state.version,
        status=state.status,
        agent=state.agent,
        owner=state.owner,
        prompt_version=state.prompt_version,
        source=state.source,
        created_at=state.created_at,
        updated_at=state.updated_at,
        tenant=state.tenant,
        current_step=state.current_step,
        step_index=state.step_index,
        step_attempt=state.step_attempt,
        step_phase=state.step_phase,
        completed_step_count=len(state.completed_steps),
        external_action_count=len(state.external_actions),
        model_call_count=len(state.model_calls),
        retry_count=state.retry_count,
        retry_not_before=state.retry_not_before,
        last_error_reason=state.last_error_reason,
        last_error_message=_cut(state.last_error_message),
        last_attempt_at=state.last_attempt_at,
        approval=_approval(state.approval),
        needs_attention=state.needs_attention,
        output_ref=state.output_ref,
        cancelled_by=state.cancelled_by,
        cancel_reason=_cut(state.cancel_reason),
        epoch=state.epoch,
        holder=state.holder,
        lease_ms=state.lease_ms,
        lease_until=state.lease_until,
        last_offset=state.last_offset,
    )


def summary_to_record(s: RunSummary) -> dict[str, Any]:
    """The Avro record of a summary (enums as strings, datetimes as they are)."""
    a = s.approval
    return {
        "run_id": s.run_id,
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "version": s.version,
        "status": s.status.value,
        "agent": s.agent,
        "owner": s.owner,
        "prompt_version": s.prompt_version,
        "source": s.source,
        "tenant": s.tenant,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "current_step": s.current_step,
        "step_index": s.step_index,
        "step_attempt": s.step_attempt,
        "step_phase": None if s.step_phase is None else s.step_phase.value,
        "completed_step_count": s.completed_step_count,
        "external_action_count": s.external_action_count,
        "model_call_count": s.model_call_count,
        "retry_count": s.retry_count,
        "retry_not_before": s.retry_not_before,
        "last_error_reason": None if s.last_error_reason is None else s.last_error_reason.value,
        "last_error_message": s.last_error_message,
        "last_attempt_at": s.last_attempt_at,
        "approval": None
        if a is None
        else {
            "step": a.step,
            "approver": a.approver,
            "approver_kind": a.approver_kind.value,
            "subject_hash": a.subject_hash,
            "requested_at": a.requested_at,
            "due_at": a.due_at,
            "outcome": a.outcome.value,
            "decided_by": a.decided_by,
            "decided_at": a.decided_at,
        },
        "needs_attention": s.needs_attention,
        "output_ref": s.output_ref,
        "cancelled_by": s.cancelled_by,
        "cancel_reason": s.cancel_reason,
        "epoch": s.epoch,
        "holder": s.holder,
        "lease_ms": s.lease_ms,
        "lease_until": s.lease_until,
        "last_offset": s.last_offset,
    }


def record_to_summary(r: Mapping[str, Any]) -> RunSummary:
    """The summary in an Avro record already read into the newest layout.

    Raises:
        DecodeError: a value breaks the summary's rules (unknown status, say).
    """
    try:
        values = dict(r)
        values["schema_version"] = SUMMARY_SCHEMA_VERSION
        values["status"] = RunStatus(r["status"])
        values["step_phase"] = None if r["step_phase"] is None else StepPhase(r["step_phase"])
        reason = r["last_error_reason"]
        values["last_error_reason"] = None if reason is None else FailureReason(reason)
        a = r["approval"]
        values["approval"] = (
            None
            if a is None
            else ApprovalSummary(
                **{
                    **a,
                    "approver_kind": ApproverKind(a["approver_kind"]),
                    "outcome": ApprovalOutcome(a["outcome"]),
                }
            )
        )
        return RunSummary(**values)
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"RunSummary record breaks its rules: {exc}") from exc


class SummaryCodec:
    """Summaries to bytes and back; reads a whole ``RunState`` record too (older workers).

    Build one per worker or reader (it caches schema resolution plans).

    Raises:
        CompatibilityError: (at construction) the catalog's newest ``RunSummary`` is not the
            layout this code builds; ship summary.py and the .avsc together.
    """

    def __init__(self, codec: SingleObjectCodec | None = None) -> None:
        self._codec = codec or default_codec()
        self._schema = self._codec.catalog.latest(SUMMARY_RECORD)
        if self._schema.version != SUMMARY_SCHEMA_VERSION:
            raise CompatibilityError(
                f"the catalog's newest {SUMMARY_RECORD} is v{self._schema.version} but this"
                f" code builds v{SUMMARY_SCHEMA_VERSION}; ship summary.py and the .avsc together"
            )
        self._states = StateCodec(self._codec)

    def encode_summary(self, summary: RunSummary) -> bytes:
        """The summary's record bytes (single-object encoded, newest layout)."""
        return encode(summary_to_record(summary), self._schema)

    def encode_state_summary(self, state: RunState) -> bytes:
        """The bytes of ``summarize(state)``: what the runtime produces per touched run."""
        return encode(summary_to_record(summarize(state)), self._schema)

    def decode_summary(
        self,
        data: bytes,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> RunSummary:
        """The summary in ``data``: a ``RunSummary`` record of any known layout, or a whole
        ``RunState`` record (what workers before the summary wrote), summarised.

        Raises:
            DecodeError: neither a readable summary nor a readable state record.
            UnknownSchema: the writer layout is unknown here.
        """
        if len(data) >= _HEADER and data[:2] == MARKER:
            writer, _local = self._codec.writer_schema(
                bytes(data[2:_HEADER]), topic=topic, partition=partition, offset=offset
            )
            if writer.name == STATE_RECORD:
                state = self._states.decode_state(
                    data, topic=topic, partition=partition, offset=offset
                )
                return summarize(state)
        decoded = self._codec.decode(
            data, reader_name=SUMMARY_RECORD, topic=topic, partition=partition, offset=offset
        )
        return record_to_summary(decoded.record)


@functools.cache
def _shared() -> SummaryCodec:
    return SummaryCodec()


def encode_summary(summary: RunSummary) -> bytes:
    """Encode with the shared :class:`SummaryCodec`."""
    return _shared().encode_summary(summary)


def decode_summary(data: bytes) -> RunSummary:
    """Decode with the shared :class:`SummaryCodec`; see :meth:`SummaryCodec.decode_summary`."""
    return _shared().decode_summary(data)

"""Agent events: the Python face of the Avro contracts in ``schemas/events/*.avsc``.

Each class here has a record of the same name in the contract files (namespace
``runstate.events``); tests keep the two in agreement. The envelope fields
(``event_id``, ``run_id``, ``occurred_at``, ``producer``) live in every event so that a
reader that knows nothing of a payload can still route, deduplicate and order it; ``epoch``
(added later, so optional) says under which run lease the writer wrote it (:class:`RunClaimed`).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "EVENT_TYPES",
    "AgentEvent",
    "ApprovalExpired",
    "ApprovalGranted",
    "ApprovalRejected",
    "ApprovalRequested",
    "ApproverKind",
    "ExternalActionIntended",
    "ExternalActionRecorded",
    "ExternalActionResolved",
    "FailureReason",
    "ModelCalled",
    "RetryScheduled",
    "RunCancelled",
    "RunClaimed",
    "RunCompleted",
    "RunFailed",
    "RunStarted",
    "StepCompleted",
    "StepFailed",
    "StepRetryRequested",
    "StepStarted",
    "event_type_of",
]


def _as_utc(value: datetime) -> datetime:
    """Naive datetimes are refused upstream; aware ones are normalised to UTC millis."""
    value = value.astimezone(UTC)
    return value.replace(microsecond=(value.microsecond // 1000) * 1000)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (use datetime.now(UTC))")
    return _as_utc(value)


UtcMillis = Annotated[datetime, AfterValidator(_aware)]
NonEmpty = Annotated[str, Field(min_length=1, max_length=1024)]


class FailureReason(enum.StrEnum):
    """Why a step failed: the article's list, so retries can be decided by reason."""

    TIMEOUT = "timeout"
    EMPTY_RESPONSE = "empty_response"
    REJECTED_BY_SERVICE = "rejected_by_service"
    INVALID_FORMAT = "invalid_format"
    OTHER = "other"


class ApproverKind(enum.StrEnum):
    USER = "user"
    GROUP = "group"


class AgentEvent(BaseModel):
    """Fields every agent event carries (the envelope)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Avro record name of the event type; set on each subclass.
    event_type: ClassVar[str] = ""

    event_id: NonEmpty
    run_id: NonEmpty
    occurred_at: UtcMillis
    producer: NonEmpty
    #: The run lease's epoch the writer held (:class:`RunClaimed`); None from writers that
    #: hold no lease (people deciding approvals, the expiry timer, SDKs older than leases).
    epoch: int | None = Field(default=None, ge=1)


class RunStarted(AgentEvent):
    event_type: ClassVar[str] = "RunStarted"

    agent: NonEmpty
    input: str = Field(description="the run's input exactly as received (usually JSON text)")
    prompt_version: NonEmpty
    owner: NonEmpty
    source: NonEmpty
    #: Added in v2; v1 readers drop it, v1 records read as None.
    tenant: str | None = None


class RunClaimed(AgentEvent):
    """A process claims the run: only its events (of this ``epoch``) drive the run from now on.

    The claim's ``epoch`` (required here) must be one more than the run's current one; a claim
    fences the previous holder whether or not its lease ran out (see
    :mod:`runstate.runs.reducer`).
    """

    event_type: ClassVar[str] = "RunClaimed"

    claimed_by: NonEmpty
    lease_ms: int = Field(gt=0, description="how long the lease lasts without an event of it")

    @model_validator(mode="after")
    def _claims_an_epoch(self) -> RunClaimed:
        # Optional in the envelope (one type for every event), required in a claim.
        if self.epoch is None:
            raise ValueError("a RunClaimed needs the epoch it claims (the run's current + 1)")
        return self

    @property
    def claimed_epoch(self) -> int:
        """The epoch this claim starts (never None, see the validator)."""
        assert self.epoch is not None
        return self.epoch


class StepStarted(AgentEvent):
    event_type: ClassVar[str] = "StepStarted"

    step: NonEmpty
    step_index: int = Field(ge=0)
    attempt: int = Field(ge=1)
    input_ref: str | None = None


class StepCompleted(AgentEvent):
    event_type: ClassVar[str] = "StepCompleted"

    step: NonEmpty
    attempt: int = Field(ge=1)
    output_ref: str | None = None


class StepFailed(AgentEvent):
    event_type: ClassVar[str] = "StepFailed"

    step: NonEmpty
    attempt: int = Field(ge=1)
    reason: FailureReason
    message: str = ""


class RetryScheduled(AgentEvent):
    event_type: ClassVar[str] = "RetryScheduled"

    step: NonEmpty
    attempt: int = Field(ge=2, description="the attempt that will run next")
    not_before: UtcMillis


class ApprovalRequested(AgentEvent):
    event_type: ClassVar[str] = "ApprovalRequested"

    step: NonEmpty
    approver: NonEmpty
    approver_kind: ApproverKind = ApproverKind.USER
    due_at: UtcMillis
    subject_hash: NonEmpty
    subject: str = ""
    #: Added in v3: only the approver, a member of the approver group or an admin with a
    #: reason may decide (checked by the reducer too); False in older records.
    enforce_decider: bool = False


class _Decision(AgentEvent):
    """A person's decision; v3 added who they are as their authenticator asserted it."""

    by: NonEmpty
    subject_hash: NonEmpty
    comment: str | None = None
    #: The decider's approver groups and roles, as asserted by what authenticated them.
    by_groups: tuple[str, ...] = ()
    by_roles: tuple[str, ...] = ()
    #: An admin deciding an approval that is not theirs says why (recorded with it).
    override_reason: str | None = None


class ApprovalGranted(_Decision):
    event_type: ClassVar[str] = "ApprovalGranted"


class ApprovalRejected(_Decision):
    event_type: ClassVar[str] = "ApprovalRejected"


class ApprovalExpired(AgentEvent):
    event_type: ClassVar[str] = "ApprovalExpired"

    subject_hash: NonEmpty
    due_at: UtcMillis


class ExternalActionIntended(AgentEvent):
    event_type: ClassVar[str] = "ExternalActionIntended"

    step: NonEmpty
    idempotency_key: NonEmpty
    system: NonEmpty


class ExternalActionRecorded(AgentEvent):
    event_type: ClassVar[str] = "ExternalActionRecorded"

    step: NonEmpty
    idempotency_key: NonEmpty
    system: NonEmpty
    external_id: NonEmpty
    output_ref: str | None = None


class ModelCalled(AgentEvent):
    event_type: ClassVar[str] = "ModelCalled"

    model_request_id: NonEmpty
    model: NonEmpty
    step: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class RunCompleted(AgentEvent):
    event_type: ClassVar[str] = "RunCompleted"

    output_ref: str | None = None


class RunFailed(AgentEvent):
    event_type: ClassVar[str] = "RunFailed"

    step: str | None = None
    reason: FailureReason
    message: str = ""
    #: True when a person must look (e.g. an external action whose outcome is unknown).
    needs_attention: bool = False


class RunCancelled(AgentEvent):
    event_type: ClassVar[str] = "RunCancelled"

    by: NonEmpty
    reason: str | None = None


class StepRetryRequested(AgentEvent):
    """An operator asks for one more attempt of the run's failed or given-up current step."""

    event_type: ClassVar[str] = "StepRetryRequested"

    by: NonEmpty
    step: NonEmpty
    reason: str | None = None


class ExternalActionResolved(AgentEvent):
    """An operator settles an action whose outcome was unknown (intended, never recorded)."""

    event_type: ClassVar[str] = "ExternalActionResolved"

    by: NonEmpty
    idempotency_key: NonEmpty
    found: bool
    external_id: str | None = None
    reason: str | None = None

    @model_validator(mode="after")
    def _found_names_its_id(self) -> ExternalActionResolved:
        if self.found and not self.external_id:
            raise ValueError("a found action needs the external system's id (external_id)")
        if not self.found and self.external_id:
            raise ValueError("an action not found has no external_id")
        return self


EVENT_TYPES: dict[str, type[AgentEvent]] = {
    cls.event_type: cls
    for cls in (
        RunStarted,
        RunClaimed,
        StepStarted,
        StepCompleted,
        StepFailed,
        RetryScheduled,
        ApprovalRequested,
        ApprovalGranted,
        ApprovalRejected,
        ApprovalExpired,
        ExternalActionIntended,
        ExternalActionRecorded,
        ModelCalled,
        RunCompleted,
        RunFailed,
        RunCancelled,
        StepRetryRequested,
        ExternalActionResolved,
    )
}


def event_type_of(name: str) -> type[AgentEvent]:
    """The event class for an Avro record name (short or ``runstate.events.``-qualified).

    Raises:
        KeyError: the name is not an event type this code knows.
    """
    return EVENT_TYPES[name.rsplit(".", 1)[-1]]

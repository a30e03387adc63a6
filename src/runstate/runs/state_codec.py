"""Run state and change records to bytes and back (Avro single-object encoding).

The processor writes a state record per applied event, so the conversion is plain field
copying: no reflection, no validation beyond what fastavro's writer does. The record layout
is ``avsc/state/RunState.vN.avsc`` (namespace ``runstate.state``) in the shared catalog, and
the bytes carry the writer schema's fingerprint like every other runstate record.

An old record read by new code is upgraded on read, in two stages:

1. Avro schema resolution (in :class:`~runstate.schemas.codec.SingleObjectCodec`) reads it
   into the newest layout: fields the writer lacked get their defaults.
2. :func:`upgrade` then runs the steps in :data:`UPGRADES` from the record's
   ``schema_version`` up to :data:`~runstate.runs.state.STATE_SCHEMA_VERSION`, for
   what a default cannot express (a field derived from others, a renamed meaning).

A record from a newer writer is read into this code's layout (fields it does not know are
dropped) and is not upgraded; the processor should not run older than its state records.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from runstate.errors import CompatibilityError, DecodeError
from runstate.runs.state import (
    STATE_SCHEMA_VERSION,
    ActionState,
    Approval,
    ApprovalOutcome,
    CompletedStep,
    ExternalAction,
    ModelCall,
    RunState,
    RunStateChanged,
    RunStatus,
    StepPhase,
)
from runstate.schemas.codec import SingleObjectCodec, default_codec, encode
from runstate.schemas.events import ApproverKind, FailureReason

__all__ = [
    "CHANGE_RECORD",
    "STATE_RECORD",
    "UPGRADES",
    "StateCodec",
    "Upgrade",
    "change_to_record",
    "decode_change",
    "decode_state",
    "encode_change",
    "encode_state",
    "record_to_change",
    "record_to_state",
    "state_to_record",
    "upgrade",
]

STATE_RECORD = "runstate.state.RunState"
CHANGE_RECORD = "runstate.state.RunStateChanged"

#: Turns a record of layout N (already resolved into the newest Avro schema) into N + 1.
Upgrade = Callable[[dict[str, Any]], dict[str, Any]]

#: ``from_version -> step``; empty while every new field can take its Avro default (v2's
#: lease fields read as None from v1: a run never claimed). Add ``{2: _v2_to_v3}`` with
#: ``RunState.v3.avsc`` when a new field cannot simply take its Avro default.
UPGRADES: Mapping[int, Upgrade] = {}


def upgrade(
    record: dict[str, Any], from_version: int, *, steps: Mapping[int, Upgrade] = UPGRADES
) -> dict[str, Any]:
    """Bring a state record from ``from_version`` to :data:`STATE_SCHEMA_VERSION`.

    Versions without a step need none (the Avro defaults were enough).
    """
    for version in range(from_version, STATE_SCHEMA_VERSION):
        step = steps.get(version)
        if step is not None:
            record = step(record)
    record["schema_version"] = STATE_SCHEMA_VERSION
    return record


def _pack_digests(digests: tuple[int, ...]) -> bytes:
    return struct.pack(f"<{len(digests)}Q", *digests)


def _unpack_digests(data: bytes) -> tuple[int, ...]:
    if len(data) % 8:
        raise ValueError(f"recent_event_digests has {len(data)} bytes, not a multiple of 8")
    return struct.unpack(f"<{len(data) // 8}Q", data)


def state_to_record(s: RunState) -> dict[str, Any]:
    """The Avro record of a state (enums as strings, datetimes as they are)."""
    a = s.approval
    return {
        "run_id": s.run_id,
        "schema_version": STATE_SCHEMA_VERSION,
        "version": s.version,
        "status": s.status.value,
        "agent": s.agent,
        "owner": s.owner,
        "input": s.input,
        "prompt_version": s.prompt_version,
        "source": s.source,
        "tenant": s.tenant,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "current_step": s.current_step,
        "step_index": s.step_index,
        "step_attempt": s.step_attempt,
        "step_phase": None if s.step_phase is None else s.step_phase.value,
        "completed_steps": [
            {
                "step": c.step,
                "step_index": c.step_index,
                "attempt": c.attempt,
                "completed_at": c.completed_at,
                "output_ref": c.output_ref,
            }
            for c in s.completed_steps
        ],
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
            "subject": a.subject,
            "requested_at": a.requested_at,
            "due_at": a.due_at,
            "outcome": a.outcome.value,
            "decided_by": a.decided_by,
            "decided_at": a.decided_at,
            "comment": a.comment,
            "enforce_decider": a.enforce_decider,
            "override_reason": a.override_reason,
        },
        "external_actions": [
            {
                "idempotency_key": x.idempotency_key,
                "system": x.system,
                "step": x.step,
                "state": x.state.value,
                "intended_at": x.intended_at,
                "external_id": x.external_id,
                "output_ref": x.output_ref,
                "recorded_at": x.recorded_at,
            }
            for x in s.external_actions
        ],
        "model_calls": [
            {"request_id": m.request_id, "model": m.model, "step": m.step} for m in s.model_calls
        ],
        "needs_attention": s.needs_attention,
        "output_ref": s.output_ref,
        "cancelled_by": s.cancelled_by,
        "cancel_reason": s.cancel_reason,
        "epoch": s.epoch,
        "holder": s.holder,
        "lease_ms": s.lease_ms,
        "lease_until": s.lease_until,
        "last_offset": s.last_offset,
        "recent_event_digests": _pack_digests(s.recent_event_digests),
    }


_E = TypeVar("_E", RunStatus, StepPhase, FailureReason, ApprovalOutcome)


def _opt_enum(kind: type[_E], value: str | None) -> _E | None:
    return None if value is None else kind(value)


def record_to_state(r: Mapping[str, Any]) -> RunState:
    """The state in an Avro record already read into the newest layout and upgraded.

    Raises:
        DecodeError: a value breaks the state's rules (unknown status, bad digests).
    """
    try:
        a = r["approval"]
        return RunState(
            run_id=r["run_id"],
            schema_version=r["schema_version"],
            version=r["version"],
            status=RunStatus(r["status"]),
            agent=r["agent"],
            owner=r["owner"],
            input=r["input"],
            prompt_version=r["prompt_version"],
            source=r["source"],
            tenant=r["tenant"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            current_step=r["current_step"],
            step_index=r["step_index"],
            step_attempt=r["step_attempt"],
            step_phase=_opt_enum(StepPhase, r["step_phase"]),
            completed_steps=tuple(CompletedStep(**c) for c in r["completed_steps"]),
            retry_count=r["retry_count"],
            retry_not_before=r["retry_not_before"],
            last_error_reason=_opt_enum(FailureReason, r["last_error_reason"]),
            last_error_message=r["last_error_message"],
            last_attempt_at=r["last_attempt_at"],
            approval=None
            if a is None
            else Approval(
                step=a["step"],
                approver=a["approver"],
                approver_kind=ApproverKind(a["approver_kind"]),
                subject_hash=a["subject_hash"],
                subject=a["subject"],
                requested_at=a["requested_at"],
                due_at=a["due_at"],
                outcome=ApprovalOutcome(a["outcome"]),
                decided_by=a["decided_by"],
                decided_at=a["decided_at"],
                comment=a["comment"],
                enforce_decider=a["enforce_decider"],
                override_reason=a["override_reason"],
            ),
            external_actions=tuple(
                ExternalAction(**{**x, "state": ActionState(x["state"])})
                for x in r["external_actions"]
            ),
            model_calls=tuple(ModelCall(**m) for m in r["model_calls"]),
            needs_attention=r["needs_attention"],
            output_ref=r["output_ref"],
            cancelled_by=r["cancelled_by"],
            cancel_reason=r["cancel_reason"],
            epoch=r["epoch"],
            holder=r["holder"],
            lease_ms=r["lease_ms"],
            lease_until=r["lease_until"],
            last_offset=r["last_offset"],
            recent_event_digests=_unpack_digests(r["recent_event_digests"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(
            f"state record of run {r.get('run_id')!r} breaks the state's rules:"
            f" {type(exc).__name__}: {exc}; rebuild it by replaying the run's events"
        ) from exc


def change_to_record(c: RunStateChanged) -> dict[str, Any]:
    """The Avro record of a change."""
    return {
        "run_id": c.run_id,
        "schema_version": STATE_SCHEMA_VERSION,
        "version": c.version,
        "event_id": c.event_id,
        "event_type": c.event_type,
        "occurred_at": c.occurred_at,
        "from_status": None if c.from_status is None else c.from_status.value,
        "to_status": c.to_status.value,
        "step": c.step,
        "reason": c.reason,
        "approval_outcome": None if c.approval_outcome is None else c.approval_outcome.value,
        "approver": c.approver,
        "approval_due_at": c.approval_due_at,
        "decided_by": c.decided_by,
        "needs_attention": c.needs_attention,
        "epoch": c.epoch,
        "holder": c.holder,
    }


def record_to_change(r: Mapping[str, Any]) -> RunStateChanged:
    """The change in an Avro record read into the newest layout.

    Raises:
        DecodeError: a value breaks the change's rules (unknown status).
    """
    try:
        values = dict(r)
        values["schema_version"] = STATE_SCHEMA_VERSION
        values["from_status"] = _opt_enum(RunStatus, r["from_status"])
        values["to_status"] = RunStatus(r["to_status"])
        values["approval_outcome"] = _opt_enum(ApprovalOutcome, r["approval_outcome"])
        return RunStateChanged(**values)
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"RunStateChanged record breaks its rules: {exc}") from exc


class StateCodec:
    """Encodes states and changes with the newest layout; decodes any known one, upgraded.

    Build one per processor (it caches schema resolution plans); the module functions use
    a shared one over the shipped catalog.
    """

    def __init__(
        self, codec: SingleObjectCodec | None = None, *, upgrades: Mapping[int, Upgrade] = UPGRADES
    ) -> None:
        """Use ``codec`` (e.g. one with the schemas topic as writer source) and ``upgrades``.

        Raises:
            CompatibilityError: the catalog's newest RunState layout is not the one this code
                builds (:data:`STATE_SCHEMA_VERSION`); code and contract files disagree.
        """
        self._codec = codec or default_codec()
        catalog = self._codec.catalog
        self._state_schema = catalog.latest(STATE_RECORD)
        self._change_schema = catalog.latest(CHANGE_RECORD)
        if self._state_schema.version != STATE_SCHEMA_VERSION:
            raise CompatibilityError(
                f"the catalog's newest {STATE_RECORD} is v{self._state_schema.version} but this"
                f" code builds v{STATE_SCHEMA_VERSION}; ship state.py and the .avsc together"
            )
        self._upgrades = upgrades

    def encode_state(self, state: RunState) -> bytes:
        """The state's record bytes (single-object encoded, newest layout)."""
        return encode(state_to_record(state), self._state_schema)

    def decode_state(
        self,
        data: bytes,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> RunState:
        """The state in ``data``, whichever known layout wrote it, upgraded to the newest.

        Raises:
            DecodeError: the bytes are not a readable state record.
            UnknownSchema: the writer layout is unknown here.
        """
        decoded = self._codec.decode(
            data, reader_name=STATE_RECORD, topic=topic, partition=partition, offset=offset
        )
        record = decoded.record
        return record_to_state(upgrade(record, record["schema_version"], steps=self._upgrades))

    def encode_change(self, change: RunStateChanged) -> bytes:
        """The change's record bytes (single-object encoded, newest layout)."""
        return encode(change_to_record(change), self._change_schema)

    def decode_change(self, data: bytes) -> RunStateChanged:
        """The change in ``data``.

        Raises:
            DecodeError: the bytes are not a readable change record.
            UnknownSchema: the writer layout is unknown here.
        """
        decoded = self._codec.decode(data, reader_name=CHANGE_RECORD)
        return record_to_change(decoded.record)


@functools.cache
def _codec() -> StateCodec:
    return StateCodec()


def encode_state(state: RunState) -> bytes:
    """Encode with the shared :class:`StateCodec`."""
    return _codec().encode_state(state)


def decode_state(data: bytes) -> RunState:
    """Decode with the shared :class:`StateCodec`; see :meth:`StateCodec.decode_state`."""
    return _codec().decode_state(data)


def encode_change(change: RunStateChanged) -> bytes:
    """Encode with the shared :class:`StateCodec`."""
    return _codec().encode_change(change)


def decode_change(data: bytes) -> RunStateChanged:
    """Decode with the shared :class:`StateCodec`; see :meth:`StateCodec.decode_change`."""
    return _codec().decode_change(data)

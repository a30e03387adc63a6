"""State and change records to bytes and back; old layouts upgraded on read."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runstate.errors import CompatibilityError, DecodeError
from runstate.runs import state_codec
from runstate.runs.reducer import Applied, apply
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
from runstate.runs.state_codec import (
    CHANGE_RECORD,
    STATE_RECORD,
    StateCodec,
    decode_change,
    decode_state,
    encode_change,
    encode_state,
    state_to_record,
)
from runstate.schemas.catalog import SchemaCatalog, default_catalog, load_schema_text
from runstate.schemas.codec import SingleObjectCodec, encode
from runstate.schemas.events import AgentEvent, ApproverKind, FailureReason
from tests.factories import RunBuilder, make_run, plausible_runs
from tests.runs.conftest import RunStateFactory

# --- strategies for arbitrary (not necessarily reachable) states -----------------------

_INT32 = st.integers(0, 2**31 - 1)
_LONG = st.integers(0, 2**63 - 1)
_TEXT = st.text(max_size=30)
_NAME = st.text(min_size=1, max_size=20)
_TIME = st.integers(0, 2**42).map(
    lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
)


def _opt(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | s


_approvals = st.builds(
    Approval,
    step=_NAME,
    approver=_NAME,
    approver_kind=st.sampled_from(ApproverKind),
    subject_hash=_NAME,
    subject=_TEXT,
    requested_at=_TIME,
    due_at=_TIME,
    outcome=st.sampled_from(ApprovalOutcome),
    decided_by=_opt(_NAME),
    decided_at=_opt(_TIME),
    comment=_opt(_TEXT),
)
_actions = st.builds(
    ExternalAction,
    idempotency_key=_NAME,
    system=_NAME,
    step=_NAME,
    state=st.sampled_from(ActionState),
    intended_at=_TIME,
    external_id=_opt(_NAME),
    output_ref=_opt(_TEXT),
    recorded_at=_opt(_TIME),
)
states = st.builds(
    RunState,
    run_id=_NAME,
    status=st.sampled_from(RunStatus),
    agent=_NAME,
    owner=_NAME,
    input=st.text(max_size=200),
    prompt_version=_NAME,
    source=_NAME,
    created_at=_TIME,
    updated_at=_TIME,
    version=_LONG,
    tenant=_opt(_NAME),
    current_step=_opt(_NAME),
    step_index=_opt(_INT32),
    step_attempt=_INT32,
    step_phase=_opt(st.sampled_from(StepPhase)),
    completed_steps=st.lists(
        st.builds(
            CompletedStep,
            step=_NAME,
            step_index=_INT32,
            attempt=_INT32,
            completed_at=_TIME,
            output_ref=_opt(_TEXT),
        ),
        max_size=3,
    ).map(tuple),
    retry_count=_INT32,
    retry_not_before=_opt(_TIME),
    last_error_reason=_opt(st.sampled_from(FailureReason)),
    last_error_message=_opt(_TEXT),
    last_attempt_at=_opt(_TIME),
    approval=_opt(_approvals),
    external_actions=st.lists(_actions, max_size=3).map(tuple),
    model_calls=st.lists(
        st.builds(ModelCall, request_id=_NAME, model=_NAME, step=_opt(_NAME)), max_size=3
    ).map(tuple),
    needs_attention=st.booleans(),
    output_ref=_opt(_TEXT),
    cancelled_by=_opt(_NAME),
    cancel_reason=_opt(_TEXT),
    epoch=_opt(st.integers(1, 2**63 - 1)),
    holder=_opt(_NAME),
    lease_ms=_opt(st.integers(1, 2**40)),
    lease_until=_opt(_TIME),
    last_offset=_opt(_LONG),
    recent_event_digests=st.lists(st.integers(0, 2**64 - 1), max_size=128).map(tuple),
)


@given(states)
def test_any_state_round_trips(state: RunState) -> None:
    assert decode_state(encode_state(state)) == state


@given(plausible_runs())
def test_every_reachable_state_and_change_round_trips(events: list[AgentEvent]) -> None:
    state = None
    for offset, event in enumerate(events):
        outcome = apply(state, event, offset=offset)
        if isinstance(outcome, Applied):
            state = outcome.state
            assert decode_state(encode_state(state)) == state
            assert decode_change(encode_change(outcome.change)) == outcome.change


# --- the contract files agree with the dataclasses -------------------------------------


def _avro_fields(schema: dict[str, Any]) -> dict[str, Any]:
    return {f["name"]: f["type"] for f in schema["fields"]}


def _record_in(avro_type: Any) -> dict[str, Any]:
    """The record inside ``["null", record]`` or ``{"type": "array", "items": record}``."""
    if isinstance(avro_type, list):
        return next(t for t in avro_type if isinstance(t, dict))
    if avro_type.get("type") == "array":
        return dict(avro_type["items"])
    return dict(avro_type)


def test_the_avro_layout_names_exactly_the_dataclass_fields() -> None:
    catalog = default_catalog()
    state = _avro_fields(dict(catalog.latest(STATE_RECORD).definition))
    assert set(state) == {f.name for f in dataclasses.fields(RunState)}
    for name, cls in [
        ("approval", Approval),
        ("external_actions", ExternalAction),
        ("model_calls", ModelCall),
        ("completed_steps", CompletedStep),
    ]:
        nested = _avro_fields(_record_in(state[name]))
        assert set(nested) == {f.name for f in dataclasses.fields(cls)}, name
    change = _avro_fields(dict(catalog.latest(CHANGE_RECORD).definition))
    assert set(change) == {f.name for f in dataclasses.fields(RunStateChanged)}
    assert catalog.latest(STATE_RECORD).version == STATE_SCHEMA_VERSION


# --- old layouts are upgraded on read --------------------------------------------------

_DROPPED_IN_V0 = ("schema_version", "tenant", "completed_steps", "needs_attention")


def _v0_catalog() -> tuple[SchemaCatalog, Any]:
    """The shipped catalog plus a made-up v0 of RunState that lacks four fields."""
    definition = copy.deepcopy(dict(default_catalog().latest(STATE_RECORD).definition))
    definition["fields"] = [f for f in definition["fields"] if f["name"] not in _DROPPED_IN_V0]
    v0 = load_schema_text(json.dumps(definition), version=0, source="test v0")
    return SchemaCatalog([*default_catalog(), v0]), v0


def _v0_bytes(state: RunState) -> tuple[SchemaCatalog, bytes]:
    catalog, v0 = _v0_catalog()
    record = {k: v for k, v in state_to_record(state).items() if k not in _DROPPED_IN_V0}
    return catalog, encode(record, v0)


def test_an_old_record_reads_with_defaults(run_state_factory: RunStateFactory) -> None:
    state = run_state_factory(tenant="acme", needs_attention=True, status=RunStatus.FAILED)
    catalog, data = _v0_bytes(state)
    decoded = StateCodec(SingleObjectCodec(catalog)).decode_state(data)
    assert decoded == dataclasses.replace(state, tenant=None, needs_attention=False)
    assert decoded.schema_version == STATE_SCHEMA_VERSION


def test_a_state_stored_before_the_lease_reads_as_never_claimed(
    run_state_factory: RunStateFactory,
) -> None:
    state = run_state_factory(status=RunStatus.IN_PROGRESS)
    v1 = default_catalog().get(STATE_RECORD, 1)
    lease = ("epoch", "holder", "lease_ms", "lease_until")
    record = {k: v for k, v in state_to_record(state).items() if k not in lease}
    decoded = decode_state(encode({**record, "schema_version": 1}, v1))
    assert decoded == state
    assert (decoded.epoch, decoded.holder, decoded.lease_until) == (None, None, None)


def test_a_change_line_of_a_claim_round_trips() -> None:
    b = RunBuilder()
    b.start()
    claim = b.claim("agent-a")
    started = apply(None, b.events[0])
    assert isinstance(started, Applied)
    outcome = apply(started.state, claim)
    assert isinstance(outcome, Applied)
    change = decode_change(encode_change(outcome.change))
    assert (change.event_type, change.epoch, change.holder) == ("RunClaimed", 1, "agent-a")


def test_an_old_record_runs_the_upgrade_steps(run_state_factory: RunStateFactory) -> None:
    seen: list[int] = []

    def v0_to_v1(record: dict[str, Any]) -> dict[str, Any]:
        seen.append(record["schema_version"])
        # What a default cannot say: old failed runs always needed a person.
        record["needs_attention"] = record["status"] == RunStatus.FAILED.value
        return record

    catalog, data = _v0_bytes(run_state_factory(status=RunStatus.FAILED))
    codec = StateCodec(SingleObjectCodec(catalog), upgrades={0: v0_to_v1})
    assert codec.decode_state(data).needs_attention is True
    assert seen == [0]
    # A current record skips the step.
    current = codec.encode_state(run_state_factory(status=RunStatus.FAILED))
    assert codec.decode_state(current).needs_attention is False
    assert seen == [0]


def test_code_and_contract_must_agree_on_the_layout_version() -> None:
    definition = dict(default_catalog().latest(STATE_RECORD).definition)
    newer = load_schema_text(
        json.dumps(definition), version=STATE_SCHEMA_VERSION + 1, source="test newer"
    )
    catalog = SchemaCatalog([*default_catalog(), newer])
    with pytest.raises(CompatibilityError, match=r"ship state\.py and the \.avsc together"):
        StateCodec(SingleObjectCodec(catalog))


# --- bad bytes -------------------------------------------------------------------------


def test_garbage_and_the_wrong_record_are_decode_errors() -> None:
    with pytest.raises(DecodeError):
        decode_state(b"not avro at all")
    change_bytes = encode_change(
        RunStateChanged(
            run_id="r",
            version=1,
            event_id="e",
            event_type="RunStarted",
            occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
            from_status=None,
            to_status=RunStatus.CREATED,
        )
    )
    with pytest.raises(DecodeError):
        decode_state(change_bytes)


def test_a_record_with_bad_digests_is_a_decode_error(run_state_factory: RunStateFactory) -> None:
    record = state_to_record(run_state_factory())
    record["recent_event_digests"] = b"\x01\x02\x03"
    with pytest.raises(DecodeError, match="replaying"):
        state_codec.record_to_state(record)


def test_a_typical_state_stays_small() -> None:
    state = None
    for event in make_run(with_approval=True, failures=2, with_action=True, model_calls=3):
        outcome = apply(state, event)
        assert isinstance(outcome, Applied)
        state = outcome.state
    assert state is not None
    assert len(encode_state(state)) < 2048

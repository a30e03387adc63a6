"""A run's summary (the latest-state topic's record): bounded, and what the state says."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given

from runstate.errors import DecodeError
from runstate.runs.reducer import Applied, apply, fold
from runstate.runs.run_view import run_to_json, summary_to_json
from runstate.runs.state import RunState
from runstate.runs.state_codec import encode_state
from runstate.runs.summary import (
    SUMMARY_RECORD,
    SUMMARY_SCHEMA_VERSION,
    SUMMARY_TEXT_LIMIT,
    ApprovalSummary,
    RunSummary,
    SummaryCodec,
    decode_summary,
    encode_summary,
    summarize,
)
from runstate.schemas.catalog import default_catalog
from runstate.schemas.events import StepStarted
from tests.factories import RunBuilder, make_run
from tests.runs.test_state_codec import states

#: What a summary's bytes stay under, however long the run (this run's: 112 bytes).
SUMMARY_BOUND = 1024


def _model_call_run(calls: int) -> RunBuilder:
    b = RunBuilder("run-long")
    b.start()
    b.emit(StepStarted, step="draft", step_index=0, attempt=1)
    for _ in range(calls):
        b.model_call("draft")
    return b


def test_a_run_of_5000_model_calls_has_a_small_summary_equal_to_the_folds() -> None:
    events = _model_call_run(5000).events
    state = fold(events)
    assert state is not None and len(state.model_calls) == 5000
    data = encode_summary(summarize(state))
    assert len(data) < SUMMARY_BOUND, len(data)
    assert len(encode_state(state)) > 100 * len(data)  # what the topic carried before
    summary = decode_summary(data)
    assert summary == summarize(state)
    assert summary.model_call_count == 5000
    assert summary.version == state.version == len(events)


def test_the_summary_does_not_grow_with_the_run() -> None:
    b = _model_call_run(0)
    sizes = []
    for calls in (10, 100, 1000):
        while len(b.events) < calls + 2:
            b.model_call("draft")
        state = fold(b.events)
        assert state is not None
        sizes.append(len(encode_summary(summarize(state))))
    # only varints grow: the version, the count and last_offset
    assert sizes[-1] - sizes[0] <= 4, sizes


@given(states)
def test_any_states_summary_round_trips(state: RunState) -> None:
    summary = summarize(state)
    assert decode_summary(encode_summary(summary)) == summary
    assert SummaryCodec().encode_state_summary(state) == encode_summary(summary)


def test_a_whole_state_record_from_an_older_worker_reads_as_its_summary() -> None:
    state = fold(make_run("run-old", seed=5))
    assert state is not None
    assert decode_summary(encode_state(state)) == summarize(state)


def test_free_text_is_cut_and_large_texts_are_left_out() -> None:
    state = fold(make_run("run-text", seed=6))
    assert state is not None
    long = "x" * (SUMMARY_TEXT_LIMIT * 3)
    state = replace(state, last_error_message=long, cancel_reason=long, input=long)
    summary = summarize(state)
    assert summary.last_error_message is not None and summary.cancel_reason is not None
    assert len(summary.last_error_message) == SUMMARY_TEXT_LIMIT
    assert summary.last_error_message.endswith("…")
    assert summary.cancel_reason == summary.last_error_message
    assert len(encode_summary(summary)) < 3 * SUMMARY_BOUND
    assert "input" not in summary_to_json(summary)


def test_the_summary_counts_the_collections_and_keeps_every_other_field() -> None:
    builder = RunBuilder("run-all")
    builder.start()
    builder.step("plan")
    builder.request_approval("send")
    state = None
    for offset, event in enumerate(builder.events):
        outcome = apply(state, event, offset=offset)
        assert isinstance(outcome, Applied)
        state = outcome.state
    assert state is not None and state.approval is not None
    summary = summarize(state)
    whole, short = run_to_json(state), summary_to_json(summary)
    left_out = {"input", "completed_steps", "external_actions", "model_calls"}
    left_out |= {"recent_event_digests", "schema_version"}
    for name in set(whole) - left_out - {"approval"}:
        assert short[name] == whole[name], name
    # Free text and the request's rule stay out of the bounded record (see summary.py).
    kept_out = ("subject", "comment", "override_reason", "enforce_decider")
    assert short["approval"] == {k: v for k, v in whole["approval"].items() if k not in kept_out}
    assert short["completed_step_count"] == len(state.completed_steps) == 1
    assert short["model_call_count"] == len(state.model_calls)
    assert short["external_action_count"] == len(state.external_actions)
    assert short["schema_version"] == SUMMARY_SCHEMA_VERSION


def test_undecodable_bytes_are_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_summary(b"not avro at all")


def _avro_fields(definition: Any) -> set[str]:
    return {f["name"] for f in definition["fields"]}


def test_the_avro_layout_names_exactly_the_dataclass_fields() -> None:
    schema = default_catalog().latest(SUMMARY_RECORD)
    assert schema.version == SUMMARY_SCHEMA_VERSION
    definition = dict(schema.definition)
    assert _avro_fields(definition) == {f.name for f in dataclasses.fields(RunSummary)}
    [approval] = [f for f in definition["fields"] if f["name"] == "approval"]
    record = next(t for t in approval["type"] if isinstance(t, dict))
    assert _avro_fields(record) == {f.name for f in dataclasses.fields(ApprovalSummary)}

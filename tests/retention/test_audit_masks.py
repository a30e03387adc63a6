"""Replay audit: values the archive masked are expected differences, not mismatches."""

from __future__ import annotations

import base64
import dataclasses

from runstate.retention import compare_states, event_masker, parse_mask_keys, parse_policy
from runstate.runs.reducer import fold
from runstate.runs.summary import summarize
from runstate.schemas.events import AgentEvent, RunCompleted
from tests.factories import RunBuilder

KEYS = parse_mask_keys("k1:" + base64.b64encode(b"audit-test-key-of-32-bytes-long!").decode())
RULES = parse_policy(
    "topics:\n  events:\n    hot: 7d\n    personal_data:\n"
    "      RunStarted: {owner: mask}\n"
    "      StepCompleted: {output_ref: mask}\n"
    "      RunCompleted: {output_ref: mask}\n"
).topic("events")


def _run() -> list[AgentEvent]:
    b = RunBuilder("run-a")
    b.start(owner="intern.eve")
    b.step("form")
    b.emit(RunCompleted, output_ref="sent to cfo@acme.example")
    return b.events


def test_masked_step_and_run_outputs_are_tolerated_only_where_the_policy_masks() -> None:
    events = _run()
    masker = event_masker(RULES, keys=KEYS)
    assert masker is not None
    archived = [
        type(e).model_validate({**e.model_dump(), **masker(e.event_type, e.model_dump())})
        for e in events
    ]
    live, replayed = fold(events), fold(archived)
    assert live is not None and replayed is not None
    assert replayed.output_ref != live.output_ref

    assert compare_states({"run-a": replayed}, {"run-a": live}, rules=RULES) == []
    paths = {m.path for m in compare_states({"run-a": replayed}, {"run-a": live})}
    assert {"owner", "output_ref", "completed_steps[0].output_ref"} <= paths
    # against the latest-state topic's summary, the summaries are compared
    summary = summarize(live)
    assert compare_states({"run-a": replayed}, {"run-a": summary}, rules=RULES) == []
    paths = {m.path for m in compare_states({"run-a": replayed}, {"run-a": summary})}
    assert paths == {"owner", "output_ref"}


def test_unkeyed_masks_of_older_archives_are_still_tolerated() -> None:
    live = fold(_run())
    assert live is not None
    old = dataclasses.replace(live, owner="sha256:0123456789abcdef")
    clear_text = dataclasses.replace(live, owner="someone.else")

    summary = summarize(live)
    assert compare_states({"run-a": old}, {"run-a": summary}, rules=RULES) == []
    assert [
        m.path for m in compare_states({"run-a": clear_text}, {"run-a": summary}, rules=RULES)
    ] == ["owner"]

"""Check 4 over archived events: every field in clear counts, tagged or not (issue 11).

Events go through the real codec and the archiver's own mask (``writer_schema_mask``) and
are decoded back the way the check reads the archive, so no broker is needed.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from runstate.agents import DurableRun, InMemoryRuns, approve
from runstate.checks import Place, Verdict, pii_plan
from runstate.checks.archive_scan import detect, scan_events
from runstate.checks.personal_data import judge_personal_data, scan_places, scan_segments
from runstate.errors import RunSuspended
from runstate.retention import (
    ArchivedRecord,
    LocalArchive,
    PersonalDataAction,
    build_segment,
    load_policy,
    parse_mask_keys,
    parse_policy,
)
from runstate.retention.archiver import decode_archived_value, writer_schema_mask
from runstate.retention.masking import masker_for_topic
from runstate.schemas.catalog import default_catalog
from runstate.schemas.codec import SingleObjectCodec
from runstate.schemas.convert import encode_event
from runstate.schemas.events import AgentEvent, ModelCalled, StepCompleted, StepStarted
from runstate.testing.credit_limit import AGENT, PROMPT_VERSION, SAMPLE_REQUEST, CreditLimitAgent
from runstate.testing.effects import EffectsClient, EffectsService
from tests.factories import RunBuilder

EMAIL = "cfo@acme.example"
PHONE = "+7 701 123 45 67"
KEYS = parse_mask_keys("k1:" + base64.b64encode(b"check-test-key-of-32-bytes-long!").decode())
PLANTED = ("StepStarted.input_ref", "StepCompleted.output_ref", "ModelCalled.tags")


def _policy(rules: str) -> Any:
    return parse_policy(f"topics:\n  events:\n    hot: 7d\n    personal_data:\n{rules}")


ONLY_OWNER = _policy("      RunStarted: {owner: mask}\n")
ALL_TAGGED = _policy(
    "      RunStarted: {owner: mask, input: mask}\n"
    "      StepStarted: {input_ref: mask}\n"
    "      StepCompleted: {output_ref: mask}\n"
    "      ModelCalled: {tags: drop}\n"
)


def _archived_events(policy: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """A run whose untagged fields hold an e-mail and a phone number, as the archive has it."""
    b = RunBuilder("run-pii")
    b.start(owner="intern.eve", input=json.dumps({"email": EMAIL}))
    b.emit(StepStarted, step="form", step_index=0, attempt=1, input_ref=f"call {PHONE}")
    b.emit(ModelCalled, model_request_id="m1", model="m", tags={"to": EMAIL, PHONE: "caller"})
    b.emit(StepCompleted, step="form", attempt=1, output_ref=json.dumps({"email": EMAIL}))
    codec = SingleObjectCodec(default_catalog())
    masker = masker_for_topic(policy, "events", keys=KEYS)
    assert masker is not None
    mask = writer_schema_mask(masker, codec)
    out = []
    for offset, event in enumerate(b.events):
        record = mask(ArchivedRecord(offset, 0, b"run-pii", encode_event(event, codec=codec)))
        assert record.value is not None
        event_type, fields = decode_archived_value(codec, record.value, offset=offset)
        out.append((f"segment events/0/0-3 offset {offset}", event_type, fields))
    return out


def _judge(policy: Any) -> tuple[Any, dict[str, Any]]:
    fields = {f.name: f for f in pii_plan("check-20250101T000000Z-abcdef12").values()}
    places = [
        Place("archive: events", "archive", None, "", scan=scan_events(_archived_events(policy)))
    ]
    tags = {
        f"{t}.{n}": action
        for t, named in policy.topic("events").personal_data.items()
        for n, action in named.items()
    }
    result = judge_personal_data(tags, fields, places, scan_places(places, fields))
    return result, result.details["places"]["archive: events"]


def test_personal_data_in_untagged_fields_fails_and_names_each_field() -> None:
    result, archive = _judge(ONLY_OWNER)

    assert result.verdict is Verdict.FAIL
    assert set(PLANTED) <= set(archive["in_clear"])
    assert "RunStarted.input" in archive["in_clear"]  # the input is not tagged either
    assert archive["masked"] == {"RunStarted.owner": 1}
    tags = archive["in_clear"]["ModelCalled.tags"]
    assert tags["values"] == 1 and tags["kinds"] == ["e-mail", "phone number"]
    assert tags["example"] == "segment events/0/0-3 offset 2"
    for name in PLANTED:
        assert name in result.evidence
    assert "not tagged by the policy" in result.evidence


def test_no_value_appears_in_the_report() -> None:
    result, _archive = _judge(ONLY_OWNER)
    text = result.evidence + json.dumps(result.details)

    for value in (EMAIL, PHONE, "intern.eve", "+77011234567"):
        assert value not in text


def test_the_same_fields_tagged_and_masked_pass() -> None:
    result, archive = _judge(ALL_TAGGED)

    assert result.verdict is Verdict.PASS, result.evidence
    assert archive["in_clear"] == {}
    assert set(archive["masked"]) == {
        "RunStarted.owner",
        "RunStarted.input",
        "StepStarted.input_ref",
        "StepCompleted.output_ref",
    }


def test_the_summary_line_and_the_json_agree() -> None:
    for policy in (ONLY_OWNER, ALL_TAGGED):
        result, archive = _judge(policy)
        found = re.search(
            r"archive: events: (\d+) clear, (\d+) masked, (\d+) absent", result.evidence
        )

        assert found is not None, result.evidence
        clear, masked, absent = (int(g) for g in found.groups())
        assert archive["counts"] == {"clear": clear, "masked": masked, "absent": absent}
        assert clear == len(archive["in_clear"]) and masked == len(archive["masked"])
        for name, finding in archive["in_clear"].items():
            assert f"{name} ({finding['values']} values" in result.evidence


def test_a_field_tagged_keep_in_clear_warns_instead() -> None:
    kept = _policy(
        "      RunStarted: {owner: keep, input: mask}\n"
        "      StepStarted: {input_ref: mask}\n"
        "      StepCompleted: {output_ref: mask}\n"
        "      ModelCalled: {tags: drop}\n"
    )
    b = RunBuilder("run-kept")
    b.start(owner=EMAIL)
    events = [("segment s offset 0", "RunStarted", b.events[0].model_dump())]
    fields = {f.name: f for f in pii_plan("check-20250101T000000Z-abcdef12").values()}
    places = [Place("archive: events", "archive", None, "", scan=scan_events(events))]
    tags = {
        f"{t}.{n}": a
        for t, named in kept.topic("events").personal_data.items()
        for n, a in named.items()
    }

    result = judge_personal_data(tags, fields, places, scan_places(places, fields))

    assert (
        result.verdict is Verdict.WARN and "policy says keep: RunStarted.owner" in result.evidence
    )


def test_detectors_find_e_mails_and_phone_numbers_not_ids_dates_or_masks() -> None:
    assert detect(json.dumps({"email": EMAIL, "phone": "+77011234567"})) == {
        "e-mail",
        "phone number",
    }
    assert detect("8 701 123 45") == {"phone number"}
    assert detect("call 8-701-123-45-67 today") == {"phone number"}
    assert detect("check-pii-abcdef12-owner") == {"check token"}
    for text in ("990101300123", "check-20250101T000000Z-abcdef12", "2026-12-04 20:38:25",
                 "manager.aliya", "10.0.0.1", "v1.2.3", "mask:k1:" + "0" * 32,
                 "0193a7c1-7123-8123-1234-b302099a8057", "e-0193a7c1-7123-8123-1234"):  # fmt: skip
        assert detect(text) == set(), text


EXAMPLE_POLICY = Path(__file__).resolve().parents[2] / "examples" / "retention-policy.yaml"


def _demo_events() -> list[AgentEvent]:
    """What ``runstate demo`` writes for one credit-limit run, approved by the manager."""
    runs = InMemoryRuns()
    with EffectsService() as service:
        agent = CreditLimitAgent(EffectsClient(service.url))

        def attach() -> DurableRun:
            return DurableRun.attach(runs, runs, "demo-run", max_inline_wait_s=0.0)

        run = DurableRun.start(
            runs, runs, run_id="demo-run", agent=AGENT, input=json.dumps(SAMPLE_REQUEST),
            prompt_version=PROMPT_VERSION, owner="loans-desk", source="demo",
            max_inline_wait_s=0.0,
        )  # fmt: skip
        with pytest.raises(RunSuspended):
            agent.drive(run)
        approve(runs, runs, "demo-run", by="manager.aliya", comment="ok, within policy")
        agent.drive(attach())
    return list(runs.events_of("demo-run"))


def test_the_example_policy_scrubs_what_the_demo_writes() -> None:
    policy = load_policy(EXAMPLE_POLICY)
    topic = "runstate.events"
    codec = SingleObjectCodec(default_catalog())
    masker = masker_for_topic(policy, topic, keys=KEYS)
    assert masker is not None
    mask = writer_schema_mask(masker, codec)
    events = _demo_events()
    plain, masked = [], []
    for offset, event in enumerate(events):
        value = encode_event(event, codec=codec)
        record = mask(ArchivedRecord(offset, 0, b"demo-run", value))
        assert record.value is not None
        where = f"offset {offset}"
        plain.append((where, *decode_archived_value(codec, value)))
        masked.append((where, *decode_archived_value(codec, record.value)))

    assert {"e-mail", "phone number"} <= set().union(
        *(t.kinds for t in scan_events(plain).fields.values())
    )  # the demo does write personal data
    assert scan_events(masked).in_clear == []


def test_the_example_policy_hides_every_field_the_synthetic_run_fills() -> None:
    rules = load_policy(EXAMPLE_POLICY).topic("runstate.events").personal_data
    tags = {f"{t}.{n}": a for t, named in rules.items() for n, a in named.items()}
    plan = {f.name for f in pii_plan("check-20250101T000000Z-abcdef12").values()}

    assert plan <= set(tags)
    assert {n for n in plan if tags[n] is PersonalDataAction.KEEP} == {"RunStarted.tenant"}


def test_each_finding_stays_on_one_line_of_the_table() -> None:
    result, archive = _judge(ONLY_OWNER)
    lines = result.evidence.split("; ")  # what `runstate check` prints, one per row line

    for name in archive["in_clear"]:
        assert sum(name + " (" in line and "offset" in line for line in lines) == 1, name


def test_scan_segments_reads_every_record_of_a_real_segment(tmp_path: Path) -> None:
    codec = SingleObjectCodec(default_catalog())
    b = RunBuilder("run-other")
    b.start(owner="team")
    b.emit(StepCompleted, step="s", attempt=1, output_ref=f"mailed {EMAIL}")
    records = [
        ArchivedRecord(o, 1_700_000_000_000 + o, b"run-other", encode_event(e, codec=codec))
        for o, e in enumerate(b.events)
    ]
    records.append(
        ArchivedRecord(len(records), 1_700_000_000_100, b"run-x", b"\x00 " + PHONE.encode())
    )
    store = LocalArchive(tmp_path / "archive")
    store.put_segment(build_segment("events", 0, records))

    scan = scan_segments(store, store.list_manifests("events", 0), codec)

    assert scan.records == 3 and scan.undecodable == 1
    assert scan.in_clear == ["StepCompleted.output_ref", "undecodable.value"]
    assert scan.fields["StepCompleted.output_ref"].example == "segment events/0/0-2 offset 1"

"""``runstate check``: the five launch checks against a real processor, archiver and broker.

The integration tests share one deployment (a processor worker and two archivers as child
processes): one archiver masks per policy (with a test mask key), the other archives the
same topic without any personal-data rules, which is what check 4 must catch, whether the
policy the check reads tags the fields or not.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from runstate.checks import Exposure, Place, Verdict, pii_plan
from runstate.checks.archive_scan import scan_events
from runstate.checks.personal_data import (
    _file_chunks,
    exposure,
    found_in,
    judge_personal_data,
    scan_places,
)
from runstate.checks.scenario import judge_side_effects
from runstate.checks.synthetic import RUN_ID_PREFIX, new_check_run_id
from runstate.cli import app
from runstate.retention.policy import PersonalDataAction
from runstate.streams.topics import TopicNames
from runstate.testing.effects import EffectCount
from tests.workers import RUNSTATE, Deployment, Worker

#: Tags every field the synthetic run fills (pii_plan), and one it does not.
RULES = """    personal_data:
      RunStarted: {input: mask, owner: mask, tenant: drop}
      StepStarted: {input_ref: mask}
      StepCompleted: {output_ref: mask}
      ModelCalled: {tags: drop}
      ExternalActionRecorded: {output_ref: mask}
      ApprovalRequested: {approver: mask, subject: drop}
      ApprovalGranted: {by: mask, comment: drop}
      RunCompleted: {output_ref: mask}
      RunCancelled: {by: mask}
"""
#: Tags only what the example policy tagged before issue 11: the rest is untagged.
SOME_RULES = """    personal_data:
      RunStarted: {input: mask, owner: mask, tenant: drop}
      ApprovalRequested: {approver: mask, subject: drop}
"""
MASK_KEYS = "k1:" + base64.b64encode(b"launch-check-test-key-32-bytes!!").decode()


def _policy(path: Path, names: TopicNames, archive: Path, *, rules: str) -> Path:
    path.write_text(
        f"""version: 1
topics:
  {names.events}:
    hot: 7d
    archive:
      target: local:{archive}
    archive_retention: forever
{rules}
  {names.state_changes}:
    hot: 3d
"""
    )
    return path


@dataclass
class Site:
    """The deployment under check and the policies its two archives were written with."""

    deployment: Deployment
    worker: Worker
    masked_policy: Path
    #: Tags some of the fields, and names the archive written without masking.
    unmasked_archive_policy: Path


def _archiver(d: Deployment, policy: Path, group: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                str(RUNSTATE), "archive", "run", "--policy", str(policy),
                "--bootstrap", d.bootstrap, "--topic-prefix", d.prefix,
                "--roll-seconds", "1", "--group", group, "--log-level", "warning",
            ],
            env={
                **{k: v for k, v in d.workers[0].env.items() if k != "RUNSTATE_RETENTION_POLICY"},
                "RUNSTATE_MASK_KEYS": MASK_KEYS,
            },
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip


@pytest.fixture(scope="module")
def site(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("launch")
    d = Deployment(kafka_bootstrap, f"launch-{uuid.uuid4().hex[:8]}", 3, root)
    d.ensure_topics()
    worker = d.worker("w1").start()
    masked = _policy(root / "masked.yaml", d.names, root / "masked", rules=RULES)
    plain = _policy(root / "plain.yaml", d.names, root / "plain", rules="")
    unmasked = _policy(root / "unmasked.yaml", d.names, root / "plain", rules=SOME_RULES)
    archivers: list[subprocess.Popen[bytes]] = []
    try:
        worker.wait_ready(partitions=3, timeout_s=90)
        archivers = [
            _archiver(d, masked, f"{d.prefix}-arch-masked", root / "arch-masked.log"),
            _archiver(d, plain, f"{d.prefix}-arch-plain", root / "arch-plain.log"),
        ]
        yield Site(d, worker, masked, unmasked)
    finally:
        for proc in archivers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        d.close()


def _check(site: Site, policy: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    d = site.deployment
    args = [
        "check", "--json", "--policy", str(policy), "--bootstrap", d.bootstrap,
        "--query-url", site.worker.url, "--topic-prefix", d.prefix,
        "--log", str(site.worker.log_path), "--archive-wait", "20", *extra,
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    try:
        body = json.loads(result.stdout)
    except ValueError:
        raise AssertionError(result.output + site.worker.tail()) from None
    return result.exit_code, body, result.output


def _by_number(body: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {c["check"]: c for c in body["checks"]}


# -- against a real deployment -------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(150)
def test_a_healthy_deployment_passes_all_five_checks(site: Site) -> None:
    code, body, output = _check(site, site.masked_policy, "--runs-per-day", "5000")

    checks = _by_number(body)
    assert code == 0, output
    assert body["run_id"].startswith(RUN_ID_PREFIX)
    assert [checks[n]["result"] for n in (1, 2, 3, 5)] == ["PASS"] * 4, output
    attempts = checks[1]["details"]["step_attempts"]
    assert attempts == {"collect": [1], "enrich": [1, 2], "approval": [1]}
    assert checks[1]["details"]["mismatches"] == []
    seen = checks[2]["details"]["seen_after_s"]
    assert all(s is not None and s <= 10 for s in seen.values()), seen
    # Hot topics hold clear values by design: a warning, not a failure.
    assert checks[4]["result"] == "WARN", checks[4]["evidence"]
    places = checks[4]["details"]["places"]
    archived = places[f"archive: {site.deployment.names.events}"]["fields"]
    assert archived is not None, checks[4]["evidence"]
    judged = checks[4]["details"]["judged_fields"]
    assert {archived[f] for f in judged} == {"masked", "absent"}
    assert archived["RunStarted.owner"] == "masked" and archived["ApprovalGranted.by"] == "masked"
    assert archived["RunStarted.tenant"] == "absent"  # dropped
    archive = places[f"archive: {site.deployment.names.events}"]
    assert archive["in_clear"] == {} and archive["counts"]["clear"] == 0, checks[4]["evidence"]
    assert archive["masked"]["StepCompleted.output_ref"] >= 1
    assert places["events topic"]["fields"]["RunStarted.owner"] == "clear"
    assert set(places[f"log: {site.worker.log_path}"]["fields"].values()) == {"absent"}
    assert "RunCancelled.by" in checks[4]["details"]["not_exercised"]
    tiers = checks[5]["details"]["tiers"]
    assert {t["tier"] for t in tiers} >= {"kafka hot: events", "archive: events"}
    assert checks[5]["details"]["workload"]["runs_per_day"] == 5000


@pytest.mark.integration
@pytest.mark.timeout(150)
def test_an_archive_holding_fields_in_clear_fails_check_4_tagged_or_not(site: Site) -> None:
    code, body, output = _check(site, site.unmasked_archive_policy, "--archive-scope", "all")

    checks = _by_number(body)
    evidence = checks[4]["evidence"]
    archive = checks[4]["details"]["places"][f"archive: {site.deployment.names.events}"]
    assert code == 1, output
    assert checks[4]["result"] == "FAIL"
    assert "in clear" in evidence and "RunStarted.owner" in evidence  # tagged
    for untagged in ("StepCompleted.output_ref", "ModelCalled.tags", "StepStarted.input_ref"):
        assert untagged in archive["in_clear"] and untagged in evidence
        assert "offset" in archive["in_clear"][untagged]["example"]
    assert "every live segment of the archive" in archive["note"]
    clear = archive["counts"]["clear"]
    assert clear == len(archive["in_clear"]) and f": {clear} clear, " in evidence
    assert [checks[n]["result"] for n in (1, 2, 3)] == ["PASS"] * 3, output


# -- the decisions, without a broker -------------------------------------------------------


def test_one_request_per_key_passes_and_a_duplicate_fails() -> None:
    expected = {"r:notify": "email", "r:collect": "notification"}
    once = {
        "email": {"r:notify": EffectCount(1, 1)},
        "notification": {"r:collect": EffectCount(1, 1)},
    }
    twice = {**once, "email": {"r:notify": EffectCount(2, 2)}}

    assert judge_side_effects(once, expected)[0] is Verdict.PASS
    verdict, lines = judge_side_effects(twice, expected)
    assert verdict is Verdict.FAIL and "email r:notify: 2 request(s), 2 effect(s)" in lines
    assert judge_side_effects({}, expected)[0] is Verdict.FAIL  # the step never ran


def test_the_synthetic_run_is_easy_to_spot_and_its_tokens_do_not_overlap() -> None:
    run_id = new_check_run_id()
    plan = pii_plan(run_id)
    tokens = [f.token for f in plan.values()]

    assert run_id.startswith("check-") and len(set(tokens)) == len(tokens)
    assert not any(a != b and a in b for a in tokens for b in tokens)
    assert pii_plan(run_id) == plan  # the agent process derives the same plan


def _places(archive: list[tuple[str, str, dict[str, Any]]], hot: list[bytes]) -> list[Place]:
    return [
        Place("events topic", "hot", hot, "hot"),
        Place("archive: x.events", "archive", None, "", scan=scan_events(archive)),
    ]


def test_clear_values_in_the_archive_fail_and_in_hot_topics_warn() -> None:
    fields = {f.name: f for f in pii_plan("check-20250101T000000Z-abcdef12").values()}
    owner = fields["RunStarted.owner"]
    tags = {"RunStarted.owner": PersonalDataAction.MASK, "RunCancelled.by": PersonalDataAction.MASK}
    clear = f"...{owner.token}...".encode()
    archived_clear = [("segment s offset 1", "RunStarted", {"owner": owner.token})]
    archived_masked = [("segment s offset 1", "RunStarted", {"owner": "mask:k1:" + "0" * 32})]

    places = _places(archived_masked, [clear])
    warned = judge_personal_data(tags, fields, places, scan_places(places, fields))
    places = _places(archived_clear, [clear])
    failed = judge_personal_data(tags, fields, places, scan_places(places, fields))
    places = _places(archived_masked, [])
    passed = judge_personal_data(tags, fields, places, scan_places(places, fields))

    assert warned.verdict is Verdict.WARN
    assert warned.details["places"]["archive: x.events"]["fields"]["RunStarted.owner"] == "masked"
    assert failed.verdict is Verdict.FAIL and "RunStarted.owner" in failed.evidence
    assert "segment s offset 1" in failed.evidence and owner.token not in failed.evidence
    assert passed.verdict is Verdict.PASS
    assert passed.details["not_exercised"] == ["RunCancelled.by"]


def test_an_archive_that_was_not_searched_or_a_policy_without_tags_warns() -> None:
    fields = {f.name: f for f in pii_plan("check-20250101T000000Z-abcdef12").values()}
    unsearched = [Place("archive: x.events", "archive", None, "not archived within 1s")]

    assert (
        judge_personal_data(
            {"RunStarted.owner": PersonalDataAction.MASK},
            fields,
            unsearched,
            scan_places(unsearched, fields),
        ).verdict
        is Verdict.WARN
    )
    nothing = _places([], [])
    assert judge_personal_data({}, fields, nothing, scan_places(nothing, fields)).verdict is (
        Verdict.WARN
    )


def test_a_token_in_bytes_is_clear_else_absent() -> None:
    f = pii_plan("check-20250101T000000Z-abcdef12")["RunStarted", "input"]

    assert exposure(found_in([b".." + f.token.encode()], {f.token.encode()}), f) is (Exposure.CLEAR)
    assert exposure(found_in([b"mask:k1:00"], {f.token.encode()}), f) is Exposure.ABSENT


def test_a_token_across_a_chunk_boundary_of_a_log_file_is_found(tmp_path: Path) -> None:
    token = b"check-pii-abcdef12-owner"
    log = tmp_path / "worker.log"
    log.write_bytes(b"x" * (4 * 1024 * 1024 - 5) + token + b"\n")

    assert found_in(_file_chunks(log, len(token)), {token}) == {token}


def test_an_unreachable_query_api_stops_before_any_check(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["check", "--query-url", "http://127.0.0.1:9", "--bootstrap", "127.0.0.1:9"]
    )

    assert result.exit_code == 3  # a service runstate needs is unreachable
    assert "cannot reach the query API" in result.output

"""``archive anchor`` and ``archive verify --anchor``: the chain head kept apart, checked later."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from runstate.cli import app
from runstate.retention import LocalArchive

from .support import SegmentFactory

TOPIC = "runstate.events"


def setup(tmp_path: Path, segment_factory: SegmentFactory) -> tuple[Path, LocalArchive]:
    root = tmp_path / "archive"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"version: 1\ntopics:\n  {TOPIC}:\n    hot: 1d\n    archive:\n"
        f"      target: local:{root}\n    archive_retention: forever\n"
    )
    store = LocalArchive(root)
    for partition in (0, 1):
        for a in range(0, 30, 10):
            store.put_segment(segment_factory(a, a + 9, partition=partition))
    return policy, store


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["archive", *args])
    return result.exit_code, result.output


def test_an_anchored_archive_verifies_until_its_newest_segment_is_removed(
    tmp_path: Path, segment_factory: SegmentFactory
) -> None:
    policy, store = setup(tmp_path, segment_factory)
    heads = tmp_path / "elsewhere" / "heads.json"
    heads.parent.mkdir()

    code, _ = run("anchor", "--policy", str(policy), "--out", str(heads))
    assert code == 0
    anchored = json.loads(heads.read_text())
    assert [(h["partition"], h["last_offset"]) for h in anchored] == [(0, 29), (1, 29)]

    ok, output = run("verify", "--policy", str(policy), "--offline", "--anchor", str(heads))
    assert ok == 0, output

    newest = store.list_manifests(TOPIC, 1)[-1]
    store._delete(newest.segment_name)
    store._delete(newest.manifest_name)

    unanchored, _ = run("verify", "--policy", str(policy), "--offline")
    code, output = run(
        "verify", "--policy", str(policy), "--offline", "--anchor", str(heads), "--json"
    )
    assert unanchored == 0  # the shorter chain is consistent in itself
    assert code == 1
    (bad,) = [r for r in json.loads(output) if r["issues"]]
    assert bad["partition"] == 1
    assert "anchored chain head" in bad["issues"][0]


def test_anchor_refuses_a_broken_chain(tmp_path: Path, segment_factory: SegmentFactory) -> None:
    policy, store = setup(tmp_path, segment_factory)
    middle = store.list_manifests(TOPIC, 0)[1]
    store._delete(middle.segment_name)
    store._delete(middle.manifest_name)

    code, output = run("anchor", "--policy", str(policy))

    assert code == 1
    assert "chain is broken" in output
    assert "Traceback" not in output


def test_a_bad_anchor_file_is_one_clear_line(
    tmp_path: Path, segment_factory: SegmentFactory
) -> None:
    policy, _ = setup(tmp_path, segment_factory)
    bad = tmp_path / "heads.json"
    bad.write_text('{"not": "a list of heads"}')

    missing, missing_output = run(
        "verify", "--policy", str(policy), "--offline", "--anchor", str(tmp_path / "nope.json")
    )
    code, output = run("verify", "--policy", str(policy), "--offline", "--anchor", str(bad))

    assert (missing, code) == (1, 1)
    assert "cannot read the anchor file" in missing_output
    assert "not an anchor file" in output
    assert "Traceback" not in output + missing_output

"""Issue 14's done-when, against the real broker and a real processor worker.

(a) The canary test: runs of three data subjects carry canary values in every kind of
personal field the SDK and the decision path write (run inputs, step outputs, a step's
failure message, model-call tags, approval subjects and comments, run outputs), plus a
record the processor rejects (dead-lettered with its canary) and one with a malformed sealed
field. Then no canary is in clear in: any topic of the deployment (raw keys, values and
headers read with a plain read_committed consumer), the broker's log segment files, the
worker's RocksDB folder, the archive (files and decoded records), the worker's debug log
and this process's log, the dead letters. A control value in an untagged field is found in
the same places, so the search itself is shown to work.

(b) After ``runstate erase --subject S``: replay of S's runs succeeds and shows S's fields
as erased; no sealed value of S opens with the keys that remain (each is tried); the other
subjects' values still open. The query API opens fields for a principal with the
``personal-data`` role only (``masked`` for an auditor) and shows ``erased`` after.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from runstate.agents import DurableRun, HttpRunStateReader, approve
from runstate.crypto import PersonalDataCipher, QueryApiKeyLookup, parse_master_key
from runstate.crypto._kafka_store import KafkaKeyStore
from runstate.errors import DataKeyMissing, RunSuspended
from runstate.identity import hash_token
from runstate.retention.archiver import Archiver, ArchiverConfig
from runstate.retention.context import load_context
from runstate.runs.dead_letters import DeadLetterReason
from runstate.schemas.convert import decode_event, encode_event
from runstate.schemas.events import FailureReason, ModelCalled, StepCompleted
from runstate.schemas.sealed import is_sealed, parse_sealed, sealed_fields
from runstate.streams.broker import LocalBroker
from runstate.streams.reader import read_topic
from tests.polling import assert_eventually
from tests.retention.kafka_support import write_policy
from tests.workers import Deployment, wait_processed_all

pytestmark = pytest.mark.integration

MASTER = base64.b64encode(os.urandom(32)).decode()
CONTROL = "CONTROL-untagged-9b1f"  # in the agent name: never sealed, must be found
SUBJECTS = ("subj-a", "subj-b", None)  # None: the run id is the subject
RUNS_PER_SUBJECT = 3
TOKENS = {
    "auditor": "t-auditor-0123456789abc",
    "dpo": "t-dpo-0123456789abcdef",
    "agent": "t-agent-0123456789abcde",
    "ops": "t-ops-0123456789abcdefg",
}
ROLES = {
    "auditor": ["auditor"],
    "dpo": ["auditor", "personal-data"],
    "agent": ["agent", "approver"],
    "ops": ["operator"],
}


def canary(run_id: str, where: str) -> str:
    return f"CANARY-{where}-{run_id}@example.com"


def _identities(path: Path) -> Path:
    lines = []
    for name, token in TOKENS.items():
        lines += [
            f'[principals."{name}"]',
            f"roles = {json.dumps(ROLES[name])}",
            f'token_sha256 = "{hash_token(token)}"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _get(url: str, token: str) -> dict[str, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body: dict[str, Any] = json.loads(r.read())
        return body


def _post(url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        answer: dict[str, Any] = json.loads(r.read())
        return answer


def _files(root: Path) -> Iterator[bytes]:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            yield p.read_bytes()


def _found(blobs: Iterable[bytes], needles: Iterable[str]) -> set[str]:
    wanted = {n: n.encode() for n in needles}
    found: set[str] = set()
    for blob in blobs:
        found |= {n for n, b in wanted.items() if n not in found and b in blob}
    return found


@pytest.fixture
def deployment(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Deployment]:
    monkeypatch.setenv("RUNSTATE_TEST_WORKER_LOG_LEVEL", "debug")
    d = Deployment(kafka_bootstrap, unique_name("canary"), 2, tmp_path)
    d.ensure_topics()
    yield d
    d.close()


@pytest.mark.timeout(420)
def test_no_canary_in_clear_anywhere_then_erasure_leaves_the_rest_readable(
    deployment: Deployment,
    kafka_broker: LocalBroker | None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = deployment
    names = d.names
    env = {
        "RUNSTATE_MASTER_KEY": MASTER,
        "RUNSTATE_AUTH_FILE": str(_identities(tmp_path / "identities.toml")),
    }
    worker = d.worker("w1", env=env).start()
    worker.wait_ready(partitions=2, timeout_s=120)
    caplog.set_level(logging.DEBUG)

    # As an agent process has it: the keys it makes, and the worker's lookup for others.
    cipher = PersonalDataCipher(
        parse_master_key(MASTER),
        KafkaKeyStore(
            d.bootstrap,
            names.data_keys,
            lookup=QueryApiKeyLookup(worker.url, token=TOKENS["agent"]),
        ),
    )
    # No compression: a clear value would be visible in the broker's segment files.
    producer = d.producer("canary-sdk", sealer=cipher, kafka_config={"compression.type": "none"})
    reader = HttpRunStateReader(
        worker.url, bootstrap_servers=d.bootstrap, events_topic=names.events, token=TOKENS["agent"]
    )
    runs: dict[str, str] = {}  # run id -> data subject
    canaries: list[str] = []
    try:
        for subject in SUBJECTS:
            for i in range(RUNS_PER_SUBJECT):
                run_id = f"{subject or 'own'}-run-{i}"
                runs[run_id] = subject or run_id
                canaries += [
                    canary(run_id, w)
                    for w in ("in", "out", "fail", "tag", "subj", "comment", "end")
                ]
                run = DurableRun.start(
                    producer,
                    reader,
                    run_id=run_id,
                    agent=CONTROL,
                    input=json.dumps({"email": canary(run_id, "in")}),
                    prompt_version="p1",
                    owner="desk",
                    source="canary-test",
                    data_subject=subject,
                )
                run.step("lookup", lambda ctx, r=run_id: canary(r, "out"))
                run.record_model_call("m-1", "model-x", tags={"caller": canary(run_id, "tag")})
                with pytest.raises(RunSuspended):
                    run.await_approval(
                        "ok",
                        approver="agent",
                        subject={"who": canary(run_id, "subj")},
                        due=timedelta(hours=1),
                    )
                approve(producer, reader, run_id, by="agent", comment=canary(run_id, "comment"))
                again = DurableRun.attach(producer, reader, run_id)
                decision = again.await_approval(
                    "ok",
                    approver="agent",
                    subject={"who": canary(run_id, "subj")},
                    due=timedelta(hours=1),
                )
                assert decision.comment == canary(run_id, "comment")  # the SDK opens it
                assert again.step("lookup", lambda ctx: "not again") == canary(run_id, "out")
                if i == 0:
                    again.fail(FailureReason.OTHER, canary(run_id, "fail"))
                else:
                    again.complete(output_ref=canary(run_id, "end"))
        # A run cancelled through the worker's HTTP API: the reason is sealed there, for the
        # subject of the run's input.
        cancelled = "subj-b-cancelled"
        DurableRun.start(
            producer,
            reader,
            run_id=cancelled,
            agent=CONTROL,
            input=canary(cancelled, "in"),
            prompt_version="p1",
            owner="desk",
            source="canary-test",
            data_subject="subj-b",
        )
        runs[cancelled] = "subj-b"
        canaries += [canary(cancelled, "in"), canary(cancelled, "why")]
        done = _post(
            f"{worker.url}/runs/{cancelled}/cancel",
            TOKENS["ops"],
            {"reason": canary(cancelled, "why")},
        )
        assert done["status"] == "cancelled", done
        as_stored = _get(f"{worker.url}/runs/{cancelled}?personal=sealed", TOKENS["auditor"])
        assert parse_sealed(as_stored["cancel_reason"]).subject == "subj-b"
        assert cipher.open_value(as_stored["cancel_reason"], run_id=cancelled) == canary(
            cancelled, "why"
        )
        # A record the reducer rejects (a step that never started), sealed like any other...
        ghost = "subj-a-run-1"
        bad = producer.new_event(
            StepCompleted,
            ghost,
            data_subject="subj-a",
            step="ghost",
            attempt=1,
            output_ref=canary(ghost, "ghost"),
        )
        canaries.append(canary(ghost, "ghost"))
        producer.emit(bad)
        # ... and one whose sealed field is malformed (a broken writer, not the SDK).
        broken = ModelCalled.model_validate(
            {
                **bad.model_dump(exclude={"step", "attempt", "output_ref"}),
                "model_request_id": "m",
                "model": "x",
                "tags": {"t": "rsenc1.broken"},
                "event_id": "broken-1",
            }
        )
        producer._producer.produce(names.events, key=ghost.encode(), value=encode_event(broken))
        producer.flush()
        wait_processed_all(d, worker, timeout_s=120, token=TOKENS["auditor"])

        # The worker keeps its mirror of the key topic in its data dir.
        assert (worker.data_dir / "data-keys" / "CURRENT").is_file()
        # The query API: opened for the personal-data role, masked for an auditor.
        shown = _get(f"{worker.url}/runs/subj-a-run-2", TOKENS["dpo"])
        assert json.loads(shown["input"])["email"] == canary("subj-a-run-2", "in"), shown
        masked = _get(f"{worker.url}/runs/subj-a-run-2", TOKENS["auditor"])
        assert masked["input"] == "masked" and canary("subj-a-run-2", "in") not in json.dumps(
            masked
        )
        listing = _get(f"{worker.url}/runs?limit=50", TOKENS["auditor"])
        assert listing["count"] == len(runs) and not _found(
            [json.dumps(listing).encode()], canaries
        )

        # The dead letters: both bad records, with their reasons.
        dead = [r for r in read_topic(d.bootstrap, names.dead_letters)]
        text = b"".join(v or b"" for r in dead for _, v in r.headers)  # the reason is a header
        assert DeadLetterReason.REJECTED.value.encode() in text
        assert DeadLetterReason.BAD_CIPHERTEXT.value.encode() in text

        # Archive the events topic.
        policy = write_policy(
            tmp_path / "policy.yaml", names, target=f"local:{tmp_path / 'archive'}"
        )
        context = load_context(policy, bootstrap_servers=d.bootstrap, topic_prefix=names.prefix)
        store = context.store(names.events)
        Archiver(
            ArchiverConfig(d.bootstrap, names.events, f"{names.prefix}-arch", roll_records=40),
            store,
        ).run(once=True)
        archived = [
            b"".join([r.key or b"", r.value or b"", *(v or b"" for _, v in r.headers)])
            for p in store.partitions(names.events)
            for m in store.list_manifests(names.events, p)
            for r in store.read_segment(m)
        ]
        assert len(archived) > len(runs) * 10

        worker.stop()  # RocksDB files and the log complete on disk
        topics = [
            t
            for t in (
                names.events,
                names.runs_changelog,
                names.latest_state,
                names.state_changes,
                names.dead_letters,
                names.schemas,
                names.data_keys,
            )
        ]
        topic_bytes = {
            t: [
                b"".join([r.key or b"", r.value or b"", *(v or b"" for _, v in r.headers)])
                for r in read_topic(d.bootstrap, t)
            ]
            for t in topics
        }
        places: dict[str, list[bytes]] = {
            **{f"topic {t}": blobs for t, blobs in topic_bytes.items()},
            "rocksdb": list(_files(worker.data_dir)),
            "archive files": list(_files(tmp_path / "archive")),
            "archive records": archived,
            "worker log": [worker.log_path.read_bytes()],
            "test log": [caplog.text.encode()],
        }
        if kafka_broker is not None:
            segment_dirs = [
                p for p in kafka_broker.config.data_dir.rglob(f"{names.prefix}.*") if p.is_dir()
            ]
            assert segment_dirs
            places["broker segments"] = [b for p in segment_dirs for b in _files(p)]
        for place, blobs in places.items():
            assert not _found(blobs, canaries), f"canary in clear in {place}"
        # The search works: the untagged control value is found where it is kept.
        must_hold_control = [
            "topic " + names.events,
            "archive records",
            "broker segments",
            "topic " + names.runs_changelog,
            "rocksdb",
        ]
        for place in must_hold_control:
            if place in places:
                assert _found(places[place], [CONTROL]), f"control value not found in {place}"

        # (b) Erase subj-a.
        erased = _cli(d, tmp_path, "erase", "--subject", "subj-a", "--by", "dpo")
        assert erased.returncode == 0, erased.stderr
        fresh = PersonalDataCipher(
            parse_master_key(MASTER),
            KafkaKeyStore(d.bootstrap, names.data_keys, mirror=tmp_path / "fresh-mirror"),
        )
        sealed_by_subject: dict[str, list[tuple[str, str]]] = {}
        for raw in read_topic(d.bootstrap, names.events):
            try:
                event = decode_event(raw.value or b"")
            except Exception:
                continue
            for name in sealed_fields(event.event_type):
                value = getattr(event, name)
                for v in value.values() if isinstance(value, dict) else [value]:
                    if not is_sealed(v):
                        continue
                    try:
                        subject = parse_sealed(v).subject
                    except ValueError:
                        continue  # the malformed one (dead-lettered)
                    sealed_by_subject.setdefault(subject, []).append((v, event.run_id))
        assert {"subj-a", "subj-b"} <= set(sealed_by_subject)
        remaining = _remaining_data_keys(d, fresh)
        assert remaining and not any(s == "subj-a" for s, _ in remaining)
        for text, run_id in sealed_by_subject["subj-a"]:
            with pytest.raises(DataKeyMissing):
                fresh.open_value(text, run_id=run_id)
            sealed = parse_sealed(text)
            for _subject, key in remaining:  # no other key opens it either
                with pytest.raises(InvalidTag):
                    AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, sealed.aad(run_id))
        opened = [fresh.open_value(t, run_id=r) for t, r in sealed_by_subject["subj-b"]]
        assert canary("subj-b-run-2", "end") in opened
        assert canary("subj-b-run-1", "comment") in opened

        # Replay of an erased run: succeeds, the rest readable, the personal fields erased.
        replayed = _cli(
            d,
            tmp_path,
            "replay",
            "--run",
            "subj-a-run-2",
            "--json",
            "--history",
            "--no-progress",
            "--policy",
            str(policy),
        )
        assert replayed.returncode == 0, replayed.stderr
        body = json.loads(replayed.stdout)
        assert body["state"]["status"] == "completed" and body["state"]["agent"] == CONTROL
        assert body["state"]["input"] == "erased" and body["state"]["output_ref"] == "erased"
        details = " ".join(e["detail"] for e in body["timeline"])
        assert "output=erased" in details and "CANARY" not in replayed.stdout
        other = json.loads(
            _cli(
                d,
                tmp_path,
                "replay",
                "--run",
                "subj-b-run-2",
                "--json",
                "--no-progress",
                "--policy",
                str(policy),
            ).stdout
        )
        assert other["output_ref"] == canary("subj-b-run-2", "end")
        without_key = _cli(
            d,
            tmp_path,
            "replay",
            "--run",
            "subj-b-run-2",
            "--json",
            "--no-progress",
            "--policy",
            str(policy),
            master=False,
        )
        assert json.loads(without_key.stdout)["output_ref"] == "masked"

        # The query API shows erased (once its key store reads the tombstones).
        worker.start().wait_ready(partitions=2, timeout_s=120)

        def erased_in_api() -> bool:
            got = _get(f"{worker.url}/runs/subj-a-run-2", TOKENS["dpo"])
            assert got["input"] == "erased" and got["output_ref"] == "erased", got
            still = _get(f"{worker.url}/runs/subj-b-run-2", TOKENS["dpo"])
            assert still["output_ref"] == canary("subj-b-run-2", "end"), still
            return True

        assert_eventually(erased_in_api, timeout_s=60, what="erased in the query API")
    finally:
        producer.close()


def _remaining_data_keys(d: Deployment, cipher: PersonalDataCipher) -> list[tuple[str, bytes]]:
    """Every data key still in the key topic, unwrapped: (subject, key)."""
    live: dict[bytes, bytes | None] = {}
    for r in read_topic(d.bootstrap, d.names.data_keys):
        assert r.key is not None
        live[r.key] = r.value
    from runstate.crypto import WrappedKey

    keys = [WrappedKey.from_json(v) for v in live.values() if v is not None]
    return [(k.subject, cipher.keys.unwrap(k.wrapped)) for k in keys]


def _cli(
    d: Deployment, cwd: Path, *args: str, master: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RUNSTATE_MASTER_KEY", "RUNSTATE_KEY_STORE")
    }
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"),
        RUNSTATE_BOOTSTRAP_SERVERS=d.bootstrap,
        RUNSTATE_TOPIC_PREFIX=d.prefix,
        COLUMNS="400",
    )
    if master:
        env["RUNSTATE_MASTER_KEY"] = MASTER
    return subprocess.run(
        [sys.executable, "-c", "from runstate.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
        check=False,
    )

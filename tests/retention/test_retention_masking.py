"""Personal-data masking: the pure event masker, and its lift to archived records.

The codec is replaced by a tiny JSON one with the single-object header, so these tests pin
the contract the real codec will plug into (decode -> mask -> re-encode with the original's
writer schema) without depending on it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from runstate.errors import MaskKeyError
from runstate.retention import (
    ArchivedRecord,
    MaskKeys,
    build_segment,
    event_masker,
    iter_segment,
    mask_key_id,
    mask_keys_from_settings,
    mask_text,
    masker_for_topic,
    parse_mask_keys,
    parse_policy,
    record_masker,
)
from runstate.settings import Settings

from .support import event_value

POLICY = parse_policy(
    """
topics:
  events:
    hot: 7d
    personal_data:
      RunStarted: {input: mask, owner: mask, tenant: drop, agent: keep}
      StepFailed: {message: drop}
      ApprovalGranted: {comment: mask}
  quiet:
    hot: 7d
    personal_data:
      RunStarted: {input: keep}
"""
)

RUN_STARTED: dict[str, Any] = {
    "event_id": "e1",
    "run_id": "r1",
    "occurred_at": 1,
    "producer": "sdk",
    "agent": "support-bot",
    "input": '{"email": "ada@example.com"}',
    "prompt_version": "v3",
    "owner": "ada",
    "source": "web",
    "tenant": "acme",
}


SECRET_1 = base64.b64encode(b"1" * 32).decode()
SECRET_2 = base64.b64encode(b"2" * 32).decode()
KEYS = parse_mask_keys(f"k1:{SECRET_1}")


def test_mask_text_is_keyed_stable_and_keeps_the_type() -> None:
    other = parse_mask_keys(f"k2:{SECRET_2}")
    masked = mask_text("ada", KEYS)

    assert masked == mask_text("ada", KEYS) and masked.startswith("mask:k1:")
    assert len(masked) == len("mask:k1:") + 32
    assert mask_text(b"ada", KEYS) == masked.encode()
    assert mask_text("ada", KEYS) != mask_text("bob", KEYS)
    assert mask_text("ada", other) != masked and mask_text("ada", other).startswith("mask:k2:")
    assert mask_key_id(masked) == "k1" and mask_key_id(masked.encode()) == "k1"
    assert mask_key_id("ada") is None and mask_key_id("sha256:0123456789abcdef") is None


def test_an_unsalted_hash_of_the_value_appears_nowhere_in_the_mask() -> None:
    for value in ("intern.eve", "+77011234567", "cfo@acme.example"):
        masked = mask_text(value, KEYS)
        digest = hashlib.sha256(value.encode()).hexdigest()
        assert digest[:16] not in masked and digest[-16:] not in masked


def test_new_masks_use_the_first_key_and_old_ones_keep_their_id() -> None:
    rotated = parse_mask_keys(f"k2:{SECRET_2}, k1:{SECRET_1}")
    old = mask_text("ada", KEYS)

    assert rotated.ids == ("k2", "k1") and rotated.current.key_id == "k2"
    assert mask_key_id(mask_text("ada", rotated)) == "k2"
    key = rotated.get(mask_key_id(old) or "")
    assert key is not None and mask_text("ada", MaskKeys((key,))) == old


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is empty"),
        ("k1", "<id>:<base64 secret>"),
        ("k 1:" + SECRET_1, "<id>:<base64 secret>"),
        ("k1:not base64!", "not base64"),
        ("k1:" + base64.b64encode(b"short").decode(), "needs at least 16"),
        (f"k1:{SECRET_1},k1:{SECRET_2}", "must differ"),
    ],
)
def test_malformed_keys_are_refused_without_echoing_a_secret(text: str, says: str) -> None:
    with pytest.raises(MaskKeyError, match=says) as caught:
        parse_mask_keys(text)
    assert SECRET_1 not in str(caught.value) and SECRET_2 not in str(caught.value)


def test_masking_without_a_key_refuses_with_how_to_set_one() -> None:
    with pytest.raises(MaskKeyError, match="RUNSTATE_MASK_KEYS=k1:") as caught:
        event_masker(POLICY.topic("events"), keys=None)
    assert "RunStarted.input" in str(caught.value)
    drop_only = parse_policy("topics: {t: {hot: 1d, personal_data: {StepFailed: {message: drop}}}}")
    assert event_masker(drop_only.topic("t"), keys=None) is not None  # drop needs no key


def test_keys_come_from_the_environment_or_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RUNSTATE_MASK_KEYS_FILE", raising=False)
    monkeypatch.setenv("RUNSTATE_MASK_KEYS", f"k2:{SECRET_2},k1:{SECRET_1}")
    settings = Settings(_env_file=None)
    keys = mask_keys_from_settings(settings)

    assert keys is not None and keys.ids == ("k2", "k1")
    assert SECRET_2 not in repr(settings) and SECRET_2 not in repr(keys)
    path = tmp_path / "mask-keys"
    path.write_text(f"k1:{SECRET_1}\n")
    monkeypatch.delenv("RUNSTATE_MASK_KEYS")
    monkeypatch.setenv("RUNSTATE_MASK_KEYS_FILE", str(path))
    from_file = mask_keys_from_settings(Settings(_env_file=None))
    assert from_file is not None and mask_text("ada", from_file) == mask_text("ada", KEYS)
    monkeypatch.delenv("RUNSTATE_MASK_KEYS_FILE")
    assert mask_keys_from_settings(Settings(_env_file=None)) is None


def test_mask_drop_and_keep() -> None:
    masker = event_masker(POLICY.topic("events"), keys=KEYS)
    assert masker is not None

    masked = masker("RunStarted", RUN_STARTED)

    assert masked["input"] == mask_text(RUN_STARTED["input"], KEYS)
    assert masked["owner"] == mask_text("ada", KEYS)
    assert masked["tenant"] is None
    assert masked["agent"] == "support-bot"
    assert {k: v for k, v in masked.items() if k not in {"input", "owner", "tenant"}} == {
        k: v for k, v in RUN_STARTED.items() if k not in {"input", "owner", "tenant"}
    }
    assert RUN_STARTED["owner"] == "ada"  # the input is not modified


def test_masking_edge_cases() -> None:
    masker = event_masker(POLICY.topic("events"), keys=KEYS)
    assert masker is not None

    assert masker("runstate.events.StepFailed", {"message": "ada's card failed"}) == {"message": ""}
    assert masker("ApprovalGranted", {"comment": None}) == {"comment": None}
    assert masker("RunStarted", {"input": "x"}) == {"input": mask_text("x", KEYS)}  # older version
    assert masker("StepStarted", {"step": "s"}) == {"step": "s"}  # no rules for the type


def test_no_rules_means_no_masker() -> None:
    assert masker_for_topic(POLICY, "quiet", keys=None) is None
    assert event_masker(parse_policy("topics: {t: {hot: 1d}}").topic("t"), keys=None) is None


def fake_decode(value: bytes) -> tuple[str, dict[str, Any]]:
    document = json.loads(value[10:])
    return document.pop("type"), document


def fake_encode(event_type: str, fields: dict[str, Any], *, original: bytes) -> bytes:
    return original[:10] + json.dumps({"type": event_type, **fields}).encode()


def encoded(event_type: str, fields: dict[str, Any], fingerprint: bytes = b"\x07" * 8) -> bytes:
    return event_value(fingerprint, json.dumps({"type": event_type, **fields}).encode())


def test_record_masker_re_encodes_with_the_original_schema() -> None:
    masker = masker_for_topic(POLICY, "events", keys=KEYS)
    assert masker is not None
    mask = record_masker(masker, decode=fake_decode, encode=fake_encode)
    record = ArchivedRecord(5, 1000, b"r1", encoded("RunStarted", RUN_STARTED), (("h", b"v"),))

    masked = mask(record)

    assert masked.value is not None and record.value is not None
    assert masked.value[:10] == record.value[:10]
    assert fake_decode(masked.value)[1]["owner"] == mask_text("ada", KEYS)
    assert dataclasses.replace(masked, value=record.value) == record


def test_record_masker_leaves_untouched_records_byte_identical() -> None:
    masker = masker_for_topic(POLICY, "events", keys=KEYS)
    assert masker is not None
    calls: list[str] = []

    def encode(event_type: str, fields: dict[str, Any], *, original: bytes) -> bytes:
        calls.append(event_type)
        return fake_encode(event_type, fields, original=original)

    mask = record_masker(masker, decode=fake_decode, encode=encode)
    step = ArchivedRecord(1, 1, b"r", encoded("StepStarted", {"step": "s"}))
    tombstone = ArchivedRecord(2, 1, b"r", None)

    assert mask(step) is step
    assert mask(tombstone) is tombstone
    assert calls == []


def test_record_masker_fails_closed_on_undecodable_values() -> None:
    masker = masker_for_topic(POLICY, "events", keys=KEYS)
    assert masker is not None
    mask = record_masker(masker, decode=fake_decode, encode=fake_encode)

    with pytest.raises(json.JSONDecodeError):
        mask(ArchivedRecord(1, 1, None, b"\xc3\x01" + b"\x00" * 8 + b"not json"))


def test_masked_segment_holds_no_personal_data() -> None:
    masker = masker_for_topic(POLICY, "events", keys=KEYS)
    assert masker is not None
    records = [
        ArchivedRecord(o, 1000 + o, b"r1", encoded("RunStarted", RUN_STARTED, bytes([o]) * 8))
        for o in range(3)
    ]

    segment = build_segment(
        "events",
        0,
        records,
        mask=record_masker(masker, decode=fake_decode, encode=fake_encode),
    )

    stored = list(iter_segment(segment.data))
    assert all(b"ada" not in (r.value or b"") for r in stored)
    assert all(b"acme" not in (r.value or b"") for r in stored)
    assert segment.manifest.writer_fingerprints == [
        "0000000000000000",
        "0101010101010101",
        "0202020202020202",
    ]

"""Personal-data masking: the pure event masker, and its lift to archived records.

The codec is replaced by a tiny JSON one with the single-object header, so these tests pin
the contract the real codec will plug into (decode -> mask -> re-encode with the original's
writer schema) without depending on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest

from runstate.retention import (
    ArchivedRecord,
    build_segment,
    event_masker,
    iter_segment,
    mask_text,
    masker_for_topic,
    parse_policy,
    record_masker,
)

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


def test_mask_text_is_stable_and_keeps_the_type() -> None:
    digest = hashlib.sha256(b"ada").hexdigest()[:16]

    assert mask_text("ada") == f"sha256:{digest}" == mask_text("ada")
    assert mask_text(b"ada") == f"sha256:{digest}".encode()
    assert mask_text("ada") != mask_text("bob")


def test_mask_drop_and_keep() -> None:
    masker = event_masker(POLICY.topic("events"))
    assert masker is not None

    masked = masker("RunStarted", RUN_STARTED)

    assert masked["input"] == mask_text(RUN_STARTED["input"])
    assert masked["owner"] == mask_text("ada")
    assert masked["tenant"] is None
    assert masked["agent"] == "support-bot"
    assert {k: v for k, v in masked.items() if k not in {"input", "owner", "tenant"}} == {
        k: v for k, v in RUN_STARTED.items() if k not in {"input", "owner", "tenant"}
    }
    assert RUN_STARTED["owner"] == "ada"  # the input is not modified


def test_masking_edge_cases() -> None:
    masker = event_masker(POLICY.topic("events"))
    assert masker is not None

    assert masker("runstate.events.StepFailed", {"message": "ada's card failed"}) == {"message": ""}
    assert masker("ApprovalGranted", {"comment": None}) == {"comment": None}
    assert masker("RunStarted", {"input": "x"}) == {"input": mask_text("x")}  # older version
    assert masker("StepStarted", {"step": "s"}) == {"step": "s"}  # no rules for the type


def test_no_rules_means_no_masker() -> None:
    assert masker_for_topic(POLICY, "quiet") is None
    assert event_masker(parse_policy("topics: {t: {hot: 1d}}").topic("t")) is None


def fake_decode(value: bytes) -> tuple[str, dict[str, Any]]:
    document = json.loads(value[10:])
    return document.pop("type"), document


def fake_encode(event_type: str, fields: dict[str, Any], *, original: bytes) -> bytes:
    return original[:10] + json.dumps({"type": event_type, **fields}).encode()


def encoded(event_type: str, fields: dict[str, Any], fingerprint: bytes = b"\x07" * 8) -> bytes:
    return event_value(fingerprint, json.dumps({"type": event_type, **fields}).encode())


def test_record_masker_re_encodes_with_the_original_schema() -> None:
    masker = masker_for_topic(POLICY, "events")
    assert masker is not None
    mask = record_masker(masker, decode=fake_decode, encode=fake_encode)
    record = ArchivedRecord(5, 1000, b"r1", encoded("RunStarted", RUN_STARTED), (("h", b"v"),))

    masked = mask(record)

    assert masked.value is not None and record.value is not None
    assert masked.value[:10] == record.value[:10]
    assert fake_decode(masked.value)[1]["owner"] == mask_text("ada")
    assert dataclasses.replace(masked, value=record.value) == record


def test_record_masker_leaves_untouched_records_byte_identical() -> None:
    masker = masker_for_topic(POLICY, "events")
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
    masker = masker_for_topic(POLICY, "events")
    assert masker is not None
    mask = record_masker(masker, decode=fake_decode, encode=fake_encode)

    with pytest.raises(json.JSONDecodeError):
        mask(ArchivedRecord(1, 1, None, b"\xc3\x01" + b"\x00" * 8 + b"not json"))


def test_masked_segment_holds_no_personal_data() -> None:
    masker = masker_for_topic(POLICY, "events")
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

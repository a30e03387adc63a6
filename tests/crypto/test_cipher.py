"""The crypto module on its own: sealing, opening, tampering, erasure, key stores."""

from __future__ import annotations

import base64
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runstate.crypto import (
    FileKeyStore,
    LocalKeyManager,
    PersonalDataCipher,
    key_manager_from_settings,
    parse_master_key,
    reveal,
    shown_value,
)
from runstate.errors import DataKeyMissing, MasterKeyError, TamperedValue
from runstate.schemas.events import ModelCalled, RunStarted, StepCompleted
from runstate.schemas.sealed import (
    ERASED,
    MASKED,
    PRINCIPAL_FIELDS,
    format_sealed,
    is_sealed,
    malformed_sealed,
    parse_sealed,
    sealed_fields,
)
from runstate.settings import Settings


def _cipher(tmp_path: Path, master: bytes | None = None) -> PersonalDataCipher:
    return PersonalDataCipher(LocalKeyManager(master or os.urandom(32)), FileKeyStore(tmp_path))


def test_round_trip_and_binding(tmp_path: Path) -> None:
    c = _cipher(tmp_path)
    text = c.seal_value("ada@example.com", subject="cust-1", run_id="r1", field="input")
    assert is_sealed(text) and "ada@example.com" not in text
    sealed = parse_sealed(text)
    assert (sealed.subject, sealed.field) == ("cust-1", "input")
    assert c.open_value(text, run_id="r1") == "ada@example.com"
    # Same subject, same key version; a fresh nonce each time.
    again = c.seal_value("ada@example.com", subject="cust-1", run_id="r1", field="input")
    assert again != text and parse_sealed(again).key_version == sealed.key_version
    # Sealed twice is sealed once.
    assert c.seal_value(text, subject="other", run_id="r1", field="input") == text


def test_wrong_run_field_or_subject_fails(tmp_path: Path) -> None:
    c = _cipher(tmp_path)
    text = c.seal_value("secret", subject="s", run_id="r1", field="input")
    with pytest.raises(TamperedValue, match="fails authentication"):
        c.open_value(text, run_id="r2")  # copied to another run (wrong AAD)
    s = parse_sealed(text)
    moved = format_sealed(s.subject, s.key_version, "comment", s.nonce + s.ciphertext)
    with pytest.raises(TamperedValue):
        c.open_value(moved, run_id="r1")  # claimed for another field
    c.seal_value("x", subject="t", run_id="r1", field="input")  # t gets a key too
    other = c.store.current("t")
    assert other is not None
    resubjected = format_sealed("t", other.version, s.field, s.nonce + s.ciphertext)
    with pytest.raises(TamperedValue):
        c.open_value(resubjected, run_id="r1")


@pytest.mark.parametrize("position", [0, 5, 12, 20, -1])
def test_flipped_byte_is_tampering(tmp_path: Path, position: int) -> None:
    c = _cipher(tmp_path)
    s = parse_sealed(c.seal_value("secret value", subject="s", run_id="r", field="input"))
    body = bytearray(s.nonce + s.ciphertext)
    body[position] ^= 0x01
    with pytest.raises(TamperedValue):
        c.open_value(format_sealed(s.subject, s.key_version, s.field, bytes(body)), run_id="r")


@pytest.mark.parametrize(
    "text",
    [
        "rsenc1.",
        "rsenc1.a.b.c",
        "rsenc1.YQ.zz.input.AAAA",
        "rsenc1.YQ.ab.in-put." + "A" * 40,
        "rsenc1.YQ.ab.input.AAAA",
        "rsenc1..ab.input." + "A" * 40,
    ],
)
def test_malformed_is_tampering(tmp_path: Path, text: str) -> None:
    with pytest.raises(TamperedValue, match="malformed"):
        _cipher(tmp_path).open_value(text, run_id="r")


def test_unknown_key_version_and_erased_key(tmp_path: Path) -> None:
    c = _cipher(tmp_path)
    text = c.seal_value("v", subject="s", run_id="r", field="input")
    s = parse_sealed(text)
    unknown = format_sealed("s", "0badc0de", s.field, s.nonce + s.ciphertext)
    with pytest.raises(DataKeyMissing, match="0badc0de"):
        c.open_value(unknown, run_id="r")
    keep = c.seal_value("kept", subject="t", run_id="r2", field="input")
    assert c.store.erase("s") == (s.key_version,)
    assert c.store.erase("s") == ()
    with pytest.raises(DataKeyMissing, match="erased"):
        c.open_value(text, run_id="r")
    # A new process with the same master key and store: s stays gone, t opens.
    fresh = PersonalDataCipher(c.keys, FileKeyStore(tmp_path))
    with pytest.raises(DataKeyMissing):
        fresh.open_value(text, run_id="r")
    assert fresh.open_value(keep, run_id="r2") == "kept"
    # The erased subject gets a new key version for new values; old ones stay erased.
    new = c.seal_value("after", subject="s", run_id="r3", field="input")
    assert parse_sealed(new).key_version != s.key_version


def test_another_master_key_opens_nothing(tmp_path: Path) -> None:
    text = _cipher(tmp_path).seal_value("v", subject="s", run_id="r", field="input")
    with pytest.raises(MasterKeyError, match="wrapped by master key"):
        _cipher(tmp_path).open_value(text, run_id="r")


def test_store_holds_only_wrapped_keys(tmp_path: Path) -> None:
    c = _cipher(tmp_path)
    c.seal_value("v", subject="s", run_id="r", field="input")
    stored = c.store.current("s")
    assert stored is not None and len(stored.wrapped) == 40  # AES key wrap of 32 bytes
    data_key = c.keys.unwrap(stored.wrapped)
    files = [p for p in tmp_path.iterdir() if p.suffix == ".json"]
    assert len(files) == 1
    body = files[0].read_bytes()
    assert data_key not in body and base64.b64encode(data_key) not in body
    assert base64.b64encode(stored.wrapped) in body
    assert oct(files[0].stat().st_mode & 0o777) == "0o600"


def test_concurrent_first_keys_are_both_kept(tmp_path: Path) -> None:
    master = LocalKeyManager(os.urandom(32))
    ciphers = [PersonalDataCipher(master, FileKeyStore(tmp_path)) for _ in range(4)]
    out: list[str] = []
    threads = [
        threading.Thread(
            target=lambda c=c: out.append(c.seal_value("v", subject="s", run_id="r", field="f"))
        )
        for c in ciphers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    reader = PersonalDataCipher(master, FileKeyStore(tmp_path))
    assert [reader.open_value(t, run_id="r") for t in out] == ["v"] * 4


def test_seal_event_seals_tagged_fields_only(tmp_path: Path) -> None:
    c = _cipher(tmp_path)
    now = datetime.now(UTC)
    started = RunStarted(
        event_id="e",
        run_id="r",
        occurred_at=now,
        producer="p",
        agent="a",
        input='{"email": "ada@example.com"}',
        prompt_version="v1",
        owner="alice",
        source="s",
    )
    sealed = c.seal(started, "cust-9")
    assert is_sealed(sealed.input) and sealed.owner == "alice" and sealed.agent == "a"
    assert c.open_value(sealed.input, run_id="r") == started.input
    called = ModelCalled(
        event_id="e",
        run_id="r",
        occurred_at=now,
        producer="p",
        step="s",
        model_request_id="q",
        model="m",
        tags={"who": "ada"},
    )
    assert is_sealed(c.seal(called, "cust-9").tags["who"])
    done = StepCompleted(
        event_id="e", run_id="r", occurred_at=now, producer="p", step="s", attempt=1
    )
    assert c.seal(done, "cust-9") == done  # output_ref None stays None


def test_sealed_field_table() -> None:
    assert {"input"} <= sealed_fields("RunStarted")
    assert sealed_fields("StepCompleted") == {"output_ref"}
    assert {"comment", "override_reason"} == sealed_fields("ApprovalGranted")
    assert sealed_fields("RunClaimed") == frozenset()
    for name in ("RunStarted", "ApprovalRequested", "ApprovalGranted", "RunCancelled"):
        assert not sealed_fields(name) & PRINCIPAL_FIELDS
    assert malformed_sealed("StepCompleted", {"output_ref": "rsenc1.broken"})
    assert malformed_sealed("StepCompleted", {"output_ref": "clear text"}) is None


def test_reveal_opens_masks_and_erases(tmp_path: Path) -> None:
    c = _cipher(tmp_path)
    a = c.seal_value("alpha", subject="a", run_id="r1", field="input")
    b = c.seal_value("beta", subject="b", run_id="r2", field="input")
    tree = {"runs": [{"run_id": "r1", "input": a, "n": 1}, {"run_id": "r2", "x": [b]}]}
    assert reveal(tree, shown_value(c, allowed=True)) == {
        "runs": [{"run_id": "r1", "input": "alpha", "n": 1}, {"run_id": "r2", "x": ["beta"]}]
    }
    masked = reveal(tree, shown_value(c, allowed=False))
    assert masked["runs"][0]["input"] == MASKED and masked["runs"][1]["x"] == [MASKED]
    c.store.erase("a")
    shown = reveal(tree, shown_value(c, allowed=True))
    assert shown["runs"][0]["input"] == ERASED and shown["runs"][1]["x"] == ["beta"]
    assert reveal(tree, shown_value(c, allowed=False))["runs"][0]["input"] == ERASED
    assert reveal(tree, shown_value(None, allowed=True))["runs"][1]["x"] == [MASKED]


def test_master_key_settings(tmp_path: Path) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    assert key_manager_from_settings(Settings(master_key=key)) is not None
    assert key_manager_from_settings(Settings()) is None
    with pytest.raises(MasterKeyError, match="no master key"):
        key_manager_from_settings(Settings(), required=True)
    with pytest.raises(MasterKeyError, match="not base64"):
        parse_master_key("not base64!")
    with pytest.raises(MasterKeyError, match="16 bytes, needs 32"):
        parse_master_key(base64.b64encode(os.urandom(16)).decode())
    f = tmp_path / "mk"
    f.write_text(key + "\n")
    m = key_manager_from_settings(Settings(master_key_file=f))
    assert m is not None and key not in repr(m)
    with pytest.raises(MasterKeyError, match="not both"):
        key_manager_from_settings(Settings(master_key=key, master_key_file=f))
    with pytest.raises(MasterKeyError, match="cannot read"):
        key_manager_from_settings(Settings(master_key_file=tmp_path / "missing"))

"""The query API and sealed personal fields: opened for the ``personal-data`` role (and
admins), ``masked`` for other principals, ``erased`` once the subject's key is gone, as
stored with ``personal=sealed``; the same through a forwarding worker and in listings. And
the key lookup an agent process opens others' values with: ``GET /data-keys/{s}/{v}``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstate.crypto import (
    FileKeyStore,
    LocalKeyManager,
    PersonalDataCipher,
    QueryApiKeyLookup,
    WrappedKey,
    data_key_path,
)
from runstate.errors import QueryError
from runstate.identity import FileDirectory, Principal, Role, hash_token
from runstate.schemas.sealed import is_sealed
from tests.runs.conftest import RunStateFactory
from tests.runtime.test_query_api import Group, _group, _owner
from tests.runtime.test_query_api_auth import _get

TOKENS = {
    "eve": "t-eve-auditor-0123456",
    "dpo": "t-dpo-personal-012345",
    "root": "t-root-admin-01234567",
    "bot": "t-bot-agent-012345678",
}
DIRECTORY = FileDirectory(
    [
        (Principal("eve", frozenset({Role.AUDITOR})), hash_token(TOKENS["eve"])),
        (
            Principal("dpo", frozenset({Role.AUDITOR, Role.PERSONAL_DATA})),
            hash_token(TOKENS["dpo"]),
        ),
        (Principal("root", frozenset({Role.ADMIN})), hash_token(TOKENS["root"])),
        (Principal("bot", frozenset({Role.AGENT})), hash_token(TOKENS["bot"])),
    ]
)
EMAIL = "ada@example.com"


@pytest.fixture
def cipher(tmp_path: Path) -> PersonalDataCipher:
    return PersonalDataCipher(LocalKeyManager(os.urandom(32)), FileKeyStore(tmp_path))


@pytest.fixture
def group(cipher: PersonalDataCipher) -> Iterator[Group]:
    with _group("127.0.0.1", directory=DIRECTORY, cipher=cipher) as g:
        yield g


def _sealed_runs(
    group: Group, make: RunStateFactory, cipher: PersonalDataCipher, n: int
) -> list[str]:
    ids = []
    for i in range(n):
        run_id = f"run-{i}"
        subject = "cust-a" if i % 2 else "cust-b"
        sealed = cipher.seal_value(
            json.dumps({"email": EMAIL}), subject=subject, run_id=run_id, field="input"
        )
        _owner(group, run_id).put(make(run_id=run_id, input=sealed), offset=i)
        ids.append(run_id)
    return ids


def test_who_sees_what(
    group: Group, run_state_factory: RunStateFactory, cipher: PersonalDataCipher
) -> None:
    ids = _sealed_runs(group, run_state_factory, cipher, 6)
    for run_id in ids:
        for worker in (0, 1):  # one of them forwards to the owner
            url = f"{group.url(worker)}/runs/{run_id}"
            for who in ("dpo", "root"):
                status, body = _get(url, TOKENS[who])
                assert status == 200 and json.loads(body["input"]) == {"email": EMAIL}, body
            status, body = _get(url, TOKENS["eve"])
            assert (status, body["input"]) == (200, "masked")
            status, body = _get(url + "?personal=sealed", TOKENS["eve"])
            assert is_sealed(body["input"])
    status, listing = _get(f"{group.url(0)}/runs?limit=50", TOKENS["eve"])
    assert status == 200 and listing["count"] == 6 and EMAIL not in json.dumps(listing)
    status, listing = _get(f"{group.url(0)}/runs?limit=50", TOKENS["dpo"])
    assert [json.loads(r["input"]) for r in listing["runs"]] == [{"email": EMAIL}] * 6

    cipher.store.erase("cust-a")
    for run_id in ids:
        erased = int(run_id[-1]) % 2 == 1
        for who in ("dpo", "eve"):
            status, body = _get(f"{group.url(0)}/runs/{run_id}", TOKENS[who])
            if erased:
                assert body["input"] == "erased", (who, body)
            else:
                assert body["input"] == ("masked" if who == "eve" else json.dumps({"email": EMAIL}))


def test_without_the_master_key_everyone_gets_masked(
    run_state_factory: RunStateFactory, cipher: PersonalDataCipher
) -> None:
    with _group("127.0.0.1", directory=DIRECTORY) as g:
        _sealed_runs(g, run_state_factory, cipher, 2)
        for who in TOKENS:
            status, body = _get(f"{g.url(0)}/runs/run-1", TOKENS[who])
            assert (status, body["input"]) == (200, "masked")


def test_data_key_lookup_for_agents_only(group: Group, cipher: PersonalDataCipher) -> None:
    subject = "cust/42 ü"  # a slash and more: percent-encoded in the path
    cipher.seal_value(EMAIL, subject=subject, run_id="r", field="input")
    stored = cipher.store.current(subject)
    assert stored is not None
    path = data_key_path(subject, stored.version)
    for who in ("bot", "dpo", "root"):
        status, body = _get(group.url(1) + path, TOKENS[who])
        assert status == 200 and WrappedKey.from_json(body) == stored, (who, body)
    status, body = _get(group.url(0) + path, TOKENS["eve"])  # an auditor: no keys
    assert (status, body["error"]) == (403, "not_authorized")
    assert _get(group.url(0) + path)[0] == 401
    status, body = _get(group.url(0) + data_key_path(subject, "0badc0de"), TOKENS["bot"])
    assert (status, body["error"]) == (404, "unknown_key")
    # The SDK's lookup: the key, None once erased; a refused principal is an error.
    lookup = QueryApiKeyLookup(group.url(0), token=TOKENS["bot"])
    try:
        assert lookup.lookup(subject, stored.version) == stored
        cipher.store.erase(subject)
        assert lookup.lookup(subject, stored.version) is None
    finally:
        lookup.close()
    refused = QueryApiKeyLookup(group.url(0), token=TOKENS["eve"])
    try:
        with pytest.raises(QueryError, match="HTTP 403"):
            refused.lookup(subject, stored.version)
    finally:
        refused.close()


def test_data_key_lookup_without_a_key_store(run_state_factory: RunStateFactory) -> None:
    with _group("127.0.0.1", directory=DIRECTORY) as g:
        status, body = _get(g.url(0) + data_key_path("s", "01"), TOKENS["bot"])
        assert (status, body["error"]) == (503, "no_key_store")

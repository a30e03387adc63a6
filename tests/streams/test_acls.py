"""The role table: what each principal may do (the broker enforces it: test_secure_broker)."""

from __future__ import annotations

from runstate.streams.acls import ROLES, Grant, acl_bindings, grants
from runstate.streams.topics import TopicNames

NAMES = TopicNames("acme")


def allowed(role: str) -> set[tuple[str, str, str]]:
    return {(g.resource, g.name, g.operation) for g in grants(NAMES) if g.role == role}


def test_only_the_agent_and_the_console_write_events() -> None:
    writers = {g.role for g in grants(NAMES) if (g.name, g.operation) == (NAMES.events, "WRITE")}
    assert writers == {"agent", "console"}


def test_only_the_processor_touches_the_changelog() -> None:
    roles = {g.role for g in grants(NAMES) if g.name == NAMES.runs_changelog}
    assert roles == {"processor"}


def test_the_archiver_reads_and_trims_but_writes_nothing() -> None:
    operations = {op for _, _, op in allowed("archiver")}
    assert "WRITE" not in operations and "IDEMPOTENT_WRITE" not in operations
    assert ("topic", NAMES.events, "DELETE") in allowed("archiver")


def test_replay_only_reads() -> None:
    assert {op for _, _, op in allowed("replay")} == {"READ", "DESCRIBE"}


def test_the_processor_has_its_group_and_transactional_ids() -> None:
    mine = allowed("processor")
    assert ("group", NAMES.runtime_group, "READ") in mine
    assert ("transactional_id", f"{NAMES.runtime_group}-", "WRITE") in mine
    prefixed = [g for g in grants(NAMES) if g.resource == "transactional_id"]
    assert all(g.prefixed for g in prefixed)


def test_every_role_has_grants_and_every_grant_becomes_one_binding() -> None:
    table = grants(NAMES)
    assert {g.role for g in table} == set(ROLES)
    assert len(set(table)) == len(table)  # no duplicates
    bindings = acl_bindings(table)
    assert len(bindings) == len(table)
    assert all(str(b).count("User:") == 1 for b in bindings)
    assert Grant("agent", "topic", NAMES.events, "WRITE").principal == "User:agent"

"""docker-compose.secure.yml, read as a file (no Docker engine here): the broker enforces
ACLs with one user per role, each runstate service runs as its role, and no password is
written in the repository."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from runstate.streams.acls import ROLES

ROOT = Path(__file__).resolve().parents[1]
SECURE = ROOT / "docker-compose.secure.yml"
BASE = ROOT / "docker-compose.yml"


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def test_the_broker_authenticates_and_authorizes() -> None:
    kafka = load(SECURE)["services"]["kafka"]["environment"]
    assert "PLAINTEXT:PLAINTEXT" not in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert all(
        proto.split(":")[1] == "SASL_PLAINTEXT"
        for proto in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert kafka["KAFKA_SUPER_USERS"] == "User:admin"
    declared = {entry.split("://")[0] for entry in kafka["KAFKA_LISTENERS"].split(",")}
    jaas = {
        name.removeprefix("KAFKA_LISTENER_NAME_").removesuffix("_PLAIN_SASL_JAAS_CONFIG")
        for name in kafka
        if name.startswith("KAFKA_LISTENER_NAME_")
    }
    assert jaas == declared  # every listener checks passwords


def test_every_role_has_a_user_and_no_password_is_in_the_file() -> None:
    text = SECURE.read_text()
    jaas = load(SECURE)["services"]["kafka"]["environment"][
        "KAFKA_LISTENER_NAME_INTERNAL_PLAIN_SASL_JAAS_CONFIG"
    ]
    users = set(re.findall(r"user_(\w+)=", jaas))
    assert users == {"admin", *ROLES}
    for value in re.findall(r'password="([^"]*)"', text) + re.findall(r'user_\w+="([^"]*)"', text):
        assert value.startswith("${RUNSTATE_") or value == "%s", value
    for line in re.findall(r"RUNSTATE_KAFKA_SASL_PASSWORD: (.*)", text):
        assert line.startswith("${RUNSTATE_"), line
    example = (ROOT / "examples" / "secure.env.example").read_text()
    needed = set(re.findall(r"\$\{(RUNSTATE_\w+_PASSWORD)", text))
    listed = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    assert needed == set(listed)
    assert all(value == "" for value in listed.values())
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_each_runstate_service_runs_as_its_role() -> None:
    base = load(BASE)["services"]
    secure = load(SECURE)["services"]
    runstate_services = {name for name, s in base.items() if "build" in s or "<<" in s}
    runstate_services |= {name for name in base if name.startswith("processor")}
    assert runstate_services <= set(secure), runstate_services - set(secure)
    for name in runstate_services:
        env = secure[name]["environment"]
        assert env["RUNSTATE_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT", name
        user = env["RUNSTATE_KAFKA_SASL_USERNAME"]
        expected = "admin" if name == "topics" else "processor"
        assert user == expected, (name, user)
    assert "topics acls --apply" in " ".join(secure["topics"]["command"])

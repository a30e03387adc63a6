"""Principals from the identity file, tokens by their hashes, roles."""

from __future__ import annotations

from pathlib import Path

import pytest

from runstate.errors import ConfigError
from runstate.identity import (
    FileDirectory,
    NotAuthorized,
    Principal,
    Role,
    hash_token,
    new_token,
    require_role,
)

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "identities.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_token_authenticates_its_principal_by_hash_only(tmp_path: Path) -> None:
    bob, eve = new_token(), new_token()
    path = _write(
        tmp_path,
        f"""
[principals."manager.bob"]
roles = ["approver"]
groups = ["credit-managers"]
token_sha256 = "{hash_token(bob)}"

[principals."intern.eve"]
roles = ["auditor"]
token_sha256 = "{hash_token(eve).upper().replace("SHA256:", "sha256:")}"
""",
    )
    assert bob not in path.read_text()
    directory = FileDirectory.load(path)
    found = directory.authenticate(bob)
    assert found == Principal(
        "manager.bob", frozenset({Role.APPROVER}), frozenset({"credit-managers"})
    )
    other = directory.authenticate(eve)
    assert other is not None and other.name == "intern.eve"
    assert directory.authenticate("guess") is None
    assert directory.authenticate(bob + "x") is None
    assert directory.principal("intern.eve") == other


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not toml [", "not valid TOML"),
        ("[other]\nx = 1\n", r"no \[principals\.NAME\]"),
        ('[principals.a]\nroles = ["boss"]\n', "unknown role"),
        ('[principals.a]\ntoken_sha256 = "s3cret"\n', "never the token itself"),
        ('[principals.a]\nrole = ["admin"]\n', "unknown keys"),
        ('[principals.a]\ngroups = "ops"\n', "groups must be a list"),
        (
            f'[principals.a]\ntoken_sha256 = "{hash_token("t")}"\n'
            f'[principals.b]\ntoken_sha256 = "{hash_token("t")}"\n',
            "same token hash",
        ),
    ],
)
def test_a_bad_identity_file_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FileDirectory.load(_write(tmp_path, text))


def test_a_missing_file_says_which_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="RUNSTATE_AUTH_FILE"):
        FileDirectory.load(tmp_path / "nope.toml")


def test_roles_and_admin() -> None:
    ops = Principal("ops.joe", frozenset({Role.OPERATOR}))
    require_role(ops, Role.OPERATOR, doing="cancel")
    with pytest.raises(NotAuthorized, match="needs the role operator or admin"):
        require_role(Principal("eve", frozenset({Role.AUDITOR})), Role.OPERATOR, doing="cancel")
    require_role(Principal("root", frozenset({Role.ADMIN})), Role.OPERATOR, doing="cancel")


def test_the_example_file_loads() -> None:
    directory = FileDirectory.load(ROOT / "examples" / "identities.toml")
    bob = directory.principal("manager.bob")
    assert bob is not None and "credit-managers" in bob.groups
    assert any(p.is_admin for p in map(directory.principal, ["admin.ann"]) if p)

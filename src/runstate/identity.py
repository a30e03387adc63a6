"""Who is acting: principals, their roles and approver groups, and how a token names one.

Every decision and operator command names the principal who made it. A principal has roles
(:class:`Role`) and approver groups; a deployment gives them from a file
(:class:`FileDirectory`, TOML, see ``examples/identities.toml`` and docs/operators.md) or
backs :class:`Directory` with its own identity provider (an OIDC introspection call, LDAP...).

Tokens are stored hashed (``sha256:<hex>``), never as given: a random token of 32 bytes
(:func:`new_token`) cannot be guessed from its hash, so plain SHA-256 suffices (slow hashes
are for passwords people choose). ``runstate auth new-token`` makes one and prints its hash;
``runstate auth hash-token`` hashes one read from stdin.

This is a root module (every layer may use it): it imports nothing of runstate but errors.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runstate.errors import ConfigError, Error

__all__ = [
    "Directory",
    "FileDirectory",
    "NotAuthenticated",
    "NotAuthorized",
    "Principal",
    "Role",
    "hash_token",
    "new_token",
    "require_role",
]

_HASH_PREFIX = "sha256:"


class NotAuthenticated(Error):
    """No token, or a token no principal has: ask for a token (``runstate auth new-token``)."""


class NotAuthorized(Error):
    """The principal may not do this (wrong role, not the approver); the message says who may."""


class Role(enum.StrEnum):
    """What a principal may do.

    * ``agent`` - read runs (the SDK reads its own state through the query API), fetch
      wrapped data keys (to open values an earlier agent process sealed);
    * ``operator`` - read, cancel runs, retry a failed step, settle an unknown action,
      requeue dead letters;
    * ``approver`` - read and decide the approvals addressed to them or their groups;
    * ``auditor`` - read only;
    * ``personal-data`` - see personal fields in clear in the query API's answers (others
      get ``masked``) and fetch wrapped data keys; added to another role, it never allows
      anything else;
    * ``admin`` - everything (personal data included), and decide any approval when giving
      a reason (recorded).
    """

    AGENT = "agent"
    OPERATOR = "operator"
    APPROVER = "approver"
    AUDITOR = "auditor"
    ADMIN = "admin"
    PERSONAL_DATA = "personal-data"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated someone: a person, an agent service, a tool."""

    name: str
    roles: frozenset[Role] = field(default_factory=frozenset)
    groups: frozenset[str] = field(default_factory=frozenset)

    def has(self, role: Role) -> bool:
        """Whether the principal holds ``role`` (admins hold every role)."""
        return role in self.roles or Role.ADMIN in self.roles

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles

    @property
    def sorted_groups(self) -> tuple[str, ...]:
        """The groups as decisions carry them (``by_groups``)."""
        return tuple(sorted(self.groups))

    @property
    def sorted_roles(self) -> tuple[str, ...]:
        """The roles as decisions carry them (``by_roles``)."""
        return tuple(sorted(r.value for r in self.roles))


def require_role(principal: Principal, *roles: Role, doing: str) -> None:
    """Refuse unless ``principal`` holds one of ``roles`` (admins hold all).

    Raises:
        NotAuthorized: naming the roles that may do it.
    """
    if any(principal.has(r) for r in roles):
        return
    wanted = " or ".join(r.value for r in (*roles, Role.ADMIN))
    raise NotAuthorized(
        f"{principal.name!r} may not {doing}: that needs the role {wanted} (has:"
        f" {', '.join(principal.sorted_roles) or 'none'})"
    )


def hash_token(token: str) -> str:
    """The form a token is stored in: ``sha256:<hex>``."""
    return _HASH_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A random token of 32 bytes (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)


class Directory(Protocol):
    """Where principals come from; a deployment may back it with its own provider."""

    def authenticate(self, token: str) -> Principal | None:
        """The principal this bearer token belongs to, or None."""
        ...

    def principal(self, name: str) -> Principal | None:
        """The principal of this name (for tools that act under a configured name)."""
        ...


class FileDirectory:
    """Principals from a TOML file::

        [principals."manager.bob"]
        roles = ["approver"]
        groups = ["credit-managers"]
        token_sha256 = "sha256:9f86d08..."   # runstate auth hash-token

    Raises:
        ConfigError: the file is missing, not TOML, or names an unknown role, a malformed
            hash, or one hash for two principals.
    """

    def __init__(self, principals: Iterable[tuple[Principal, str | None]]) -> None:
        self._by_name: dict[str, Principal] = {}
        self._by_hash: dict[str, Principal] = {}
        for principal, token_hash in principals:
            self._by_name[principal.name] = principal
            if token_hash is not None:
                if token_hash in self._by_hash:
                    raise ConfigError(
                        f"principals {self._by_hash[token_hash].name!r} and {principal.name!r}"
                        " have the same token hash; give each its own token"
                    )
                self._by_hash[token_hash] = principal

    @classmethod
    def load(cls, path: Path) -> FileDirectory:
        """Read ``path`` (see the class docstring for the format)."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"identity file {path} does not exist; set RUNSTATE_AUTH_FILE to an existing"
                " file (see examples/identities.toml)"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"identity file {path} is not valid TOML: {exc}") from None
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "identities") -> FileDirectory:
        """Principals from already parsed data (the TOML file's table)."""
        table = data.get("principals")
        if not isinstance(table, Mapping) or not table:
            raise ConfigError(f"{source}: no [principals.NAME] tables; see the example file")
        entries: list[tuple[Principal, str | None]] = []
        for name, body in table.items():
            where = f"{source}: principals.{name}"
            if not isinstance(body, Mapping):
                raise ConfigError(f"{where} must be a table")
            unknown = set(body) - {"roles", "groups", "token_sha256"}
            if unknown:
                raise ConfigError(
                    f"{where}: unknown keys {sorted(unknown)}; known: roles, groups, token_sha256"
                )
            roles = _roles(body.get("roles", []), where)
            groups = body.get("groups", [])
            if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
                raise ConfigError(f"{where}: groups must be a list of names")
            token_hash = body.get("token_sha256")
            if token_hash is not None:
                token_hash = _checked_hash(token_hash, where)
            entries.append((Principal(name, frozenset(roles), frozenset(groups)), token_hash))
        return cls(entries)

    def authenticate(self, token: str) -> Principal | None:
        # A lookup by the hash: its timing says nothing about the token itself.
        return self._by_hash.get(hash_token(token))

    def principal(self, name: str) -> Principal | None:
        return self._by_name.get(name)

    def __len__(self) -> int:
        return len(self._by_name)


def _roles(raw: Any, where: str) -> list[Role]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: roles must be a list")
    try:
        return [Role(r) for r in raw]
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise ConfigError(f"{where}: unknown role in {raw}; known: {known}") from None


def _checked_hash(value: Any, where: str) -> str:
    text = str(value)
    digest = text.removeprefix(_HASH_PREFIX)
    if not text.startswith(_HASH_PREFIX) or len(digest) != 64 or not _is_hex(digest):
        raise ConfigError(
            f"{where}: token_sha256 must be 'sha256:' and 64 hex digits (from `runstate auth"
            " hash-token`), never the token itself"
        )
    return _HASH_PREFIX + digest.lower()


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True

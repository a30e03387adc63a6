"""Who is looking, what buttons they get, and which personal fields they see masked.

The buttons are a courtesy: the query API decides (the same rules as the CLI) and refuses
what the page should not have offered; the console never trusts its own judgement.

Masking follows the contract: the fields of ``RunState`` tagged ``"personal": true``
(:mod:`runstate.schemas.personal`) are shown as :data:`MASK`, except

* principal names (:data:`NAMES`: owner, approver, decider, canceller): the console exists to
  say who must act and who did;
* the approval's subject and comment to whoever may decide it (they cannot decide unseen);
* everything to admins.

A field tagged in a new version of the contract is masked without a change here.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

from runstate.identity import Principal, Role
from runstate.schemas.catalog import default_catalog
from runstate.schemas.personal import personal_fields

__all__ = [
    "MASK",
    "NAMES",
    "is_asked",
    "masked_run",
    "may_decide",
    "may_operate",
    "personal_paths",
]

#: What a masked value shows.
MASK = "•••• (personal)"
#: Personal fields that name principals; shown.
NAMES = frozenset({"owner", "approval.approver", "approval.decided_by", "cancelled_by"})
#: Shown to whoever may decide the approval.
_FOR_THE_DECIDER = frozenset({"approval.subject", "approval.comment", "approval.override_reason"})


@functools.cache
def personal_paths() -> frozenset[str]:
    """The dotted paths of the run state's personal fields (newest contract)."""
    return personal_fields(default_catalog().latest("RunState").definition)


def may_operate(who: Principal) -> bool:
    """Cancel, retry a step, settle an action: the operator role (admins have every role)."""
    return who.has(Role.OPERATOR)


def may_decide(who: Principal, run: Mapping[str, Any]) -> bool:
    """Whether ``who`` is asked for the run's pending approval (by name or group), or is an
    admin (who must give an override reason when not asked)."""
    approval = run.get("approval") or {}
    if run.get("status") != "waiting_approval" or approval.get("outcome") != "pending":
        return False
    return who.is_admin or is_asked(who, approval)


def is_asked(who: Principal, approval: Mapping[str, Any]) -> bool:
    """Whether the approval names ``who`` or one of their groups."""
    approver = approval.get("approver")
    if approval.get("approver_kind") == "group":
        return approver in who.groups
    return bool(approver == who.name)


def masked_run(run: Mapping[str, Any], who: Principal) -> dict[str, Any]:
    """A copy of a run's JSON with the personal fields ``who`` may not see masked."""
    out = copy.deepcopy(dict(run))
    if who.is_admin:
        return out
    decider = may_decide(who, run) or is_asked(who, run.get("approval") or {})
    for path in personal_paths() - NAMES:
        if decider and path in _FOR_THE_DECIDER:
            continue
        _mask(out, path.split("."))
    return out


def _mask(node: Any, parts: list[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _mask(item, parts)
        return
    if not isinstance(node, dict) or parts[0] not in node:
        return
    if len(parts) == 1:
        if node[parts[0]] not in (None, ""):
            node[parts[0]] = MASK
        return
    _mask(node[parts[0]], parts[1:])

"""A run's timeline as the run page shows it.

From the run's event journal (``GET /runs/{id}/events``, :func:`journal_moments`): every event
applied to the run, or rejected by its rules, with who acted, a page at a time. A run whose
journal is empty (processed before the journal existed) falls back to :func:`timeline`, built
from the state alone.

The state keeps the moments that matter with who acted (started by whom, each step's
completion, the approval asked of whom and decided by whom, each external action intended and
recorded, the cancel), so the page needs no second source: it reads one run, never the run's
whole history. The full event-by-event history (from the archive when old) stays with
``runstate replay --run ID --history``, which the page names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Moment", "journal_moments", "timeline"]


@dataclass(frozen=True, slots=True)
class Moment:
    """One line of the timeline."""

    at: str
    what: str
    who: str = ""
    detail: str = ""
    #: ``applied``, or why the event was set aside (``rejected``, ``error``).
    outcome: str = "applied"


def _words(event_type: str) -> str:
    """``ApprovalGranted`` -> ``approval granted``."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", event_type).lower()


def journal_moments(events: Sequence[Mapping[str, Any]]) -> list[Moment]:
    """A page of journal entries (the API's JSON) as timeline lines, in their order."""
    out = []
    for e in events:
        what = _words(e["event_type"])
        if e.get("step"):
            what += f" · {e['step']}"
            if e.get("attempt"):
                what += f" (attempt {e['attempt']})"
        if e["outcome"] != "applied":
            what = f"{what} — {e['outcome']}, set aside"
        out.append(Moment(e["occurred_at"], what, e.get("actor") or "", e.get("detail") or "",
                          e["outcome"]))  # fmt: skip
    return out


def timeline(run: Mapping[str, Any]) -> list[Moment]:
    """The run's moments, oldest first (ISO-8601 times sort as text in one zone)."""
    out = [Moment(run["created_at"], f"run started ({run['agent']})", run["owner"], run["source"])]
    for step in run.get("completed_steps") or []:
        out.append(
            Moment(
                step["completed_at"],
                f"step {step['step']} completed",
                detail=f"attempt {step['attempt']}",
            )
        )
    if run.get("last_attempt_at") and run.get("current_step"):
        out.append(
            Moment(
                run["last_attempt_at"],
                f"step {run['current_step']} attempt {run.get('step_attempt', 0)} started",
            )
        )
    out += _approval(run.get("approval"))
    for action in run.get("external_actions") or []:
        key = f"{action['idempotency_key']} ({action['system']})"
        out.append(Moment(action["intended_at"], f"external action {key} intended"))
        if action.get("recorded_at"):
            out.append(
                Moment(
                    action["recorded_at"],
                    f"external action {key} {action['state']}",
                    detail=action.get("external_id") or "",
                )
            )
    if run.get("status") in ("failed", "cancelled") or run.get("last_error_reason"):
        out.append(_ending(run))
    return sorted(out, key=lambda m: m.at)


def _approval(approval: Mapping[str, Any] | None) -> list[Moment]:
    if not approval:
        return []
    asked = f"approval of {approval['step']} requested from {approval['approver']}"
    moments = [Moment(approval["requested_at"], asked, detail=f"due {approval['due_at']}")]
    if approval.get("decided_at"):
        detail = approval.get("comment") or ""
        if approval.get("override_reason"):
            detail = f"override: {approval['override_reason']}; {detail}".rstrip("; ")
        moments.append(
            Moment(
                approval["decided_at"],
                f"approval {approval['outcome']}",
                approval.get("decided_by") or "",
                detail,
            )
        )
    return moments


def _ending(run: Mapping[str, Any]) -> Moment:
    if run.get("status") == "cancelled":
        return Moment(
            run["updated_at"],
            "run cancelled",
            run.get("cancelled_by") or "",
            run.get("cancel_reason") or "",
        )
    what = f"{run['status']}: {run.get('last_error_reason') or ''}".rstrip(": ")
    return Moment(run["updated_at"], what, detail=run.get("last_error_message") or "")

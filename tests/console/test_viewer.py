"""Who gets which buttons, which personal fields are masked, and the run page's timeline."""

from __future__ import annotations

from typing import Any

from runstate.console.timeline import timeline
from runstate.console.viewer import MASK, masked_run, may_decide, may_operate, personal_paths
from runstate.identity import Principal, Role

BOB = Principal("manager.bob", frozenset({Role.APPROVER}), frozenset({"credit-managers"}))
KIM = Principal("manager.kim", frozenset({Role.APPROVER}), frozenset({"credit-managers"}))
EVE = Principal("intern.eve", frozenset({Role.AUDITOR}))
JOE = Principal("ops.joe", frozenset({Role.OPERATOR}))
ANN = Principal("admin.ann", frozenset({Role.ADMIN}))


def run(approver: str = "manager.bob", kind: str = "user", **extra: Any) -> dict[str, Any]:
    return {
        "run_id": "r-1", "status": "waiting_approval", "agent": "credit", "owner": "team",
        "source": "t", "input": '{"name": "Ada"}', "created_at": "2026-12-05T10:00:00+00:00",
        "updated_at": "2026-12-05T10:05:00+00:00", "last_error_message": "boom",
        "completed_steps": [{"step": "collect", "attempt": 1, "output_ref": "s3://x",
                             "completed_at": "2026-12-05T10:01:00+00:00"}],
        "external_actions": [], "model_calls": [],
        "approval": {"step": "limit", "approver": approver, "approver_kind": kind,
                     "subject": '{"limit": 5000}', "subject_hash": "sha256:ab",
                     "outcome": "pending", "requested_at": "2026-12-05T10:02:00+00:00",
                     "due_at": "2026-12-05T11:02:00+00:00", "comment": None,
                     "decided_by": None, "decided_at": None, "override_reason": None},
        **extra,
    }  # fmt: skip


def test_who_may_decide_and_who_may_operate() -> None:
    assert may_decide(BOB, run()) and not may_decide(KIM, run())
    assert may_decide(KIM, run("credit-managers", "group")) and not may_decide(EVE, run())
    assert may_decide(ANN, run())  # an admin, with an override reason the form asks for
    decided = run()
    decided["approval"]["outcome"] = "granted"
    assert not may_decide(BOB, decided)
    assert may_operate(JOE) and may_operate(ANN) and not may_operate(BOB)
    assert not may_operate(EVE)


def test_personal_fields_are_masked_but_for_the_decider_and_admins() -> None:
    assert {"input", "approval.subject", "owner"} <= personal_paths()
    seen_by_eve = masked_run(run(), EVE)
    assert seen_by_eve["input"] == MASK and seen_by_eve["last_error_message"] == MASK
    assert seen_by_eve["approval"]["subject"] == MASK
    assert seen_by_eve["completed_steps"][0]["output_ref"] == MASK
    # principal names stay: the console says who must act
    assert seen_by_eve["owner"] == "team" and seen_by_eve["approval"]["approver"] == "manager.bob"
    seen_by_bob = masked_run(run(), BOB)
    assert seen_by_bob["approval"]["subject"] == '{"limit": 5000}'
    assert seen_by_bob["input"] == MASK  # the subject is what he decides on, not the input
    assert masked_run(run(), ANN) == run()
    assert run()["input"] == '{"name": "Ada"}'  # the original is untouched


def test_the_timeline_says_who_did_what_in_order() -> None:
    r = run()
    r["approval"].update(
        outcome="granted", decided_by="manager.bob", decided_at="2026-12-05T10:03:00+00:00",
        comment="ok",
    )  # fmt: skip
    r["status"] = "cancelled"
    r.update(cancelled_by="ops.joe", cancel_reason="duplicate")
    moments = timeline(r)
    assert [m.at for m in moments] == sorted(m.at for m in moments)
    lines = [(m.what, m.who, m.detail) for m in moments]
    assert lines[0] == ("run started (credit)", "team", "t")
    assert ("approval granted", "manager.bob", "ok") in lines
    assert lines[-1] == ("run cancelled", "ops.joe", "duplicate")
    assert any(what == "step collect completed" for what, _, _ in lines)


def test_journal_entries_read_as_timeline_lines_with_who_and_what_was_set_aside() -> None:
    from runstate.console.timeline import journal_moments

    entries = [
        {"occurred_at": "2026-03-01T12:00:00Z", "event_type": "ApprovalGranted",
         "outcome": "applied", "actor": "manager.bob", "step": None, "attempt": None,
         "detail": None},
        {"occurred_at": "2026-03-01T12:00:01Z", "event_type": "StepStarted",
         "outcome": "rejected", "actor": None, "step": "pay", "attempt": 2,
         "detail": "wrong_attempt: attempt 2 of pay"},
    ]  # fmt: skip
    first, second = journal_moments(entries)
    assert (first.what, first.who, first.outcome) == ("approval granted", "manager.bob", "applied")
    assert second.what == "step started · pay (attempt 2) — rejected, set aside"
    assert second.detail.startswith("wrong_attempt") and second.who == ""

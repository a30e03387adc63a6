"""The agent SDK: durable steps, a side-effect ledger, approvals and reactors.

An agent is plain code over a :class:`DurableRun`; every decision is made from the run's
recorded state, so restarting the agent (after a crash, an approval, a retry delay) continues
the run where it stopped instead of starting over. See :mod:`runstate.agents.steps`. A
:class:`Reactor` does the restarting: on an approval, and when a retry's time has come.
"""

from __future__ import annotations

from runstate.agents.approvals import (
    ApprovalDecision,
    DecisionReceipt,
    PendingApproval,
    approve,
    canonical_json,
    pending_approval,
    reject,
    subject_hash,
)
from runstate.agents.client import HttpRunStateReader, LogPosition, RunStateReader
from runstate.agents.memory import InMemoryRuns
from runstate.agents.ports import Clock, EventSink, ManualClock, SystemClock
from runstate.agents.reactor import ChangeFilter, Reactor, ReactorStats
from runstate.agents.retry import NO_RETRY, RetryDecision, RetryPolicy
from runstate.agents.retry_due import RetryDue
from runstate.agents.steps import ActionOutcome, ActionResult, DurableRun, StepContext

__all__ = [
    "NO_RETRY",
    "ActionOutcome",
    "ActionResult",
    "ApprovalDecision",
    "ChangeFilter",
    "Clock",
    "DecisionReceipt",
    "DurableRun",
    "EventSink",
    "HttpRunStateReader",
    "InMemoryRuns",
    "LogPosition",
    "ManualClock",
    "PendingApproval",
    "Reactor",
    "ReactorStats",
    "RetryDecision",
    "RetryDue",
    "RetryPolicy",
    "RunStateReader",
    "StepContext",
    "SystemClock",
    "approve",
    "canonical_json",
    "pending_approval",
    "reject",
    "subject_hash",
]

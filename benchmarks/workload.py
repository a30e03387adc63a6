"""A seeded, reproducible workload of agent runs with realistic shapes and sizes.

Each run has 10-40 events: steps with model calls, external actions (intended, then
recorded), some failures with retries, some approvals with long waits (granted, rejected or
expired), some cancellations and failed runs. Every event encodes to 300-1,000 bytes: the
free-text field its contract has (the run's input, a failure message, an approval subject,
model-call tags, output references) is padded with generated prose; the few contracts without
one (``RetryScheduled``, ``ApprovalExpired``, ``ExternalActionIntended``) reach the floor
through a longer producer identity (user agent plus trace baggage), as a real SDK might send.

Runs interleave as they would on a busy cluster: up to ``concurrency`` runs are live at once
and the next event comes from a random live run, so each run's own order is kept.
Every sequence is valid for the reducer (:func:`runstate.runs.reducer.apply` applies
each event; ``tests/benchmarks/test_workload.py`` checks it).
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from runstate.schemas.convert import encode_event
from runstate.schemas.events import (
    AgentEvent,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRejected,
    ApprovalRequested,
    ExternalActionIntended,
    ExternalActionRecorded,
    FailureReason,
    ModelCalled,
    RetryScheduled,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    StepCompleted,
    StepFailed,
    StepStarted,
)

__all__ = [
    "MAX_EVENTS",
    "MAX_SIZE",
    "MIN_EVENTS",
    "MIN_SIZE",
    "Workload",
    "generate",
    "long_run",
]

MIN_EVENTS, MAX_EVENTS = 10, 40
MIN_SIZE, MAX_SIZE = 300, 1000
_EPOCH = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)

_VOCABULARY = (
    "invoice customer refund order contract clause summary shipment address policy ticket "
    "account balance quarter supplier amount currency overdue approval manager review "
    "escalate reply draft email attachment total discount line item tax region delivery "
    "status priority agent tool search result document page section owner deadline risk "
    "the a of to and for with on in from by is was be this that please confirm check "
)
_WORDS = _VOCABULARY.split()
_AGENTS = ("invoice-triage", "support-reply", "contract-review", "refund-desk", "kyc-check")
_STEPS = (
    "load_context", "classify", "extract_fields", "search_knowledge_base", "draft_reply",
    "check_policy", "compute_totals", "call_erp", "summarise", "send_email", "update_crm",
    "verify_identity", "score_risk", "prepare_payment", "notify_owner",
)  # fmt: skip
_SYSTEMS = ("erp", "crm", "email", "payments", "ticketing")
_MODELS = ("gpt-4.1-mini", "claude-sonnet-4", "llama-3.1-70b", "gemini-2.0-flash")
_REASONS = tuple(FailureReason)
#: Prose to cut padding from (fixed, so workloads depend on their seed only).
_CORPUS = " ".join(random.Random(0).choices(_WORDS, k=12_000))


@dataclass
class Workload:
    """Runs (each in its own order) and one interleaved order of all their events."""

    seed: int
    runs: list[list[AgentEvent]]
    events: list[AgentEvent]
    encoded: list[bytes] = field(repr=False)

    @property
    def run_ids(self) -> list[str]:
        return [run[0].run_id for run in self.runs]

    def type_counts(self) -> Counter[str]:
        return Counter(e.event_type for e in self.events)

    def sizes(self) -> list[int]:
        return [len(b) for b in self.encoded]

    def describe(self) -> dict[str, Any]:
        """Counts and sizes for the results file."""
        sizes = sorted(self.sizes())
        lengths = sorted(len(r) for r in self.runs)
        return {
            "seed": self.seed,
            "runs": len(self.runs),
            "events": len(self.events),
            "bytes": sum(sizes),
            "event_bytes": {"min": sizes[0], "median": sizes[len(sizes) // 2], "max": sizes[-1]},
            "events_per_run": {
                "min": lengths[0],
                "median": lengths[len(lengths) // 2],
                "max": lengths[-1],
            },
            "types": dict(sorted(self.type_counts().items())),
        }


def generate(n_runs: int, *, seed: int = 7, concurrency: int = 64) -> Workload:
    """``n_runs`` runs from ``seed``; the same arguments always give the same bytes."""
    rng = random.Random(seed)
    builders = [_RunBuilder(rng, index) for index in range(n_runs)]
    runs = [[*zip(b.build(), b.encoded, strict=True)] for b in builders]
    pairs = list(_interleave(rng, runs, concurrency))
    return Workload(
        seed=seed,
        runs=[[e for e, _ in run] for run in runs],
        events=[e for e, _ in pairs],
        encoded=[b for _, b in pairs],
    )


_Pair = tuple[AgentEvent, bytes]


def long_run(n_events: int, *, seed: int = 7) -> list[tuple[AgentEvent, bytes]]:
    """One run of ``n_events`` events (with their encoded bytes), far longer than the
    workload's 10-40: for the per-event cost as a run grows."""
    builder = _RunBuilder(random.Random(seed), 0)
    return list(zip(builder.build_long(n_events), builder.encoded, strict=True))


def _interleave(rng: random.Random, runs: list[list[_Pair]], concurrency: int) -> Iterator[_Pair]:
    waiting = iter(runs)
    live: list[Iterator[_Pair]] = []
    for run in waiting:
        live.append(iter(run))
        if len(live) == concurrency:
            break
    while live:
        i = rng.randrange(len(live))
        event = next(live[i], None)
        if event is not None:
            yield event
            continue
        nxt = next(waiting, None)
        if nxt is None:
            live.pop(i)
        else:
            live[i] = iter(nxt)


def _uuid7(rng: random.Random, at: datetime) -> str:
    ms = int(at.timestamp() * 1000)
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64
    value |= 0b10 << 62 | rng.getrandbits(62)
    return str(uuid.UUID(int=value))


class _RunBuilder:
    """Builds one run's events; sizes are fitted as each event is made."""

    def __init__(self, rng: random.Random, index: int) -> None:
        self.rng = rng
        self.agent = rng.choice(_AGENTS)
        self.now = _EPOCH + timedelta(seconds=index * 0.8 + rng.random())
        self.run_id = _uuid7(rng, self.now)
        self.producer = f"{self.agent}/2.{rng.randrange(9)}.{rng.randrange(20)} runstate-sdk/0.1"
        self.events: list[AgentEvent] = []
        self.encoded: list[bytes] = []
        self.step_index = -1
        self.action = 0

    # -- sizing ------------------------------------------------------------------------------
    def _prose(self, n: int) -> str:
        start = self.rng.randrange(len(_CORPUS) - MAX_SIZE)
        return _CORPUS[start : start + n]

    def _emit(self, cls: type[AgentEvent], pad: str | None, **fields: Any) -> None:
        """Make the event, padding field ``pad`` (or the producer) to a random target size."""
        self.now += timedelta(milliseconds=self.rng.randrange(50, 20_000))
        fields.setdefault("occurred_at", self.now)
        base = {
            "event_id": _uuid7(self.rng, fields["occurred_at"]),
            "run_id": self.run_id,
            "producer": self.producer,
            **fields,
        }
        target = self.rng.randrange(MIN_SIZE + 10, MAX_SIZE - 20)
        size = len(encode_event(cls(**base)))
        room = max(0, target - size - 2)  # the length varint of the padded string
        if pad is None:
            base["producer"] = self._baggage(room)
        elif pad == "tags":
            base["tags"] = {**fields["tags"], "prompt_preview": self._prose(max(1, room - 16))}
        elif pad == "input":
            base["input"] = fields["input"][:-2] + self._prose(room) + '"}'
        else:
            base[pad] = (fields.get(pad) or "") + self._prose(room)
        event = cls(**base)
        self.events.append(event)
        self.encoded.append(encode_event(event))

    def _baggage(self, room: int) -> str:
        trace = f"{self.rng.getrandbits(128):032x}"
        text = f"{self.producer} (python 3.11; traceparent=00-{trace}-01; baggage="
        return text + self._prose(max(1, room - len(text) + len(self.producer) - 1)) + ")"

    # -- shapes ------------------------------------------------------------------------------
    def build_long(self, n_events: int) -> list[AgentEvent]:
        """One run of exactly ``n_events``: started, then steps (model calls, actions,
        retries) and nothing else; it is cut mid-step, and every prefix of a run is valid."""
        self._start()
        while len(self.events) < n_events:
            self.step_index += 1
            self._step()
        del self.events[n_events:], self.encoded[n_events:]
        return self.events

    def _start(self) -> None:
        rng = self.rng
        self._emit(
            RunStarted,
            "input",
            agent=self.agent,
            input=f'{{"request_id": "{rng.getrandbits(48):012x}", "text": ""}}',
            prompt_version=f"v{rng.randrange(1, 12)}",
            owner=f"user-{rng.randrange(500)}@example.com",
            source=rng.choice(("api", "slack", "email", "scheduler")),
            tenant=f"tenant-{rng.randrange(40)}",
        )

    def build(self) -> list[AgentEvent]:
        rng = self.rng
        budget = rng.randrange(MIN_EVENTS, MAX_EVENTS + 1)
        self._start()
        ending = rng.choices(("complete", "fail", "cancel"), weights=(82, 8, 10))[0]
        approval_at = rng.randrange(1, 4) if rng.random() < 0.3 else None
        # Make steps past the budget, then cut at the last step boundary that leaves room
        # for the ending: every prefix of a valid run is valid, and a boundary keeps the
        # shape whole (no step or approval left hanging).
        boundaries = [1]
        while len(self.events) < budget:
            self.step_index += 1
            if self.step_index == approval_at:
                proceed = self._approval()
                boundaries.append(len(self.events))
                if not proceed:
                    ending = "cancel"
                    break
            self._step()
            boundaries.append(len(self.events))
        reserve = 4 if ending == "fail" else 1
        cut = max(b for b in boundaries if b <= max(budget - reserve, 1))
        del self.events[cut:], self.encoded[cut:]
        if ending == "fail":
            self.step_index += 1
            self._step(fail_for_good=True)
            return self._end_failed()
        if ending == "cancel":
            return self._cancel()
        self._emit(RunCompleted, "output_ref", output_ref=f"s3://runs/{self.run_id}/result.json ")
        return self._fill_to(MIN_EVENTS)

    def _fill_to(self, budget: int) -> list[AgentEvent]:
        # late audit lines after the end are legal (ModelCalled); they bring the rare run
        # whose first step overshot the budget up to the minimum length
        while len(self.events) < budget:
            self._model_call(step=None)
        return self.events

    def _model_call(self, step: str | None) -> None:
        tags = {
            "prompt_tokens": str(self.rng.randrange(200, 9000)),
            "completion_tokens": str(self.rng.randrange(20, 1500)),
            "latency_ms": str(self.rng.randrange(300, 30_000)),
            "finish_reason": self.rng.choice(("stop", "length", "tool_calls")),
        }
        self._emit(
            ModelCalled,
            "tags",
            model_request_id=f"req_{self.rng.getrandbits(96):024x}",
            model=self.rng.choice(_MODELS),
            step=step,
            tags=tags,
        )

    def _step(self, *, fail_for_good: bool = False) -> None:
        rng = self.rng
        step = f"{rng.choice(_STEPS)}_{self.step_index}"
        attempts = 1 if fail_for_good or rng.random() > 0.15 else rng.randrange(2, 4)
        for attempt in range(1, attempts + 1):
            self._emit(
                StepStarted,
                "input_ref",
                step=step,
                step_index=self.step_index,
                attempt=attempt,
                input_ref="inline:",
            )
            for _ in range(rng.randrange(1, 3)):
                self._model_call(step)
            last = attempt == attempts
            if last and not fail_for_good and rng.random() < 0.3:
                self.action += 1
                key = f"{self.run_id}:{step}:{self.action}"
                system = rng.choice(_SYSTEMS)
                self._emit(
                    ExternalActionIntended, None, step=step, idempotency_key=key, system=system
                )
                self._emit(
                    ExternalActionRecorded,
                    "output_ref",
                    step=step,
                    idempotency_key=key,
                    system=system,
                    external_id=f"{system}-{rng.getrandbits(40):010x}",
                    output_ref="receipt: ",
                )
            if last and not fail_for_good:
                self._emit(
                    StepCompleted,
                    "output_ref",
                    step=step,
                    attempt=attempt,
                    output_ref=f"s3://runs/{self.run_id}/{step}.json ",
                )
                return
            self._emit(
                StepFailed,
                "message",
                step=step,
                attempt=attempt,
                reason=rng.choice(_REASONS),
                message="upstream said: ",
            )
            if not last:
                self._emit(
                    RetryScheduled,
                    None,
                    step=step,
                    attempt=attempt + 1,
                    not_before=self.now + timedelta(seconds=rng.randrange(1, 120)),
                )

    def _approval(self) -> bool:
        """Request an approval and decide it after a long wait; False if the run is cancelled."""
        rng = self.rng
        requested = self.now + timedelta(seconds=1)
        due = requested + timedelta(hours=rng.choice((1, 4, 24)))
        subject_hash = f"sha256:{rng.getrandbits(256):064x}"
        self._emit(
            ApprovalRequested,
            "subject",
            occurred_at=requested,
            step=f"approve_{self.step_index}",
            approver=f"manager-{rng.randrange(50)}@example.com",
            due_at=due,
            subject_hash=subject_hash,
            subject="Please approve: ",
        )
        outcome = rng.choices(("granted", "rejected", "expired"), weights=(6, 2, 2))[0]
        if outcome == "expired":
            self.now = due + timedelta(seconds=rng.randrange(0, 90))
            self._emit(
                ApprovalExpired, None, occurred_at=self.now, subject_hash=subject_hash, due_at=due
            )
        else:
            self.now = requested + (due - requested) * rng.uniform(0.01, 0.9)
            cls = ApprovalGranted if outcome == "granted" else ApprovalRejected
            self._emit(
                cls,
                "comment",
                by=f"manager-{rng.randrange(50)}@example.com",
                subject_hash=subject_hash,
                comment="",
            )
        return outcome == "granted" or rng.random() < 0.5

    def _cancel(self) -> list[AgentEvent]:
        self._emit(RunCancelled, "reason", by=f"user-{self.rng.randrange(500)}", reason="")
        return self._fill_to(MIN_EVENTS)

    def _end_failed(self) -> list[AgentEvent]:
        self._emit(
            RunFailed,
            "message",
            step=f"step_{self.step_index}",
            reason=self.rng.choice(_REASONS),
            message="gave up: ",
            needs_attention=self.rng.random() < 0.3,
        )
        return self._fill_to(MIN_EVENTS)

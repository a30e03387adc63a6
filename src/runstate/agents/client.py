"""How the agent SDK reads a run's state: a small protocol, and the HTTP query client behind it.

The SDK never decides from a state older than its own last write. Every read names a log
position (the :class:`~runstate.streams.producer.Delivery` of the last event this process
produced for the run) and the processor answers only once it has applied that event
(read-your-writes). A process that produced nothing yet for the run - an agent resumed in a
fresh process, ``runstate approve`` - first asks Kafka where the run's partition ends
(:meth:`HttpRunStateReader.latest_position`) and reads at that position, so it sees every
event written before it started, including its crashed predecessor's.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from runstate.errors import QueryError
from runstate.processors.query_client import QueryClient
from runstate.processors.run_view import RunFilter
from runstate.processors.state import (
    ActionState,
    Approval,
    ApprovalOutcome,
    CompletedStep,
    ExternalAction,
    ModelCall,
    RunState,
    RunStatus,
    StepPhase,
)
from runstate.schemas.events import ApproverKind, FailureReason
from runstate.streams.partitioning import partition_for
from runstate.streams.reader import end_offsets

__all__ = [
    "HttpRunStateReader",
    "LogPosition",
    "Position",
    "RunStateReader",
    "state_from_json",
]


class Position(Protocol):
    """A place in the events topic; :class:`~runstate.streams.producer.Delivery` is one."""

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


@dataclass(frozen=True, slots=True)
class LogPosition:
    """A position not produced by this process (the end of a run's partition)."""

    partition: int
    offset: int


class RunStateReader(Protocol):
    """Where the SDK, the approval commands and the demo read run states from.

    :class:`HttpRunStateReader` asks the processor's query API;
    :class:`~runstate.agents.memory.InMemoryRuns` folds events with the real reducer in
    process, for unit tests of agents.
    """

    def read(self, run_id: str, *, after: Position | None = None) -> RunState | None:
        """The run's state once the event at ``after`` is applied; None if the run is unknown.

        Raises:
            QueryError: the state could not be read in time (no worker, not caught up).
        """
        ...

    def latest_position(self, run_id: str) -> Position | None:
        """The last position of the run's partition now, or None if it is empty."""
        ...


class HttpRunStateReader:
    """Reads states from any processor worker over HTTP (it routes to the partition's owner).

    Args:
        query_url: a worker's query API, e.g. ``http://127.0.0.1:6066``.
        bootstrap_servers: Kafka, for :meth:`latest_position` (fresh processes only).
        events_topic: the events topic, likewise.
        wait_s: how long the worker may wait for the read position to be applied.
    """

    def __init__(
        self,
        query_url: str,
        *,
        bootstrap_servers: str | None = None,
        events_topic: str | None = None,
        wait_s: float = 10.0,
    ) -> None:
        self.query_url = query_url
        self.bootstrap_servers = bootstrap_servers
        self.events_topic = events_topic
        self.wait_s = wait_s
        self._client = QueryClient(query_url, timeout_s=wait_s + 10.0)

    def read(self, run_id: str, *, after: Position | None = None) -> RunState | None:
        """See :meth:`RunStateReader.read`.

        Raises:
            QueryError: HTTP error other than 404, unreachable worker, or the worker did not
                apply ``after`` within ``wait_s`` (HTTP 504).
        """
        try:
            body = self._client.run(
                run_id,
                min_partition=None if after is None else after.partition,
                min_offset=None if after is None else after.offset,
                timeout_s=self.wait_s,
            )
        except QueryError as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise
        return state_from_json(body)

    def list(
        self,
        *,
        status: RunStatus | str | None = None,
        owner: str | None = None,
        approver: str | None = None,
        overdue: bool = False,
        step: str | None = None,
        phase: StepPhase | str | None = None,
        idle_for: timedelta | str | None = None,
        require_complete: bool = False,
    ) -> list[RunState]:
        """Runs matching every given filter, from all workers of the group.

        Args:
            status: the run's status.
            owner: the run's owner.
            approver: who the run's latest approval is for.
            overdue: only runs whose pending approval is past its due time.
            step: the run's current step.
            phase: the current step's phase, e.g. ``retry_scheduled``.
            idle_for: only runs unchanged for at least this long (``timedelta`` or ``"2h"``,
                ``"15m"``, ``"1d"``), measured from ``RunState.updated_at``.
            require_complete: refuse an answer that lacks some partitions.

        Raises:
            ValueError: an unknown status or phase, or ``idle_for`` is not a positive duration.
            QueryError: the worker is unreachable; or ``require_complete`` is set and some
                partitions had no worker to answer for them (during a rebalance).
        """
        flt = RunFilter.of(
            status=status,
            owner=owner,
            approver=approver,
            overdue=overdue,
            step=step,
            phase=phase,
            idle_for=idle_for,
        )
        body = self._client.runs(flt)
        if require_complete and not body.get("complete", True):
            raise QueryError(
                f"the runs of partitions {body.get('missing_partitions')} are missing from the"
                f" answer ({'; '.join(body.get('errors', [])) or 'no worker owns them'});"
                " ask again once every processor worker is up"
            )
        return [state_from_json(r) for r in body["runs"]]

    def latest_position(self, run_id: str) -> Position | None:
        """Where the run's partition of the events topic ends now.

        Raises:
            QueryError: the reader was built without Kafka settings, or Kafka is unreachable.
        """
        if self.bootstrap_servers is None or self.events_topic is None:
            raise QueryError(
                "reading a run from a fresh process needs bootstrap_servers and events_topic"
                " (to wait for every event already written); pass them to HttpRunStateReader"
            )
        try:
            marks = end_offsets(self.bootstrap_servers, self.events_topic)
        except Exception as exc:  # confluent_kafka raises KafkaException, not ours
            raise QueryError(
                f"cannot read the end of {self.events_topic} at {self.bootstrap_servers}: {exc}"
            ) from exc
        if not marks:
            raise QueryError(f"topic {self.events_topic} has no partitions; run `topics ensure`")
        partition = partition_for(run_id.encode(), len(marks))
        high = marks[partition][1]
        return LogPosition(partition, high - 1) if high > 0 else None

    def __repr__(self) -> str:
        return f"HttpRunStateReader({urllib.parse.urlsplit(self.query_url).netloc})"


def _dt(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _req_dt(value: Any) -> datetime:
    return datetime.fromisoformat(value)


def state_from_json(body: dict[str, Any]) -> RunState:
    """The :class:`RunState` in a query API answer (the inverse of ``run_to_json``).

    Keys the state does not have (``served_by``, ``partition``, ``is_terminal``) are ignored,
    so a newer worker adding fields does not break an older SDK.

    Raises:
        QueryError: the answer is not a run state.
    """
    try:
        a = body.get("approval")
        fields = {f.name for f in dataclasses.fields(RunState)}
        plain = {k: v for k, v in body.items() if k in fields}
        return RunState(
            **{
                **plain,
                "status": RunStatus(body["status"]),
                "created_at": _req_dt(body["created_at"]),
                "updated_at": _req_dt(body["updated_at"]),
                "step_phase": None
                if body.get("step_phase") is None
                else StepPhase(body["step_phase"]),
                "retry_not_before": _dt(body.get("retry_not_before")),
                "last_attempt_at": _dt(body.get("last_attempt_at")),
                "last_error_reason": None
                if body.get("last_error_reason") is None
                else FailureReason(body["last_error_reason"]),
                "completed_steps": tuple(
                    CompletedStep(**{**c, "completed_at": _req_dt(c["completed_at"])})
                    for c in body.get("completed_steps", ())
                ),
                "approval": None
                if a is None
                else Approval(
                    **{
                        **a,
                        "approver_kind": ApproverKind(a["approver_kind"]),
                        "outcome": ApprovalOutcome(a["outcome"]),
                        "requested_at": _req_dt(a["requested_at"]),
                        "due_at": _req_dt(a["due_at"]),
                        "decided_at": _dt(a.get("decided_at")),
                    }
                ),
                "external_actions": tuple(
                    ExternalAction(
                        **{
                            **x,
                            "state": ActionState(x["state"]),
                            "intended_at": _req_dt(x["intended_at"]),
                            "recorded_at": _dt(x.get("recorded_at")),
                        }
                    )
                    for x in body.get("external_actions", ())
                ),
                "model_calls": tuple(ModelCall(**m) for m in body.get("model_calls", ())),
                "recent_event_digests": tuple(body.get("recent_event_digests", ())),
            }
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise QueryError(
            f"the query API answered something that is not a run state ({exc}); is the worker"
            " the same runstate version as this client?"
        ) from exc

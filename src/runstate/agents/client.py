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

import urllib.parse
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from runstate.errors import QueryError
from runstate.runs.query_client import QueryClient
from runstate.runs.run_view import RunFilter, state_from_json
from runstate.runs.state import RunState, RunStatus, StepPhase
from runstate.settings import load_settings
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
        token: the bearer token for a query API with auth on; ``RUNSTATE_TOKEN`` if None.
    """

    def __init__(
        self,
        query_url: str,
        *,
        bootstrap_servers: str | None = None,
        events_topic: str | None = None,
        wait_s: float = 10.0,
        token: str | None = None,
    ) -> None:
        self.query_url = query_url
        self.bootstrap_servers = bootstrap_servers
        self.events_topic = events_topic
        self.wait_s = wait_s
        if token is None:
            secret = load_settings().token
            token = None if secret is None else secret.get_secret_value()
        self._client = QueryClient(query_url, timeout_s=wait_s + 10.0, token=token)

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
                sealed=True,
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
        needs_attention: bool = False,
        unknown_actions: bool = False,
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
            needs_attention: only runs a person must move on (failed).
            unknown_actions: only failed runs with an action of unknown outcome.
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
            needs_attention=needs_attention,
            unknown_actions=unknown_actions,
        )
        body = self._client.all_runs(flt)
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

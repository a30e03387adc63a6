"""The runtime's query API: two workers in one process, each owning some partitions.

The stores are in-memory partition stores holding runs in the layout the runtime writes;
ownership comes from a described group (a fixed member list here: describing a real group
is covered where the runtime runs against the broker).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runstate.crypto import PersonalDataCipher
from runstate.identity import Directory
from runstate.runs.keyspace import KeyValueReader
from runstate.runs.layout import run_writes
from runstate.runs.run_view import state_from_json
from runstate.runs.state import Approval, RunState, RunStatus, StepPhase
from runstate.runtime import query_api
from runstate.runtime.memory_store import MemoryPartitionStore
from runstate.runtime.owners import GroupOwners, client_id
from runstate.runtime.query_api import QueryServer, decode_cursor, encode_cursor
from runstate.schemas.events import ApproverKind
from runstate.streams.broker import free_port
from runstate.streams.partitioning import partition_for
from tests.runs.conftest import RunStateFactory

PARTITIONS = 4


@dataclass
class Source:
    """A worker's committed state: partition stores it owns, and its committed offsets."""

    worker_id: str
    partitions: int
    stores: dict[int, MemoryPartitionStore] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ready: bool = True

    @contextmanager
    def reading(self, partition: int) -> Iterator[KeyValueReader | None]:
        with self.lock:
            yield self.stores.get(partition)

    def processed_through(self, partition: int) -> int | None:
        return self.committed.get(partition)

    def owned_partitions(self) -> list[int]:
        return sorted(self.stores)

    def health(self) -> dict[str, Any]:
        return {"ready": self.ready, "worker_id": self.worker_id}

    def freshness(self, partition: int) -> dict[str, Any]:
        return {"partition": partition, "committed_offset": self.committed.get(partition)}

    def prometheus(self) -> bytes:
        return b"# a stand-in source exports nothing\n"

    def metrics(self) -> dict[str, Any]:
        return {}

    def put(self, state: RunState, *, offset: int) -> None:
        p = partition_for(state.run_id.encode(), self.partitions)
        store = self.stores[p]
        store.apply(run_writes(None, state), changelog_offset=offset)
        self.committed[p] = offset


@dataclass
class Group:
    servers: list[QueryServer]
    sources: list[Source]

    def url(self, i: int) -> str:
        return self.servers[i].url


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@contextmanager
def _group(
    advertised_host: str,
    directory: Directory | None = None,
    cipher: PersonalDataCipher | None = None,
) -> Iterator[Group]:
    """Two workers bound to 127.0.0.1, each advertising ``http://<advertised_host>:<port>``
    to the group (the URL the other forwards to); with ``directory``, auth is on; with
    ``cipher``, they open sealed personal fields for callers allowed to see them."""
    owned = [[0, 2], [1, 3]]
    sources = [Source(f"w{i}", PARTITIONS) for i in range(2)]
    for source, parts in zip(sources, owned, strict=True):
        source.stores = {p: MemoryPartitionStore(p) for p in parts}
    ports = [free_port() for _ in sources]
    urls = [f"http://{advertised_host}:{port}" for port in ports]
    members = [
        (client_id(s.worker_id, url), parts)
        for s, url, parts in zip(sources, urls, owned, strict=True)
    ]
    servers = [
        QueryServer(
            source,
            GroupOwners(lambda: members),
            host="127.0.0.1",
            port=port,
            url=url,
            default_timeout_s=2.0,
            directory=directory,
            cipher=cipher,
        )
        for source, port, url in zip(sources, ports, urls, strict=True)
    ]
    for s in servers:
        s.start()
    try:
        yield Group(servers, sources)
    finally:
        for s in servers:
            s.stop()


@pytest.fixture
def group() -> Iterator[Group]:
    with _group("127.0.0.1") as g:
        yield g


def _owner(group: Group, run_id: str) -> Source:
    p = partition_for(run_id.encode(), PARTITIONS)
    return next(s for s in group.sources if p in s.stores)


def _runs(group: Group, make: RunStateFactory, n: int) -> list[RunState]:
    made = []
    for i in range(n):
        status = RunStatus.WAITING_APPROVAL if i % 3 == 0 else RunStatus.IN_PROGRESS
        state = make(run_id=f"run-{i:03d}", status=status, owner=f"team-{i % 2}")
        _owner(group, state.run_id).put(state, offset=i)
        made.append(state)
    return made


def test_any_worker_answers_for_any_run(group: Group, run_state_factory: RunStateFactory) -> None:
    made = _runs(group, run_state_factory, 12)
    for state in made:
        for i in range(2):
            status, body = _get(f"{group.url(i)}/runs/{state.run_id}")
            assert status == 200, body
            assert state_from_json(body) == state
            assert body["served_by"] == _owner(group, state.run_id).worker_id
            owner = _owner(group, state.run_id)
            p = body["partition"]
            assert body["as_of"] == {"partition": p, "committed_offset": owner.committed[p]}


def test_workers_forward_to_the_url_each_advertises_not_to_where_it_binds(
    run_state_factory: RunStateFactory,
) -> None:
    """Bound to 127.0.0.1, advertised as localhost: a forwarded read goes to the advertised
    URL, and a worker knows its own advertised URL as itself (no forwarding loop)."""
    with _group("localhost") as g:
        made = _runs(g, run_state_factory, 8)
        assert {_owner(g, s.run_id).worker_id for s in made} == {"w0", "w1"}
        for state in made:
            status, body = _get(f"http://127.0.0.1:{g.servers[0].port}/runs/{state.run_id}")
            assert status == 200, body
            assert body["served_by"] == _owner(g, state.run_id).worker_id
        status, body = _get(f"http://127.0.0.1:{g.servers[1].port}/runs?limit=100")
        assert status == 200, body
        assert body["complete"] is True
        assert sorted(body["workers"]) == ["w0", "w1"]  # w0's partitions asked over localhost
        assert len(body["runs"]) == len(made)


def test_health_answers_503_until_ready_only_when_asked(group: Group) -> None:
    group.sources[0].ready = False
    assert _get(f"{group.url(0)}/health")[0] == 200  # alive: what a liveness check asks
    status, body = _get(f"{group.url(0)}/health?ready=true")
    assert (status, body["ready"]) == (503, False)
    group.sources[0].ready = True
    assert _get(f"{group.url(0)}/health?ready=true")[0] == 200


def test_an_unknown_run_is_404_naming_it(group: Group) -> None:
    status, body = _get(f"{group.url(0)}/runs/no-such-run")
    assert (status, body["error"]) == (404, "unknown_run")
    assert "no-such-run" in body["message"]


def test_lists_page_through_every_partition_of_both_workers(
    group: Group, run_state_factory: RunStateFactory
) -> None:
    made = _runs(group, run_state_factory, 40)
    waiting = {s.run_id for s in made if s.status is RunStatus.WAITING_APPROVAL}
    seen: list[str] = []
    url = f"{group.url(0)}/runs?status=waiting_approval&limit=3"
    pages = 0
    while True:
        status, body = _get(url)
        assert status == 200, body
        assert body["complete"] and len(body["runs"]) <= 3
        seen += [r["run_id"] for r in body["runs"]]
        pages += 1
        if body["next"] is None:
            break
        url = f"{group.url(0)}/runs?status=waiting_approval&limit=3&after={body['next']}"
    assert sorted(seen) == sorted(waiting) and len(seen) == len(set(seen))
    assert pages >= len(waiting) // 3


class _WatchedLock:
    """A lock that says when another thread starts waiting for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.contended = threading.Event()

    def __enter__(self) -> _WatchedLock:
        if not self._lock.acquire(blocking=False):
            self.contended.set()
            self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


@pytest.mark.parametrize("path", ["/runs?status=waiting_approval", "/runs/run-000"])
def test_health_answers_while_a_query_is_reading_a_store(
    group: Group, run_state_factory: RunStateFactory, path: str
) -> None:
    """Store reads run in reader threads, not on the API's event loop: a query stuck in its
    read (here: the store's lock held) does not hold up /health of the same worker."""
    _runs(group, run_state_factory, 6)
    source = _owner(group, "run-000")
    gate = _WatchedLock()
    source.lock = gate  # type: ignore[assignment]
    url = group.url(group.sources.index(source))
    answers: list[tuple[int, dict[str, Any]]] = []
    with gate:
        query = threading.Thread(target=lambda: answers.append(_get(url + path)))
        query.start()
        assert gate.contended.wait(10), "the query never reached the store"
        with urllib.request.urlopen(f"{url}/health", timeout=10) as resp:
            assert resp.status == 200 and json.loads(resp.read())["ready"]
        assert not answers  # the query is still waiting for the store
    query.join(30)
    assert answers and answers[0][0] == 200, answers


def test_filters_combine(group: Group, run_state_factory: RunStateFactory) -> None:
    made = _runs(group, run_state_factory, 30)
    status, body = _get(f"{group.url(1)}/runs?status=in_progress&owner=team-1&limit=1000")
    assert status == 200
    expected = {s.run_id for s in made if s.status is RunStatus.IN_PROGRESS and s.owner == "team-1"}
    assert {r["run_id"] for r in body["runs"]} == expected


@pytest.mark.parametrize(
    "query", ["status=sleeping", "limit=0", "limit=abc", "after=%%%", "idle_for=2"]
)
def test_bad_list_requests_are_400_saying_what_is_accepted(group: Group, query: str) -> None:
    status, body = _get(f"{group.url(0)}/runs?{query}")
    assert status == 400, body
    assert body["error"] == "bad_request" and body["message"]


def test_a_missing_owner_makes_the_list_incomplete_and_the_cursor_stops_there(
    group: Group, run_state_factory: RunStateFactory
) -> None:
    _runs(group, run_state_factory, 20)
    group.servers[1].stop()
    status, body = _get(f"{group.url(0)}/runs?limit=1000")
    assert status == 200
    assert not body["complete"] and body["missing_partitions"] == [1, 3]
    assert body["next"] is not None and decode_cursor(body["next"])[0] == 1


def test_read_your_writes_waits_for_the_commit(
    group: Group, run_state_factory: RunStateFactory
) -> None:
    state = run_state_factory(run_id="late-run", last_offset=7)
    owner = _owner(group, state.run_id)
    p = partition_for(state.run_id.encode(), PARTITIONS)
    timer = threading.Timer(0.3, lambda: owner.put(state, offset=7))
    timer.start()
    status, body = _get(f"{group.url(0)}/runs/late-run?min_partition={p}&min_offset=7&timeout=10")
    timer.join()
    assert status == 200, body
    assert body["version"] == state.version

    later = replace(state, last_offset=7)
    status, body = _get(
        f"{group.url(0)}/runs/{later.run_id}?min_partition={p}&min_offset=99&timeout=0.3"
    )
    assert (status, body["error"]) == (504, "not_caught_up")


def test_a_read_your_writes_wait_wakes_on_the_commit_not_at_a_later_look(
    group: Group, run_state_factory: RunStateFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No second look before the request's own timeout (10 minutes): only the commit signal
    # can answer it before _get gives up (its 30 s socket timeout fails the test).
    monkeypatch.setattr(query_api, "_MAX_TIMEOUT_S", 600.0)
    monkeypatch.setattr(query_api, "_COMMIT_WAIT_S", 600.0)
    state = run_state_factory(run_id="woken-run", last_offset=5)
    owner = _owner(group, state.run_id)
    server = group.servers[group.sources.index(owner)]
    p = partition_for(state.run_id.encode(), PARTITIONS)

    def commit() -> None:
        owner.put(state, offset=5)
        server.committed()

    timer = threading.Timer(0.3, commit)
    timer.start()
    status, body = _get(f"{group.url(0)}/runs/woken-run?min_partition={p}&min_offset=5&timeout=600")
    timer.join()
    assert status == 200, body
    assert body["version"] == state.version


def test_cursors_round_trip() -> None:
    assert decode_cursor(encode_cursor(3, "abc")) == (3, "abc")
    assert decode_cursor(encode_cursor(0, None)) == (0, None)
    with pytest.raises(ValueError, match="not a cursor"):
        decode_cursor("%%%")


def test_the_partition_endpoint_judges_overdue_at_the_listing_now(
    group: Group, run_state_factory: RunStateFactory
) -> None:
    """A listing fans out with its own "now", so pages agree on what is overdue."""
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    approval = Approval(
        step="check",
        approver="ops",
        approver_kind=ApproverKind.GROUP,
        subject_hash="sha256:x",
        subject="s",
        requested_at=due - timedelta(hours=2),
        due_at=due,
    )
    state = run_state_factory(
        run_id="due-soon", status=RunStatus.WAITING_APPROVAL, approval=approval
    )
    owner = _owner(group, state.run_id)
    owner.put(state, offset=1)
    p = partition_for(state.run_id.encode(), PARTITIONS)
    base = f"{group.url(0)}/partitions/{p}/runs?overdue=1"
    if p not in group.sources[0].stores:
        base = f"{group.url(1)}/partitions/{p}/runs?overdue=1"
    later = urllib.parse.quote((due + timedelta(minutes=1)).isoformat())
    assert _get(base)[1]["runs"] == []
    assert [r["run_id"] for r in _get(f"{base}&now={later}")[1]["runs"]] == ["due-soon"]


def _step_runs(group: Group, make: RunStateFactory) -> None:
    now = datetime.now(UTC)
    base = make(status=RunStatus.IN_PROGRESS, step_index=0, step_attempt=1)
    for offset, (run_id, step, phase, idle) in enumerate(
        [
            ("fresh-retry", "score", StepPhase.RETRY_SCHEDULED, timedelta()),
            ("old-retry", "score", StepPhase.RETRY_SCHEDULED, timedelta(hours=3)),
            ("old-running", "collect", StepPhase.RUNNING, timedelta(days=2)),
        ]
    ):
        state = replace(
            base, run_id=run_id, current_step=step, step_phase=phase, updated_at=now - idle
        )
        _owner(group, run_id).put(state, offset=offset)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"phase": "retry_scheduled"}, ["fresh-retry", "old-retry"]),
        ({"step": "collect"}, ["old-running"]),
        ({"idle_for": "2h"}, ["old-retry", "old-running"]),
        ({"idle_for": "1d", "status": "in_progress"}, ["old-running"]),
        ({"phase": "retry_scheduled", "idle_for": "90m", "step": "score"}, ["old-retry"]),
        ({"phase": "failed"}, []),
    ],
)
def test_list_selects_by_step_phase_and_idle_time(
    group: Group, run_state_factory: RunStateFactory, query: dict[str, str], expected: list[str]
) -> None:
    _step_runs(group, run_state_factory)
    status, body = _get(f"{group.url(0)}/runs?{urllib.parse.urlencode(query)}")
    assert status == 200, body
    assert sorted(r["run_id"] for r in body["runs"]) == expected
    assert body["complete"] and body["count"] == len(expected)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "phase=waiting",
            "unknown phase 'waiting'; one of running, completed, failed, retry_scheduled",
        ),
        ("status=sleeping", "unknown status 'sleeping'; one of created, in_progress"),
        ("idle_for=7200", "idle_for: '7200' is not a duration; write a number with a unit"),
        ("idle_for=0m", "a duration must be longer than zero"),
        ("limit=0", "limit must be 1..1000"),
        ("after=%25%25%25", "is not a cursor this API returned"),
    ],
)
def test_a_bad_filter_value_is_a_400_saying_what_is_accepted(
    group: Group, query: str, message: str
) -> None:
    for path in ("/runs", "/partitions/0/runs"):
        if path != "/runs" and query.startswith("after"):
            continue  # the partition endpoint's cursor is the index's own
        status, body = _get(f"{group.url(0)}{path}?{query}")
        assert status == 400, (path, body)
        assert body["error"] == "bad_request" and message in body["message"], (path, body)


def test_any_worker_answers_a_runs_events_from_its_owner_a_page_at_a_time(
    group: Group, run_state_factory: RunStateFactory
) -> None:
    from runstate.runs.journal import encode_event_entry, journal_key
    from tests.factories import make_run

    made = _runs(group, run_state_factory, 4)
    run_id = made[1].run_id
    events = [e.model_copy(update={"run_id": run_id}) for e in make_run(run_id, seed=2)]
    owner = _owner(group, run_id)
    p = partition_for(run_id.encode(), PARTITIONS)
    owner.stores[p].apply(
        [(journal_key(run_id, 100 + i), encode_event_entry(e)) for i, e in enumerate(events)],
        changelog_offset=50,
    )
    for i in range(2):
        seen: list[str] = []
        after = ""
        for _ in range(len(events)):
            status, body = _get(f"{group.url(i)}/runs/{run_id}/events?limit=5{after}")
            assert status == 200, body
            assert body["served_by"] == owner.worker_id and len(body["events"]) <= 5
            seen += [e["event_id"] for e in body["events"]]
            if body["next"] is None:
                break
            after = f"&after={body['next']}"
        assert seen == [e.event_id for e in events]
    status, body = _get(f"{group.url(0)}/runs/{made[0].run_id}/events")
    assert status == 200 and body["events"] == [] and body["next"] is None
    status, body = _get(f"{group.url(1)}/runs/nope/events")
    assert status == 404 and "replay --run nope" in body["message"], body
    for bad in ("limit=0", "limit=1001", "after=x", "after=-1"):
        status, body = _get(f"{group.url(0)}/runs/{run_id}/events?{bad}")
        assert status == 400, (bad, body)

"""Workers forward queries to the URL each advertises (``RUNSTATE_RUNTIME_ADVERTISED_URL``),
not to the address it binds: as in a container, where the bind address (0.0.0.0) is no
address at all. Here w2 binds one port and advertises another, where the test relays to it
and counts the connections; a read at w1 of a run w2 owns must come through the relay."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from runstate.streams.broker import free_port
from tests.factories import RunBuilder
from tests.polling import assert_eventually
from tests.workers import Deployment

pytestmark = pytest.mark.integration

PARTITIONS = 4
RUNS = 12


@contextmanager
def _relay(to_port: int) -> Iterator[tuple[int, list[int]]]:
    """A TCP relay on 127.0.0.1 (a free port) to ``to_port``; yields its port and a list
    that gets one entry per connection relayed."""
    listener = socket.create_server(("127.0.0.1", 0))
    relayed: list[int] = []

    def pump(src: socket.socket, dst: socket.socket) -> None:
        with src, dst, suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # pass the end of the stream on

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            relayed.append(1)
            upstream = socket.create_connection(("127.0.0.1", to_port))
            threading.Thread(target=pump, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, conn), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], relayed
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)


@pytest.fixture
def deployment(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> Iterator[Deployment]:
    d = Deployment(kafka_bootstrap, unique_name("adv"), PARTITIONS, tmp_path)
    d.ensure_topics()
    yield d
    d.close()


def test_a_forwarded_read_goes_to_the_advertised_url(deployment: Deployment) -> None:
    d = deployment
    bound = free_port()
    with _relay(bound) as (advertised, relayed):
        w1 = d.worker("w1").start()
        w2 = d.worker(
            "w2",
            port=bound,
            env={"RUNSTATE_RUNTIME_ADVERTISED_URL": f"http://127.0.0.1:{advertised}"},
        ).start()
        for w in (w1, w2):
            w.wait_ready()

        def shared() -> bool:
            owned = [w.health() or {} for w in (w1, w2)]
            assert all(h.get("ready") and h["active_partitions"] for h in owned), owned
            assert sum(len(h["active_partitions"]) for h in owned) == PARTITIONS, owned
            return True

        assert_eventually(shared, timeout_s=60, what="both workers own partitions")
        with d.producer() as p:
            for i in range(RUNS):
                b = RunBuilder(f"run-{i:02d}")
                b.start()
                for e in b.events:
                    p.emit(e)

        served_by: dict[str, str] = {}

        def answered_at_w1() -> bool:
            for i in range(RUNS):
                run_id = f"run-{i:02d}"
                if run_id not in served_by:
                    status, body = w1.get(f"/runs/{run_id}")
                    assert status == 200, (run_id, status, body)
                    served_by[run_id] = body["served_by"]
            return True

        assert_eventually(answered_at_w1, timeout_s=60, what="every run answered at w1")
        by_w2 = [r for r, worker in served_by.items() if worker == "w2"]
        assert by_w2, served_by  # some runs live on w2: their reads were forwarded
        assert relayed, "w1 forwarded to w2's bind address, not to the URL w2 advertised"

        before = len(relayed)
        status, body = w2.get(f"/runs/{by_w2[0]}")  # w2 knows its advertised URL as itself
        assert (status, body["served_by"]) == (200, "w2")
        assert len(relayed) == before

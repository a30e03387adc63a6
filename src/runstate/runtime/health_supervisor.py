"""The worker's side of ``/health`` in a process of its own: publish the status, keep the
health process (:mod:`runstate.runtime.health_process`) running.

The loop's thread, at each poll (:meth:`HealthSupervisor.polled`), writes its heartbeat on
the board (:class:`~runstate.runtime.health_board.StatusBoard`) and, every
:data:`PUBLISH_S`, the worker's status: no other thread has to take the GIL from the loop
for it. A thread of the worker, every :data:`LOOK_S`, starts the health process again if it
ended and publishes the status itself when the loop has not for that long (it waits inside
a checkpoint for a broker that is away, or takes on an assignment): the status is read the
way the in-process ``/health`` reads it (values the loop replaces whole, no lock), so the
reason reaches the board. Nothing here grows with events: one JSON of the status per
:data:`PUBLISH_S`.

The health process ends with the worker (kill -9 included): it holds the read end of a pipe
whose only write end is in this process, and on Linux it also asks the kernel for SIGTERM
when the thread that started it (this one) ends.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import runstate
from runstate.runtime.health_board import StatusBoard

__all__ = ["LOOK_S", "PUBLISH_S", "HealthSupervisor"]

log = logging.getLogger(__name__)

#: How often the loop publishes the status.
PUBLISH_S = 0.05
#: How often the thread looks after the health process, and publishes for a loop that has
#: not (it wakes the loop's GIL-holding thread this often, no more).
LOOK_S = 0.25
#: A health process that ends sooner than this after its start is started again only after
#: a back-off (doubling up to :data:`MAX_BACKOFF_S`): e.g. its port is taken.
QUICK_EXIT_S = 5.0
MAX_BACKOFF_S = 30.0
#: The directory holding the ``runstate`` package, for the child's ``sys.path``.
_PACKAGE_ROOT = str(Path(runstate.__file__).resolve().parents[1])


class HealthSupervisor:
    """Publishes ``status()`` on ``board`` and runs the health process on ``host:port``."""

    def __init__(
        self,
        board: StatusBoard,
        status: Callable[[], Mapping[str, Any]],
        *,
        host: str,
        port: int,
        stall_s: float,
        publish_s: float = PUBLISH_S,
        look_s: float = LOOK_S,
    ) -> None:
        self._board = board
        self._status = status
        self._host = host
        self._port = port
        self._stall_s = stall_s
        self._publish_s = publish_s
        self._look_s = look_s
        self._published = 0.0
        self._publishing = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pipe: int | None = None
        self._started_at = 0.0
        self._next_start = 0.0
        self._backoff = 0.0
        #: health processes started (1 + restarts)
        self.starts = 0

    @property
    def pid(self) -> int | None:
        """The running health process's id (None between one's end and the next start)."""
        proc = self._proc
        return None if proc is None else proc.pid

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}/health"

    def polled(self, at: float) -> None:
        """The loop polled at ``at`` (``time.monotonic()``; on the loop's thread): the
        heartbeat, and the status if :data:`PUBLISH_S` has passed since the last one."""
        self._board.beat(at)
        if at - self._published >= self._publish_s:
            self._publish(at)

    def start(self) -> None:
        """Publish once, then start the thread (which starts the health process)."""
        self._publish(time.monotonic())
        self._thread = threading.Thread(target=self._run, name="runstate-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the health process and the thread; close the board."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(30)
        self._board.close()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                if now - self._published >= self._look_s:  # the loop is held somewhere
                    self._publish(now)
                self._look_after()
                self._stopping.wait(self._look_s)
        finally:
            self._end_child()

    def _publish(self, at: float) -> None:
        try:
            with self._publishing:  # the loop's thread and this one
                self._board.publish(self._status(), at=at)
                self._published = at
        except Exception:  # a bug here must not end the publishing; the age shows it
            log.exception("publishing the worker's status for /health failed")

    def _look_after(self) -> None:
        proc = self._proc
        if proc is not None:
            code = proc.poll()
            if code is None:
                return
            lived = time.monotonic() - self._started_at
            self._backoff = (
                min(MAX_BACKOFF_S, max(1.0, self._backoff * 2)) if lived < QUICK_EXIT_S else 0.0
            )
            log.warning(
                "the health process (port %s) ended with exit code %s after %.1fs; starting"
                " it again%s",
                self._port,
                code,
                lived,
                f" in {self._backoff:.0f}s" if self._backoff else "",
            )
            self._close_pipe()
            self._proc = None
            self._next_start = time.monotonic() + self._backoff
        if time.monotonic() >= self._next_start:
            self._spawn()

    def _spawn(self) -> None:
        read_end, write_end = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([_PACKAGE_ROOT, *filter(None, [env.get("PYTHONPATH")])])
        try:
            # -S: no site-packages, no sitecustomize (the standard library and runstate's
            # own health modules are all it imports): a start in tens of milliseconds
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-S",
                    "-m",
                    "runstate.runtime.health_process",
                    "--board-fd",
                    str(self._board.fd),
                    "--parent-fd",
                    str(read_end),
                    "--host",
                    self._host,
                    "--port",
                    str(self._port),
                    "--stall-s",
                    str(self._stall_s),
                ],
                pass_fds=(self._board.fd, read_end),
                stdin=subprocess.DEVNULL,
                env=env,
                # A session of its own: with autogroup scheduling (Linux desktops and VMs)
                # the scheduler shares the CPU between sessions first, and in the worker's
                # the health process waits whenever the busy worker used up the session's
                # share. Its own session, rarely running, gets a core at once. (Signals
                # to the worker's process group do not reach it; the pipe ends it.)
                start_new_session=True,
            )
        except OSError as exc:
            os.close(write_end)
            log.warning("the health process could not be started: %s", exc)
            self._next_start = time.monotonic() + MAX_BACKOFF_S
            return
        finally:
            os.close(read_end)
        self._pipe = write_end
        self._started_at = time.monotonic()
        self.starts += 1
        log.info("health process %s serves %s", self._proc.pid, self.url)

    def _end_child(self) -> None:
        proc, self._proc = self._proc, None
        self._close_pipe()  # end-of-file: it exits by itself
        if proc is None:
            return
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def _close_pipe(self) -> None:
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None

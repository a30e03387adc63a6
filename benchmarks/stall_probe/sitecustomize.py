"""A stall probe loaded into each worker process of ``benchmarks.scale`` (``sitecustomize``).

When ``RUNSTATE_STALL_PROBE`` names a file, a thread of the worker sleeps 10 ms again and
again; whenever it wakes more than 50 ms late it appends one JSON line saying how late, how
much CPU the worker's main thread (the poll loop) used meanwhile and how long both threads
waited for a core, and the same for the process's other Python threads (the query API's)
that ran or waited 5 ms or more. Cyclic garbage collections longer than 20 ms are logged
too. A late wake with the loop's CPU near the delay is the loop holding the GIL (what the
query API's thread, ``/health``, waits for); one where the probe waited mostly for a core is
the machine's; one where the probe was blocked (late, not waiting for a core) while the
loop's thread waited for a core is the loop preempted while holding the GIL.
Linux only (``/proc/self/task/*/schedstat``); nothing happens without the variable.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
import traceback
from collections import Counter
from typing import Any

_PATH = os.environ.get("RUNSTATE_STALL_PROBE")
_LATE_S = 0.05
_SLEEP_S = 0.01


def _sched_ms(tid: int) -> tuple[float, float]:
    """(ms on a core, ms waiting for one) of thread ``tid``."""
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        run, wait, _ = f.read().split()
    return int(run) / 1e6, int(wait) / 1e6


def _python_threads(me: int) -> list[tuple[str, int]]:
    """(name, native id) of this process's other Python threads than the loop and the probe."""
    return [
        (t.name, t.native_id)
        for t in threading.enumerate()
        if t.native_id is not None and t.native_id != me and t is not threading.main_thread()
    ]


def _where(ident: int | None) -> list[str]:
    """Where the loop's thread is now (innermost last): right after a long call that held
    the GIL, it is still at the line that made it."""
    frame = sys._current_frames().get(ident) if ident is not None else None
    if frame is None:
        return []
    return [
        f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
        for f in traceback.extract_stack(frame, limit=6)
    ]


def _start(path: str) -> None:
    out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's life
    lock = threading.Lock()
    main = threading.main_thread()

    def write(record: dict[str, Any]) -> None:
        with lock:
            out.write(json.dumps({"at": round(time.time(), 3), **record}) + "\n")

    collecting: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collecting["t"] = time.perf_counter()
        elif "t" in collecting:
            ms = (time.perf_counter() - collecting.pop("t")) * 1000
            if ms > 20:
                record: dict[str, Any] = {
                    "gc_ms": round(ms, 1),
                    "generation": info["generation"],
                    "thread": threading.current_thread().name,
                }
                if info["generation"] == 2:
                    # what a full collection walked (survivors; the frozen are not walked)
                    kept = gc.get_objects(2)
                    record["oldest_objects"] = len(kept)
                    record["oldest_types"] = Counter(type(o).__name__ for o in kept).most_common(8)
                    del kept
                write(record)

    gc.callbacks.append(on_gc)

    def watch() -> None:
        me = threading.get_native_id()
        loop = main.native_id
        assert loop is not None
        while True:
            others = _python_threads(me)
            t0, l0, m0 = time.perf_counter(), _sched_ms(loop), _sched_ms(me)
            before = {name: _sched_ms(tid) for name, tid in others}
            time.sleep(_SLEEP_S)
            late = time.perf_counter() - t0 - _SLEEP_S
            if late > _LATE_S:
                l1, m1 = _sched_ms(loop), _sched_ms(me)
                threads = {}
                for name, tid in others:
                    try:
                        run, wait = _sched_ms(tid)
                    except OSError:
                        continue  # ended meanwhile
                    cpu, waited = run - before[name][0], wait - before[name][1]
                    if cpu >= 5 or waited >= 5:
                        threads[name] = [round(cpu, 1), round(waited, 1)]
                write(
                    {
                        "late_ms": round(late * 1000, 1),
                        "loop_cpu_ms": round(l1[0] - l0[0], 1),
                        "loop_waited_ms": round(l1[1] - l0[1], 1),
                        "probe_waited_ms": round(m1[1] - m0[1], 1),
                        # late, less waiting for a core: waiting for the GIL (or blocked)
                        "probe_blocked_ms": round(late * 1000 - (m1[1] - m0[1]), 1),
                        # other Python threads: [CPU, waited for a core] (ms), 5 ms or more
                        "threads": threads,
                        "loop_at": _where(main.ident),
                    }
                )

    threading.Thread(target=watch, name="stall-probe", daemon=True).start()


if _PATH:
    _start(_PATH)

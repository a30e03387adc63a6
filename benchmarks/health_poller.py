"""``python -m benchmarks.health_poller URL OUT [--interval S]``: poll one ``/health`` endpoint
until SIGTERM, one JSON line per poll in OUT.

A process of its own, in a session of its own (the benchmark starts it so), like a kubelet's
probe: its pauses are not the benchmark's (whose session holds the broker and the loader and
whose GIL its other threads share). Each line: ``at`` (wall clock), ``mono`` (when the
answer came, monotonic), ``status`` (0: no answer), ``ready``, ``degraded``, ``answer_s``
(the request's round trip), ``late_s`` (how late this poller woke from its sleep) and
``load`` (the 1-minute load average).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from types import FrameType

__all__ = ["main"]


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.health_poller")
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args(argv)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    with open(args.out, "a", buffering=1) as out:
        while not stopping:
            slept = time.monotonic()
            time.sleep(args.interval)
            woke = time.monotonic()
            status, body = _get(args.url)
            now = time.monotonic()
            line = {
                "at": time.time(),
                "mono": now,
                "status": status,
                "ready": bool(body.get("ready")),
                "degraded": bool(body.get("degraded")),
                "answer_s": now - woke,
                "late_s": max(0.0, woke - slept - args.interval),
                "load": os.getloadavg()[0],
            }
            out.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

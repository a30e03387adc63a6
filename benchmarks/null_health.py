"""``python -m benchmarks.null_health PORT``: a ``/health`` that reads nothing and always
answers 200, the scale benchmark's control.

Started in a session of its own beside the workers and polled the same way as their
endpoints: its pauses are what the machine (the scheduler, the pollers themselves) adds to
any endpoint, the floor under the workers' figures.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["main"]

_BODY = json.dumps({"ready": True, "degraded": False}).encode()


class _Health(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(_BODY)))
        self.end_headers()
        self.wfile.write(_BODY)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""


def main(argv: list[str] | None = None) -> int:
    port = int((argv or sys.argv[1:])[0])
    server = ThreadingHTTPServer(("127.0.0.1", port), _Health)
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

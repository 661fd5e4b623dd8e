"""A test stand-in for the app: ``/health`` in the seed's format, and a frontend page.

``mode`` sets how ``/health`` answers: healthy, degraded (a service disconnected), slow
(healthy after ``delay_seconds``), error (HTTP 503), malformed (not JSON), huge (a 100 MB body
with its length declared), huge_stream (100 MB with no declared length) or hang (accept, never
answer). A path prefix ``/mode/<mode>/`` overrides the mode per request, so one server can play
many targets. ``versions`` makes the version change over successive requests (deployments).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HUGE_BYTES = 100 * 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


@dataclass
class HealthServer:
    host: str = "127.0.0.1"
    mode: str = "healthy"
    version: str = "1.2.3"
    services: dict = field(default_factory=lambda: {"database": "connected", "redis": "connected",
                                                     "storage": "connected"})
    delay_seconds: float = 0.0
    frontend_status: int = 200
    requests: list[str] = field(default_factory=list)

    def __post_init__(self):
        server = self
        self._closing = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                mode, path = server.mode, self.path
                if path.startswith("/mode/"):
                    _, _, mode, rest = path.split("/", 3)
                    path = "/" + rest
                if not path.rstrip("/").endswith("/health"):
                    self._reply(server.frontend_status, b"<html>shop</html>", "text/html")
                    return
                if mode == "hang":
                    server._closing.wait()
                    return
                if mode == "slow" or server.delay_seconds:
                    time.sleep(server.delay_seconds)
                if mode == "error":
                    self._reply(503, json.dumps({"status": "unhealthy"}).encode(), "application/json")
                elif mode == "malformed":
                    self._reply(200, b"<html>Bad gateway</html>", "text/html")
                elif mode == "huge":
                    self._stream(declared=True)
                elif mode == "huge_stream":
                    self._stream(declared=False)
                else:
                    services = dict(server.services)
                    status = "healthy" if all(v == "connected" for v in services.values()) else "unhealthy"
                    if mode == "degraded":
                        services["redis"] = "disconnected"
                        status = "degraded"
                    body = {"status": status, "timestamp": time.time(), "services": services,
                            "version": server.current_version()}
                    self._reply(200, json.dumps(body).encode(), "application/json")

            def _stream(self, declared: bool):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if declared:
                    self.send_header("Content-Length", str(HUGE_BYTES))
                self.end_headers()
                chunk = b"x" * 65536
                try:
                    for _ in range(HUGE_BYTES // len(chunk)):
                        self.wfile.write(chunk)
                except OSError:
                    pass

            def _reply(self, status, body, content_type):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = _Server((self.host, 0), Handler)
        self.port = self._httpd.server_address[1]
        self._versions: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def mode_url(self, mode: str) -> str:
        return f"{self.url}/mode/{mode}"

    def switch_version_after(self, seconds: float, version: str) -> None:
        """Serve ``version`` from ``seconds`` from now on, as a deployment finishing would."""
        self._versions.append((time.monotonic() + seconds, version))

    def current_version(self) -> str:
        now = time.monotonic()
        for switch_at, version in sorted(self._versions):
            if now >= switch_at:
                self.version = version
        self._versions = [(at, v) for at, v in self._versions if at > now]
        return self.version

    def close(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()


class SilentListener:
    """A TCP port whose kernel accepts connections that nobody ever reads or answers."""

    def __init__(self, host: str = "127.0.0.1", backlog: int = 256):
        self.socket = socket.socket()
        self.socket.bind((host, 0))
        self.socket.listen(backlog)
        self.host, self.port = self.socket.getsockname()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self.socket.close()


if __name__ == "__main__":
    import sys

    served = HealthServer()
    print(served.port, flush=True)
    sys.stdin.read()
    served.close()

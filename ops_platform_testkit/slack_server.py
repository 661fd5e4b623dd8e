"""A Slack-compatible HTTP server for tests: answers chat.postMessage and incoming-webhook posts
like Slack does and records every request. It can be switched to fail (HTTP 500) or stall, and to
refuse blocks beyond Slack's limits as Slack does (``enforce_block_limits``: ``invalid_blocks``)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


SECTION_TEXT_LIMIT = 3000
BLOCKS_LIMIT = 50


def block_limit_problem(payload: dict) -> str | None:
    """What Slack would refuse in a message's blocks: more than 50 blocks, or a section whose
    text is longer than 3,000 characters; None when it is within the limits."""
    blocks = payload.get("blocks") or []
    if len(blocks) > BLOCKS_LIMIT:
        return f"no more than {BLOCKS_LIMIT} items allowed [json-pointer:/blocks]"
    for index, block in enumerate(blocks):
        text = (block.get("text") or {}).get("text") if isinstance(block, dict) else None
        if isinstance(text, str) and len(text) > SECTION_TEXT_LIMIT:
            return f"must be less than {SECTION_TEXT_LIMIT + 1} characters [json-pointer:/blocks/{index}/text/text]"
    return None


@dataclass
class RecordedRequest:
    path: str
    headers: dict
    body: bytes
    payload: dict

    @property
    def text(self) -> str:
        return str(self.payload.get("text", ""))


@dataclass
class SlackServer:
    host: str = "127.0.0.1"
    requests: list[RecordedRequest] = field(default_factory=list)
    fail_status: int | None = None
    delay_seconds: float = 0.0
    enforce_block_limits: bool = False

    def __post_init__(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                content_type = self.headers.get("Content-Type", "")
                if "json" in content_type:
                    payload = json.loads(body or b"{}")
                else:
                    payload = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                    if isinstance(payload.get("blocks"), str):
                        payload["blocks"] = json.loads(payload["blocks"])
                server.requests.append(RecordedRequest(self.path, dict(self.headers), body, payload))
                if server.delay_seconds:
                    time.sleep(server.delay_seconds)
                if server.fail_status:
                    self._reply(server.fail_status, b"internal_error", "text/plain")
                    return
                problem = block_limit_problem(payload) if server.enforce_block_limits else None
                if problem and self.path.startswith("/api/"):
                    self._reply(200, json.dumps({"ok": False, "error": "invalid_blocks",
                                                 "errors": [problem]}).encode(), "application/json")
                    return
                if problem:
                    self._reply(400, b"invalid_blocks", "text/plain")
                    return
                if self.path.startswith("/api/chat.postMessage"):
                    reply = {"ok": True, "channel": payload.get("channel", "C0TEST"), "ts": f"{time.time():.6f}",
                             "message": {"text": payload.get("text", "")}}
                    self._reply(200, json.dumps(reply).encode(), "application/json")
                elif self.path.startswith("/api/"):
                    self._reply(200, b'{"ok": true}', "application/json")
                else:
                    self._reply(200, b"ok", "text/html")

            def _reply(self, status, body, content_type):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, client_address: None  # clients that gave up
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/"

    @property
    def webhook_url(self) -> str:
        return f"http://{self.host}:{self.port}/services/T000/B000/XXXXwebhooksecret"

    def messages(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith("/api/chat.postMessage") or r.path.startswith("/services/")]

    def texts(self) -> list[str]:
        return [r.text for r in self.messages()]

    def all_bodies(self) -> str:
        return "\n".join(r.body.decode(errors="replace") for r in self.requests)

    def reset(self) -> None:
        self.requests.clear()
        self.fail_status = None
        self.delay_seconds = 0.0
        self.enforce_block_limits = False

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

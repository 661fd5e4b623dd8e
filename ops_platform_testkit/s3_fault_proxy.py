"""An HTTP proxy in front of the moto S3 server that can fail on cue, to test S3 outages.

``fail_parts_after = N`` lets N UploadPart requests through, then answers every later
UploadPart with HTTP 500 (S3's InternalError), as an endpoint failing mid-upload would.
``fail_heads = True`` answers every HEAD (head_object) with HTTP 500.
``fail_first_upload = True`` fails every UploadPart of the first multipart upload only (the next
upload of the same file goes through).
``down = True`` refuses everything. ``stall_downloads = True`` accepts every GET of a dump file
(``.dump.zst``/``.dump.gz``) and never answers it, as an endpoint that hangs mid-download. ``requests`` records (method, path) of every request.
``drop_encryption = True`` forwards requests without their ``x-amz-server-side-encryption*``
headers, as a store that ignores server-side encryption would; ``headers`` records (method, path,
headers as the client sent them) of every request."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ERROR_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
              b"<Message>We encountered an internal error. Please try again.</Message></Error>")


class S3FaultProxy:
    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.fail_parts_after: int | None = None
        self.down = False
        self.fail_heads = False
        self.parts_passed = 0
        self.parts_failed = 0
        self.requests: list[tuple[str, str]] = []
        self.fail_first_upload = False
        self._first_upload: str | None = None
        self.drop_encryption = False
        self.stall_downloads = False
        self._released = threading.Event()
        self.headers: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.requests.append((self.command, self.path))
                proxy.headers.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                if proxy.stall_downloads and self.command == "GET" and ".dump." in urlsplit(self.path).path:
                    proxy._released.wait()
                    return
                if proxy.down or proxy._should_fail(self.command, self.path):
                    self.send_response(500)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(ERROR_BODY)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(ERROR_BODY)
                    return
                connection = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)
                           and not (proxy.drop_encryption and k.lower().startswith("x-amz-server-side-encryption"))}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                # A HEAD answer has no body but tells the object's length: pass that on.
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def _should_fail(self, method: str, path: str) -> bool:
        if method == "HEAD" and self.fail_heads:
            return True
        if self.fail_first_upload and method == "PUT" and "partNumber=" in path:
            upload_id = parse_qs(urlsplit(path).query).get("uploadId", [""])[0]
            with self._lock:
                self._first_upload = self._first_upload or upload_id
                return upload_id == self._first_upload
        if method != "PUT" or "partNumber=" not in path or self.fail_parts_after is None:
            return False
        with self._lock:
            if self.parts_passed < self.fail_parts_after:
                self.parts_passed += 1
                return False
            self.parts_failed += 1
            return True

    def close(self):
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

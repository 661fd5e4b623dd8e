"""The deployment gateway: what CI's credential reaches, and all it can do.

Dagster OSS has no roles: whoever reaches a webserver that can launch runs can launch any job,
restores included. CI needs one power, to verify a deployment of its environment, so it gets a
small HTTP service of its own in front of that one mutation, and no access to the webserver::

    POST /verifications                      {"environment", "expected_version", "timeout_seconds"}
    GET  /verifications/<run_id>?after=...   status and progress lines of that verification
    POST /verifications/<run_id>/terminate   cancel it (the CI job was cancelled)

Each request carries ``Authorization: Bearer <token>``; the gateway keeps only the token's SHA-256
per environment (``<ENV>_DEPLOY_TOKEN_SHA256``, comma-separated for rotation), so a token verifies
deployments of its own environment and reads or cancels those runs only. The job, the run config
(three checked fields, the timeout within DEPLOY_MAX_TIMEOUT_SECONDS) and the tags are fixed
here; anything else is 404. It launches through the webserver's GraphQL API on loopback, needs
none of the platform's secrets, and speaks plain HTTP on loopback behind the host's TLS proxy.

    python -m ops_platform.gateway --port 3100 --webserver http://127.0.0.1:3000
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from ops_platform.config import ENVIRONMENT_PREFIXES, ConfigError, printable
from ops_platform.lib import settings
from ops_platform.lib.deploy import DeploymentLimits, max_runtime_seconds
from ops_platform.lib.network import is_loopback
from ops_platform.lib.redact import Redactor
from ops_platform.lib.tags import ENVIRONMENT, LAUNCHED_BY, MAX_RUNTIME
from ops_platform.lib.webserver import Webserver, WebserverError

JOB = "verify_deployment_job"
TOKEN_VARIABLE = "DEPLOY_TOKEN_SHA256"
FIELDS = ("environment", "expected_version", "timeout_seconds")
MAX_BODY_BYTES = 4096
MAX_VERSION_CHARS = 200
_RUN_PATH = re.compile(r"^/verifications/(?P<run_id>[0-9a-f-]{36})(?P<terminate>/terminate)?$")


def token_digest(token: str) -> str:
    """What ``<ENV>_DEPLOY_TOKEN_SHA256`` holds for a token: ``printf %s "$TOKEN" | sha256sum``."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_digests(environ: Mapping[str, str]) -> dict[str, list[str]]:
    """The accepted token digests of each environment. Raises ConfigError for a malformed one."""
    found = {}
    for name, prefix in ENVIRONMENT_PREFIXES.items():
        variable = f"{prefix}{TOKEN_VARIABLE}"
        digests = [value.strip().lower() for value in environ.get(variable, "").split(",") if value.strip()]
        for digest in digests:
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ConfigError(f"{variable} must hold SHA-256 digests (64 hex digits), comma-separated")
        if digests:
            found[name] = digests
    return found


class Refused(Exception):
    """A request the gateway answers with ``status`` and one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Gateway:
    webserver: Webserver
    digests: dict[str, list[str]]
    public_url: str | None = None
    redactor: Redactor = field(default_factory=Redactor.from_environ)

    def environments_of(self, authorization: str | None) -> set[str]:
        """The environments whose verifications the bearer token in ``authorization`` may start."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return set()
        digest = token_digest(token.strip())
        return {name for name, digests in self.digests.items()
                if any(hmac.compare_digest(digest, known) for known in digests)}

    def start(self, body: object, authorization: str | None) -> dict:
        """Launch a verification after checking the request and what the platform has configured."""
        allowed = self.environments_of(authorization)
        if not allowed:
            raise Refused(401, "the token is not accepted")
        if not isinstance(body, dict):
            raise Refused(400, "the request must be a JSON object")
        unknown = sorted(set(body) - set(FIELDS))
        if unknown:
            raise Refused(400, f"unknown field '{printable(str(unknown[0]))}'; a verification takes only "
                               f"{', '.join(FIELDS)}")
        name = body.get("environment")
        if name not in ENVIRONMENT_PREFIXES:
            raise Refused(400, f"unknown environment '{printable(str(name))}'; expected one of "
                               f"{', '.join(ENVIRONMENT_PREFIXES)}")
        if name not in allowed:
            raise Refused(401, f"the token is not accepted for verifications of {name}")
        version, timeout = body.get("expected_version"), body.get("timeout_seconds")
        if not isinstance(version, str) or not version.strip() or len(version) > MAX_VERSION_CHARS \
                or not version.isprintable():
            raise Refused(400, f"expected_version must be a version of at most {MAX_VERSION_CHARS} printable "
                               "characters")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise Refused(400, "timeout_seconds must be a number")
        selector = self.webserver.find_job(JOB)
        if not self.webserver.has_asset(f"{name}_api"):
            raise Refused(400, f"{ENVIRONMENT_PREFIXES[name]}API_URL is not set on the platform; cannot verify a "
                               f"deployment of {name}")
        problems = self.webserver.invalid_settings(selector, "deployment_settings")
        if problems:
            raise Refused(400, problems[0])
        limits = self._limits(selector)
        try:
            limits.check(float(timeout))
        except ConfigError as error:
            raise Refused(400, str(error)) from None
        config = {"environment": name, "expected_version": version.strip(), "timeout_seconds": float(timeout)}
        max_runtime = max_runtime_seconds(config["timeout_seconds"], limits.rollback_timeout_seconds)
        run_id = self.webserver.launch(selector, {"ops": {"verify_deployment": {"config": config}}},
                                       {ENVIRONMENT: name, MAX_RUNTIME: str(int(max_runtime)),
                                        LAUNCHED_BY: "deploy-gateway"})
        return {"run_id": run_id, "run_url": self._run_url(run_id), "max_runtime_seconds": int(max_runtime)}

    def _limits(self, selector: dict) -> DeploymentLimits:
        """The platform's limits, read from its deployment_settings (defaults where it sets none)."""
        values = self.webserver.resource_values(selector, "deployment_settings")
        bounds = {}
        for setting in (settings.DEPLOY_MAX_TIMEOUT, settings.DEPLOY_ROLLBACK_TIMEOUT):
            try:
                bounds[setting.field] = float(json.loads(values[setting.field]))
            except (KeyError, TypeError, ValueError):
                bounds[setting.field] = float(setting.default)
        return DeploymentLimits(**bounds)

    def _run(self, run_id: str, authorization: str | None, after: str | None = None):
        """The verification run, if the token covers it; anything else does not exist."""
        page = self.webserver.run_page(run_id, after)
        if page is None or page.job_name != JOB or page.tags.get(ENVIRONMENT) not in self.environments_of(authorization):
            raise Refused(404, f"no verification {run_id} for this token")
        return page

    def progress(self, run_id: str, after: str | None, authorization: str | None) -> dict:
        page = self._run(run_id, authorization, after)
        return {"status": page.status, "lines": page.lines, "failure": page.failure, "cursor": page.cursor,
                "has_more": page.has_more}

    def terminate(self, run_id: str, authorization: str | None) -> dict:
        self._run(run_id, authorization)
        self.webserver.terminate(run_id)
        return {"terminated": run_id}

    def _run_url(self, run_id: str) -> str | None:
        return f"{self.public_url.rstrip('/')}/runs/{run_id}" if self.public_url else None


def make_server(gateway: Gateway, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "ops-platform-gateway"
        sys_version = ""
        timeout = 30

        def do_GET(self):
            self._answer("GET")

        def do_POST(self):
            self._answer("POST")

        def _answer(self, method: str) -> None:
            parts = urlsplit(self.path)
            authorization = self.headers.get("Authorization")
            try:
                match = _RUN_PATH.match(parts.path)
                if method == "POST" and parts.path == "/verifications":
                    status, payload = 201, gateway.start(self._body(), authorization)
                elif method == "GET" and match and not match["terminate"]:
                    after = (parse_qs(parts.query).get("after") or [None])[0]
                    status, payload = 200, gateway.progress(match["run_id"], after, authorization)
                elif method == "POST" and match and match["terminate"]:
                    status, payload = 200, gateway.terminate(match["run_id"], authorization)
                else:
                    raise Refused(404, "not found: the gateway only starts and follows deployment verifications")
            except Refused as refused:
                status, payload = refused.status, {"error": str(refused)}
            except WebserverError as error:
                status, payload = 502, {"error": str(error)}
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> object:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                raise Refused(413, f"the request is larger than {MAX_BODY_BYTES} bytes")
            try:
                return json.loads(self.rfile.read(length) or b"null")
            except ValueError:
                return None

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops_platform.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="a loopback address (TLS ends at the host's proxy)")
    parser.add_argument("--port", type=int, default=3100)
    parser.add_argument("--webserver", default="http://127.0.0.1:3000",
                        help="the operators' dagster-webserver, on loopback")
    args = parser.parse_args(argv)
    try:
        if not is_loopback(args.host):
            raise ConfigError(f"--host {args.host} is not a loopback address: the gateway speaks plain HTTP; "
                              "put the host's TLS proxy in front of it")
        digests = token_digests(os.environ)
        if not digests:
            raise ConfigError(f"no CI token is accepted: set <ENV>_{TOKEN_VARIABLE} (e.g. "
                              f"PRODUCTION_{TOKEN_VARIABLE}) to the SHA-256 of the token CI sends")
    except ConfigError as error:
        print(f"ops-platform gateway: error: {error}", file=sys.stderr)
        return 2
    gateway = Gateway(Webserver(args.webserver.rstrip("/")), digests,
                      os.environ.get("DAGSTER_WEBSERVER_URL", "").strip() or None)
    server = make_server(gateway, args.host, args.port)
    print(f"deployment gateway on http://{args.host}:{server.server_address[1]} for "
          f"{', '.join(sorted(digests))}, launching through {args.webserver}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

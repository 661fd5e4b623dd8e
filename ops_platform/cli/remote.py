"""Verifying a deployment on the platform from another machine (a CI runner), through the
platform's deployment gateway (``ops_platform/gateway.py``): the run is launched there, the
platform's daemon runs it with the platform's configuration and secrets, and this process follows
it to the end, printing its progress. ``OPS_PLATFORM_URL`` is the gateway's address (https, unless
it is on this machine); ``OPS_PLATFORM_TOKEN`` is sent as a bearer token. That token can start and
follow verifications of its environment and nothing else: the gateway is not the webserver.

Nothing secret travels in the run config: the platform has its own environment."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import httpx

from ops_platform.lib.network import is_loopback
from ops_platform.lib.redact import Redactor

PLATFORM_URL = "OPS_PLATFORM_URL"
PLATFORM_TOKEN = "OPS_PLATFORM_TOKEN"
REQUEST_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 1.0
# A queued run that the platform's daemon has not started by then is canceled: the daemon is down.
START_TIMEOUT_SECONDS = 120.0
# How long the platform may stay unreachable while a run is followed.
UNREACHABLE_SECONDS = 60.0
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
WAITING = {"QUEUED", "NOT_STARTED", "STARTING"}


class PlatformError(Exception):
    """The platform could not be reached or refused the request (one line)."""


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "SUCCESS"


@dataclass
class Platform:
    """The platform's deployment gateway, as CI reaches it."""

    url: str
    token: str
    redactor: Redactor = field(default_factory=Redactor.from_environ)
    run_urls: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Platform | None:
        """The gateway named by ``OPS_PLATFORM_URL``, or None (run in this process, as before).
        It sends a token, so plain http is refused unless the gateway is on this machine."""
        raw = environ.get(PLATFORM_URL, "").strip()
        if not raw:
            return None
        redact = Redactor.from_environ(environ)
        try:
            parts = urlsplit(raw)
            parts.port  # noqa: B018 - a malformed port raises here
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise PlatformError(f"{PLATFORM_URL} must be the deployment gateway's https URL, got '{redact(raw)}'")
        if parts.username or parts.password:
            raise PlatformError(f"{PLATFORM_URL} must not hold credentials; put the token in {PLATFORM_TOKEN}")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise PlatformError(f"{PLATFORM_URL} must be https:// for {parts.hostname}: verify-deployment sends "
                                f"{PLATFORM_TOKEN}, which plain http would show to the network")
        token = environ.get(PLATFORM_TOKEN, "").strip()
        if not token:
            raise PlatformError(f"set {PLATFORM_TOKEN}, the token the platform's deployment gateway accepts")
        return cls(urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", "")), token, redact)

    def run_url(self, run_id: str) -> str:
        return self.run_urls.get(run_id) or f"run {run_id}"

    def request(self, method: str, path: str, body: dict | None = None, params: dict | None = None) -> tuple[int, dict]:
        try:
            response = httpx.request(method, f"{self.url}{path}", json=body, params=params,
                                     headers={"Authorization": f"Bearer {self.token}"},
                                     timeout=REQUEST_TIMEOUT_SECONDS, trust_env=False)
        except httpx.HTTPError as error:
            reason = "connection refused" if isinstance(error, httpx.ConnectError) else \
                f"{type(error).__name__}: {error}"
            raise PlatformError(self.redactor(f"cannot reach the platform at {self.url}: {reason}")) from None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise PlatformError(f"the platform at {self.url} did not answer as a deployment gateway (HTTP "
                                f"{response.status_code}; is {PLATFORM_URL} the gateway's address?)")
        return response.status_code, answer

    def _error(self, status: int, answer: dict) -> PlatformError:
        detail = self.redactor(str(answer.get("error") or f"HTTP {status}"))
        if status == 401:
            return PlatformError(f"the platform at {self.url} refused {PLATFORM_TOKEN}: {detail}")
        return PlatformError(f"on the platform at {self.url}: {detail}")

    def start(self, environment: str, version: str, timeout_seconds: float) -> tuple[str, float]:
        """Launch the verification; returns its run id and the longest it may take."""
        status, answer = self.request("POST", "/verifications", {
            "environment": environment, "expected_version": version, "timeout_seconds": timeout_seconds})
        if status != 201 or not answer.get("run_id"):
            raise self._error(status, answer)
        run_id = str(answer["run_id"])
        if answer.get("run_url"):
            self.run_urls[run_id] = str(answer["run_url"])
        return run_id, float(answer.get("max_runtime_seconds") or 0)

    def terminate(self, run_id: str) -> None:
        """Best effort: stop the run (a queued one is canceled)."""
        try:
            self.request("POST", f"/verifications/{run_id}/terminate")
        except PlatformError:
            pass

    def follow(self, run_id: str, on_line: Callable[[str], None], runtime_limit: float,
               start_timeout: float = START_TIMEOUT_SECONDS) -> RunOutcome:
        """Poll the run until it finishes, passing each line its steps log (and each status change)
        to ``on_line``. A run the daemon never starts is canceled after ``start_timeout``; a run
        still going after ``start_timeout + runtime_limit`` is left to the platform."""
        started = time.monotonic()
        cursor, status, failure, unreachable_since = None, None, None, None
        while True:
            try:
                code, page = self.request("GET", f"/verifications/{run_id}", params={"after": cursor} if cursor else None)
                if code >= 500:
                    raise self._error(code, page)
                unreachable_since = None
            except PlatformError as error:
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > UNREACHABLE_SECONDS:
                    raise PlatformError(f"lost contact with the platform ({error}); run {run_id} goes on "
                                        f"there: {self.run_url(run_id)}") from None
                time.sleep(POLL_SECONDS)
                continue
            if code != 200:
                raise self._error(code, page)
            cursor, more = page.get("cursor") or cursor, bool(page.get("has_more"))
            failure = failure or page.get("failure")
            for line in page.get("lines") or []:
                on_line(self.redactor(str(line)))
            if page.get("status") != status:
                status = str(page.get("status"))
                on_line(f"run {run_id}: {status.lower().replace('_', ' ')}")
            if more:
                continue
            if status in FINISHED:
                return RunOutcome(run_id, status, failure)
            elapsed = time.monotonic() - started
            if status in WAITING and elapsed > start_timeout:
                self.terminate(run_id)
                raise PlatformError(f"the platform did not start run {run_id} within {start_timeout:g}s (is its "
                                    "dagster-daemon running?); the run was canceled")
            if elapsed > start_timeout + runtime_limit:
                raise PlatformError(f"run {run_id} is still {status.lower()} after {elapsed:.0f}s; it goes on "
                                    f"on the platform: {self.run_url(run_id)}")
            time.sleep(POLL_SECONDS)

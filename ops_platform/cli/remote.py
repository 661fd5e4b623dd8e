"""Running a job on the platform's own instance from another machine (a CI runner), through the
webserver's GraphQL API: the run is launched there (``launchRun``), the platform's daemon runs it
with the platform's configuration and secrets, and this process follows it to the end, printing
its progress. ``OPS_PLATFORM_URL`` is the webserver's address; ``OPS_PLATFORM_TOKEN``, when set, is
sent as a bearer token to the auth proxy in front of it (or put ``user:password@`` in the URL).

Nothing secret travels in the run config: the platform has its own environment."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import httpx

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


_LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}"""

_FOLLOW = """
query Follow($runId: ID!, $after: String) {
  runOrError(runId: $runId) { __typename ... on Run { status } ... on Error { message } }
  logsForRun(runId: $runId, afterCursor: $after) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on MessageEvent { message level stepKey }
        ... on ExecutionStepFailureEvent { error { message } failureMetadata { description } }
      }
    }
  }
}"""


@dataclass
class Platform:
    url: str
    token: str | None = None
    auth: tuple[str, str] | None = None
    redactor: Redactor = field(default_factory=Redactor.from_environ)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Platform | None:
        """The platform named by ``OPS_PLATFORM_URL``, or None (run in this process, as before)."""
        raw = environ.get(PLATFORM_URL, "").strip()
        if not raw:
            return None
        try:
            parts = urlsplit(raw)
            port = parts.port
        except ValueError:
            parts, port = None, None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise PlatformError(f"{PLATFORM_URL} must be the webserver's http(s) URL, got "
                                f"'{Redactor.from_environ(environ)(raw)}'")
        auth = (parts.username or "", parts.password or "") if parts.username or parts.password else None
        token = environ.get(PLATFORM_TOKEN, "").strip() or None
        if auth and token:
            raise PlatformError(f"set either {PLATFORM_TOKEN} (a bearer token) or credentials in {PLATFORM_URL} "
                                "(basic auth), not both")
        netloc = parts.hostname if port is None else f"{parts.hostname}:{port}"
        url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        return cls(url, token, auth, Redactor.from_environ(environ))

    def run_url(self, run_id: str) -> str:
        return f"{self.url}/runs/{run_id}"

    def query(self, document: str, variables: dict | None = None) -> dict:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.post(f"{self.url}/graphql", json={"query": document, "variables": variables or {}},
                                  headers=headers, auth=self.auth, timeout=REQUEST_TIMEOUT_SECONDS)
        except httpx.HTTPError as error:
            reason = "connection refused" if isinstance(error, httpx.ConnectError) else \
                f"{type(error).__name__}: {error}"
            raise PlatformError(self.redactor(f"cannot reach the platform at {self.url}: {reason}")) from None
        if response.status_code in (401, 403):
            raise PlatformError(f"the platform at {self.url} refused the request (HTTP {response.status_code}); "
                                f"set {PLATFORM_TOKEN} or the URL's credentials for its auth proxy")
        if response.status_code != 200:
            raise PlatformError(f"the platform at {self.url} answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise PlatformError(f"the platform at {self.url} did not answer GraphQL (is it the Dagster "
                                "webserver?)") from None
        if body.get("errors"):
            raise PlatformError(self.redactor(f"the platform at {self.url}: {body['errors'][0].get('message')}"))
        return body.get("data") or {}

    def find_job(self, job_name: str) -> dict:
        """The selector (code location and repository) of the job on the platform."""
        data = self.query("""{ repositoriesOrError { __typename
            ... on RepositoryConnection { nodes { name location { name } jobs { name } } }
            ... on Error { message } } }""")
        repositories = data.get("repositoriesOrError") or {}
        for node in repositories.get("nodes") or []:
            if any(job.get("name") == job_name for job in node.get("jobs") or []):
                return {"repositoryLocationName": node["location"]["name"], "repositoryName": node["name"],
                        "jobName": job_name}
        detail = repositories.get("message") or "no code location there has it"
        raise PlatformError(f"the platform at {self.url} has no {job_name}: {self.redactor(detail)}")

    def has_asset(self, key: str) -> bool:
        data = self.query("query Asset($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) "
                          "{ __typename } }", {"path": [key]})
        return (data.get("assetNodeOrError") or {}).get("__typename") == "AssetNode"

    def invalid_settings(self, selector: dict, resource: str) -> list[str]:
        """The bad values a settings resource lists on the platform (``invalid_settings``)."""
        data = self.query("""query Resource($selector: ResourceSelector!) {
            topLevelResourceDetailsOrError(resourceSelector: $selector) {
              __typename ... on ResourceDetails { configuredValues { key value } } } }""",
                          {"selector": {"repositoryLocationName": selector["repositoryLocationName"],
                                        "repositoryName": selector["repositoryName"], "resourceName": resource}})
        details = data.get("topLevelResourceDetailsOrError") or {}
        for item in details.get("configuredValues") or []:
            if item.get("key") == "invalid_settings":
                try:
                    found = json.loads(item.get("value") or "[]")
                except ValueError:
                    return [str(item.get("value"))]
                return [str(problem) for problem in found] if isinstance(found, list) else []
        return []

    def launch(self, selector: dict, run_config: dict, tags: dict[str, str]) -> str:
        data = self.query(_LAUNCH, {"params": {
            "selector": selector, "runConfigData": run_config,
            "executionMetadata": {"tags": [{"key": key, "value": value} for key, value in tags.items()]}}})
        result = data.get("launchRun") or {}
        if result.get("__typename") == "LaunchRunSuccess":
            return result["run"]["runId"]
        errors = [error.get("message", "") for error in result.get("errors") or []]
        detail = errors[0] if errors else result.get("message") or result.get("__typename") or "no answer"
        raise PlatformError(self.redactor(f"the platform at {self.url} did not launch {selector['jobName']}: {detail}"))

    def terminate(self, run_id: str) -> None:
        """Best effort: stop a run (queued ones are canceled)."""
        try:
            self.query("mutation Stop($runId: String!) { terminateRun(runId: $runId) { __typename } }",
                       {"runId": run_id})
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
                data = self.query(_FOLLOW, {"runId": run_id, "after": cursor})
                unreachable_since = None
            except PlatformError as error:
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > UNREACHABLE_SECONDS:
                    raise PlatformError(f"lost contact with the platform ({error}); run {run_id} goes on "
                                        f"there: {self.run_url(run_id)}") from None
                time.sleep(POLL_SECONDS)
                continue
            logs = data.get("logsForRun") or {}
            more = False
            if logs.get("__typename") == "EventConnection":
                cursor, more = logs.get("cursor") or cursor, bool(logs.get("hasMore"))
                for event in logs.get("events") or []:
                    if event.get("__typename") == "ExecutionStepFailureEvent" and failure is None:
                        failure = _step_failure(event)
                    elif event.get("__typename") == "LogMessageEvent" and event.get("stepKey") and \
                            event.get("level") in ("INFO", "WARNING", "ERROR", "CRITICAL"):
                        on_line(self.redactor(event.get("message", "")))
            run = data.get("runOrError") or {}
            if run.get("__typename") != "Run":
                raise PlatformError(self.redactor(f"run {run_id} on the platform: {run.get('message') or 'not found'}"))
            if run["status"] != status:
                status = run["status"]
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


def _step_failure(event: dict) -> str:
    """The first line of a step failure, as ``cli/runs.py::failure_message`` shows a local one."""
    description = (event.get("failureMetadata") or {}).get("description")
    if description:
        return description.splitlines()[0]
    message = ((event.get("error") or {}).get("message") or "").strip()
    return message.splitlines()[-1] if message else "step failed"

"""The Dagster webserver's GraphQL API, as the deployment gateway (``ops_platform/gateway.py``)
uses it: find a job, check what the platform has configured, launch and terminate a run, and read
a run's status and step log lines page by page."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx

from ops_platform.lib.redact import Redactor

REQUEST_TIMEOUT_SECONDS = 30.0


class WebserverError(Exception):
    """The webserver could not be reached or refused the request (one line)."""


@dataclass(frozen=True)
class RunPage:
    """One page of a run's progress: its status, job and tags, the step log lines (INFO and up)
    after the cursor, the first step failure among them, and where the next page starts."""

    status: str
    job_name: str
    tags: dict[str, str]
    lines: list[str]
    failure: str | None
    cursor: str | None
    has_more: bool


_LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}"""

_RUN_PAGE = """
query Page($runId: ID!, $after: String) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status jobName tags { key value } }
    ... on Error { message }
  }
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
class Webserver:
    url: str
    redactor: Redactor = field(default_factory=Redactor.from_environ)

    def query(self, document: str, variables: dict | None = None) -> dict:
        try:
            response = httpx.post(f"{self.url}/graphql", json={"query": document, "variables": variables or {}},
                                  timeout=REQUEST_TIMEOUT_SECONDS, trust_env=False)
        except httpx.HTTPError as error:
            reason = "connection refused" if isinstance(error, httpx.ConnectError) else \
                f"{type(error).__name__}: {error}"
            raise WebserverError(self.redactor(f"cannot reach the Dagster webserver: {reason}")) from None
        if response.status_code != 200:
            raise WebserverError(f"the Dagster webserver answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise WebserverError("the Dagster webserver did not answer GraphQL") from None
        if body.get("errors"):
            raise WebserverError(self.redactor(f"the Dagster webserver: {body['errors'][0].get('message')}"))
        return body.get("data") or {}

    def find_job(self, job_name: str) -> dict:
        """The selector (code location and repository) of the job."""
        data = self.query("""{ repositoriesOrError { __typename
            ... on RepositoryConnection { nodes { name location { name } jobs { name } } }
            ... on Error { message } } }""")
        repositories = data.get("repositoriesOrError") or {}
        for node in repositories.get("nodes") or []:
            if any(job.get("name") == job_name for job in node.get("jobs") or []):
                return {"repositoryLocationName": node["location"]["name"], "repositoryName": node["name"],
                        "jobName": job_name}
        detail = repositories.get("message") or "no code location there has it"
        raise WebserverError(f"the platform has no {job_name}: {self.redactor(detail)}")

    def has_asset(self, key: str) -> bool:
        data = self.query("query Asset($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) "
                          "{ __typename } }", {"path": [key]})
        return (data.get("assetNodeOrError") or {}).get("__typename") == "AssetNode"

    def resource_values(self, selector: dict, resource: str) -> dict[str, str]:
        """The values a resource was configured with (those not left at their defaults), as text."""
        data = self.query("""query Resource($selector: ResourceSelector!) {
            topLevelResourceDetailsOrError(resourceSelector: $selector) {
              __typename ... on ResourceDetails { configuredValues { key value } } } }""",
                          {"selector": {"repositoryLocationName": selector["repositoryLocationName"],
                                        "repositoryName": selector["repositoryName"], "resourceName": resource}})
        details = data.get("topLevelResourceDetailsOrError") or {}
        return {item.get("key"): item.get("value") for item in details.get("configuredValues") or []}

    def invalid_settings(self, selector: dict, resource: str) -> list[str]:
        """The bad values a settings resource lists (``invalid_settings``)."""
        raw = self.resource_values(selector, resource).get("invalid_settings")
        if raw is None:
            return []
        try:
            found = json.loads(raw or "[]")
        except ValueError:
            return [str(raw)]
        return [str(problem) for problem in found] if isinstance(found, list) else []

    def launch(self, selector: dict, run_config: dict, tags: dict[str, str]) -> str:
        data = self.query(_LAUNCH, {"params": {
            "selector": selector, "runConfigData": run_config,
            "executionMetadata": {"tags": [{"key": key, "value": value} for key, value in tags.items()]}}})
        result = data.get("launchRun") or {}
        if result.get("__typename") == "LaunchRunSuccess":
            return result["run"]["runId"]
        errors = [error.get("message", "") for error in result.get("errors") or []]
        detail = errors[0] if errors else result.get("message") or result.get("__typename") or "no answer"
        raise WebserverError(self.redactor(f"the platform did not launch {selector['jobName']}: {detail}"))

    def terminate(self, run_id: str) -> None:
        """Stop a run (a queued one is canceled)."""
        self.query("mutation Stop($runId: String!) { terminateRun(runId: $runId) { __typename } }", {"runId": run_id})

    def run_page(self, run_id: str, after: str | None = None) -> RunPage | None:
        """The run's status and the step log lines after ``after``; None when there is no such run."""
        data = self.query(_RUN_PAGE, {"runId": run_id, "after": after})
        run = data.get("runOrError") or {}
        if run.get("__typename") != "Run":
            return None
        logs = data.get("logsForRun") or {}
        lines, failure, cursor, more = [], None, after, False
        if logs.get("__typename") == "EventConnection":
            cursor, more = logs.get("cursor") or after, bool(logs.get("hasMore"))
            for event in logs.get("events") or []:
                if event.get("__typename") == "ExecutionStepFailureEvent" and failure is None:
                    failure = _step_failure(event)
                elif event.get("__typename") == "LogMessageEvent" and event.get("stepKey") and \
                        event.get("level") in ("INFO", "WARNING", "ERROR", "CRITICAL"):
                    lines.append(self.redactor(event.get("message", "")))
        tags = {tag["key"]: tag["value"] for tag in run.get("tags") or []}
        return RunPage(run["status"], run.get("jobName") or "", tags, lines, failure, cursor, more)


def _step_failure(event: dict) -> str:
    """The first line of a step failure, as ``cli/runs.py::failure_message`` shows a local one."""
    description = (event.get("failureMetadata") or {}).get("description")
    if description:
        return description.splitlines()[0]
    message = ((event.get("error") or {}).get("message") or "").strip()
    return message.splitlines()[-1] if message else "step failed"

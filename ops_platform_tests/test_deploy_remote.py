"""``verify-deployment`` from a CI runner that is not the platform's host: a real dagster-webserver
and ``dagster-daemon run`` share one DAGSTER_HOME (the platform), with the deployment gateway in
front (``python -m ops_platform.gateway``, holding only token digests); the CLI runs with another
DAGSTER_HOME and none of the platform's settings (the CI runner), pointed at the gateway by
OPS_PLATFORM_URL. The platform's daemon runs the verification, and the platform's health sensor
sees it and holds its alerts. CI's token starts verifications of its environment and nothing else."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import httpx
import pytest

from ops_platform_tests.conftest import SLACK_TOKEN, free_port
from ops_platform_tests.webserver import WORKSPACE, graphql
from ops_platform_tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEPT_RUNNING = {"run_failure_slack_sensor"}
PRODUCTION_TOKEN = "ci-production-Tok3n-secret"
STAGING_TOKEN = "ci-staging-Tok3n-secret"
DEVELOPMENT_TOKEN = "ci-development-Tok3n-secret"


class PlatformProcesses:
    def __init__(self, home: Path, url: str, env: dict, health, slack):
        self.home, self.url, self.env, self.health, self.slack = home, url, env, health, slack
        self.processes: list[subprocess.Popen] = []
        self.logs: list = []
        self.selector: dict = {}
        self.repository: dict = {}

    def start(self, *argv: str, env: dict | None = None, name: str | None = None) -> None:
        """Start a platform process, its output in a log file in the platform's home."""
        self.logs.append(open(self.home / f"{name or Path(argv[0]).name}.log", "wb"))  # noqa: SIM115 - closed in close()
        self.processes.append(subprocess.Popen(list(argv), cwd=ROOT, env=env or self.env, stdout=self.logs[-1],
                                               stderr=subprocess.STDOUT))

    def start_gateway(self) -> str:
        """The deployment gateway in front of the webserver, with an environment of its own: the
        digests of CI's tokens (one per environment) and nothing of the platform's."""
        from ops_platform.gateway import token_digest

        port = free_port()
        env = {key: os.environ[key] for key in ("PATH", "PYTHONPATH", "HOME", "LANG") if key in os.environ}
        env.update(PRODUCTION_DEPLOY_TOKEN_SHA256=token_digest(PRODUCTION_TOKEN),
                   STAGING_DEPLOY_TOKEN_SHA256=token_digest(STAGING_TOKEN),
                   DEPLOY_TOKEN_SHA256=token_digest(DEVELOPMENT_TOKEN), DAGSTER_WEBSERVER_URL=self.url)
        self.start(sys.executable, "-m", "ops_platform.gateway", "--port", str(port), "--webserver", self.url,
                   env=env, name="gateway")
        self.gateway = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(self.gateway), 30, "the deployment gateway did not start")
        return self.gateway

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    def sensor(self, name: str) -> dict:
        data = graphql(self.url, """query S($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
            ... on Sensor { sensorState { id status ticks(limit: 5) { status skipReason } } } } }""",
                       {"s": {**self.selector, "sensorName": name}})
        return data["sensorOrError"]["sensorState"]

    def start_sensor(self, name: str) -> None:
        graphql(self.url, "mutation S($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename } }",
                {"s": {**self.selector, "sensorName": name}})

    def stop_sensor(self, name: str) -> None:
        state = self.sensor(name)
        graphql(self.url, "mutation S($id: String!) { stopSensor(id: $id) { __typename } }", {"id": state["id"]})

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in self.logs:
            log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/verifications", timeout=2).status_code == 404
    except httpx.HTTPError:
        return False


def start_webserver(home: Path, health, slack, **settings) -> PlatformProcesses:
    """dagster-webserver on ``home`` with the code location loaded; production's API at ``health``,
    Slack at ``slack``, a rollback command, and ``settings``."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, DAGSTER_HOME=str(home), BACKUP_DIR=str(home / "backups"),
               PRODUCTION_API_URL=health.url, SLACK_BOT_TOKEN=SLACK_TOKEN, SLACK_API_URL=slack.api_url,
               SLACK_CHANNEL="#deploys", DAGSTER_WEBSERVER_URL=url,
               PRODUCTION_ROLLBACK_COMMAND="echo rolling back to the previous release", **settings)
    for variable in ("AWS_S3_BUCKET", "API_URL", "OPS_PLATFORM_URL", "OPS_PLATFORM_TOKEN"):
        env.pop(variable, None)
    processes = PlatformProcesses(home, url, env, health, slack)
    processes.start(str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", str(WORKSPACE))

    def loaded():
        try:
            data = graphql(url, """{ repositoriesOrError { ... on RepositoryConnection { nodes { name
                location { name } schedules { name scheduleState { id } } sensors { name } } } } }""")
        except (httpx.HTTPError, AssertionError):
            return None
        nodes = data["repositoriesOrError"].get("nodes") or []
        return nodes[0] if nodes else None

    try:
        processes.repository = wait_for(loaded, 180, "dagster-webserver did not load the code location")
    except BaseException:
        processes.close()
        raise
    processes.selector = {"repositoryLocationName": processes.repository["location"]["name"],
                          "repositoryName": processes.repository["name"]}
    return processes


@pytest.fixture(scope="module")
def platform(tmp_path_factory, slack_server_session):
    """The platform: webserver and daemon on one DAGSTER_HOME, production's API at a test app,
    Slack at the test server, a rollback command. Schedules and sensors are stopped (so nothing but
    what a test starts posts to Slack), except the run-failure sensor."""
    from ops_platform_testkit.health_server import HealthServer

    health = HealthServer()
    processes = start_webserver(tmp_path_factory.mktemp("platform_home"), health, slack_server_session,
                                DEPLOY_POLL_INTERVAL_SECONDS="0.2")
    url, repository = processes.url, processes.repository
    try:
        for schedule in repository["schedules"]:
            graphql(url, "mutation S($id: String!) { stopRunningSchedule(id: $id) { __typename } }",
                    {"id": schedule["scheduleState"]["id"]})
        for sensor in repository["sensors"]:
            if sensor["name"] not in KEPT_RUNNING:
                processes.stop_sensor(sensor["name"])
        # The health sensor's first tick would replay history quietly: give it a cursor, as a
        # platform that has been running has.
        graphql(url, """mutation C($s: SensorSelector!, $c: String) { setSensorCursor(cursor: $c,
            sensorSelector: $s) { __typename } }""", {"s": {**processes.selector, "sensorName": "health_alert_sensor"},
                                                       "c": json.dumps({"after": 0})})
        processes.start(str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE))
        processes.start_gateway()
        yield processes
    finally:
        processes.close()
        health.close()


@pytest.fixture
def platform_slack(platform):
    platform.slack.reset()
    yield platform.slack
    platform.slack.reset()


def ci_runner(tmp_path, platform_url: str, token: str = PRODUCTION_TOKEN, **extra) -> dict:
    """A CI runner's environment: its own DAGSTER_HOME, its token, and none of the platform's
    settings or secrets."""
    env = {key: os.environ[key] for key in ("PATH", "PYTHONPATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    return {**env, "DAGSTER_HOME": str(tmp_path / "ci_home"), "OPS_PLATFORM_URL": platform_url,
            "OPS_PLATFORM_TOKEN": token, **extra}


def verify(env: dict, *argv: str, wait: bool = True):
    command = [str(BIN / "ops-platform"), "verify-deployment", *argv]
    if wait:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def platform_runs(platform) -> list:
    with platform.instance() as instance:
        return instance.get_runs(filters=dg.RunsFilter(job_name="verify_deployment_job"))


def deployment_texts(slack) -> list[str]:
    return [text for text in slack.texts() if "Deployment" in text or "down" in text or "failed" in text]


def test_ci_runner_verifies_on_the_platform_and_the_platform_holds_its_health_alerts(platform, platform_slack,
                                                                                     tmp_path):
    from ops_platform_tests.test_health_sensor import record

    platform.health.version = "1.0.0"
    ci = ci_runner(tmp_path, platform.gateway)
    process = verify(ci, "production", "--expected-version", "1.1.0", "--timeout", "120", wait=False)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        with platform.instance() as instance:
            def running():
                runs = instance.get_runs(filters=dg.RunsFilter(job_name="verify_deployment_job",
                                                               statuses=[dg.DagsterRunStatus.STARTED]))
                return runs[0] if runs else None

            run = wait_for(running, 120, "the platform's daemon did not start the verification run")
            assert run.tags["ops_platform/environment"] == "production"
            for offset in range(3):                  # the deploy restarts the app: checks fail meanwhile
                record(instance, time.time() + offset)
            platform.start_sensor("health_alert_sensor")
            tick = wait_for(lambda: next((t for t in platform.sensor("health_alert_sensor")["ticks"]
                                          if t["skipReason"]), None), 90,
                            "the platform's health sensor did not tick")
            platform.stop_sensor("health_alert_sensor")
            assert "read 3 check results" in tick["skipReason"]
            assert "held for deployment verification: production" in tick["skipReason"]
            for offset in range(2):                  # and pass again once it is up
                record(instance, time.time() + 10 + offset, status="healthy", reason="healthy")
        wait_for(lambda: any(line.startswith("attempt ") for line in lines), 60,
                 "the CLI showed no progress of the verification")
        platform.health.version = "1.1.0"
        process.wait(timeout=120)
        reader.join(timeout=10)
        out, err = process.stdout.read(), "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert out.strip() == f"deployment of 1.1.0 to production verified (run {run.run_id})"
    assert f"on the platform: {platform.url}/runs/{run.run_id}" in err
    assert "attempt 1: /health reports version '1.0.0', expected '1.1.0'" in err
    assert f"run {run.run_id}: success" in err
    texts = deployment_texts(platform_slack)
    assert len(texts) == 2, texts
    assert "Deployment started" in texts[0] and "Deployment succeeded" in texts[1]
    assert not (tmp_path / "ci_home").exists()
    with platform.instance() as instance:
        finished = instance.get_run_by_id(run.run_id)
        assert finished.status == dg.DagsterRunStatus.SUCCESS
        assert finished.tags["ops_platform/launched_by"] == "deploy-gateway"
        assert finished.run_config["ops"]["verify_deployment"]["config"] == {
            "environment": "production", "expected_version": "1.1.0", "timeout_seconds": 120.0}


def test_a_failed_verification_rolls_back_on_the_platform_and_exits_1(platform, platform_slack, tmp_path):
    platform.health.version = "1.1.0"
    result = verify(ci_runner(tmp_path, platform.gateway), "production", "--expected-version", "9.9.9", "--timeout", "2")
    assert result.returncode == 1, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("ops-platform: error: deployment of 9.9.9 to production failed, rolled back: not "
                            "healthy at version 9.9.9 within 2s: /health reports version '1.1.0'")
    texts = deployment_texts(platform_slack)
    assert len(texts) == 2 and "Deployment failed, rolled back" in texts[1]
    assert "rolling back to the previous release" in texts[1]


def test_a_canceled_ci_job_terminates_its_run_on_the_platform(platform, platform_slack, tmp_path):
    import signal

    platform.health.version = "1.1.0"
    process = verify(ci_runner(tmp_path, platform.gateway), "production", "--expected-version", "7.0.0",
                     "--timeout", "120", wait=False)
    try:
        with platform.instance() as instance:
            def verifying():
                runs = instance.get_runs(filters=dg.RunsFilter(job_name="verify_deployment_job",
                                                               statuses=[dg.DagsterRunStatus.STARTED]))
                return runs[0] if runs else None

            run = wait_for(verifying, 120, "the verification run did not start")
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=60)
            assert process.returncode == 143, err
            assert f"run {run.run_id} on the platform was terminated" in err
            wait_for(lambda: instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED, 60,
                     "the run on the platform was not canceled")
    finally:
        if process.poll() is None:
            process.kill()
    assert not any("rolled back" in text for text in platform_slack.texts())


def test_configuration_missing_on_the_platform_is_exit_2_before_any_run(platform, tmp_path):
    before = len(platform_runs(platform))
    result = verify(ci_runner(tmp_path, platform.gateway, token=DEVELOPMENT_TOKEN), "development",
                    "--expected-version", "1")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"ops-platform: error: on the platform at {platform.gateway}: API_URL "
                                     "is not set on the platform; cannot verify a deployment of development")
    too_long = verify(ci_runner(tmp_path, platform.gateway), "production", "--expected-version", "1",
                      "--timeout", "86400")
    assert too_long.returncode == 2
    assert too_long.stderr.strip() == (f"ops-platform: error: on the platform at {platform.gateway}: timeout may be "
                                       "at most 1800s (DEPLOY_MAX_TIMEOUT_SECONDS), got 86400")
    assert len(platform_runs(platform)) == before


def test_a_bad_deployment_setting_on_the_platform_is_exit_2_before_any_run(tmp_path, slack_server, health_server):
    processes = start_webserver(tmp_path / "home", health_server, slack_server, DEPLOY_POLL_INTERVAL_SECONDS="soon")
    try:
        gateway = processes.start_gateway()
        result = verify(ci_runner(tmp_path, gateway), "production", "--expected-version", "1")
        assert result.returncode == 2
        assert result.stderr.strip() == (f"ops-platform: error: on the platform at {gateway}: "
                                         "DEPLOY_POLL_INTERVAL_SECONDS must be a number, got 'soon'")
        with processes.instance() as instance:
            assert instance.get_runs() == []
    finally:
        processes.close()


def test_an_unreachable_platform_is_exit_2(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    result = verify(ci_runner(tmp_path, url), "production", "--expected-version", "1")
    assert result.returncode == 2
    assert result.stderr.strip() == f"ops-platform: error: cannot reach the platform at {url}: connection refused"
    result = verify(ci_runner(tmp_path, "ftp://platform"), "production", "--expected-version", "1")
    assert result.returncode == 2 and "OPS_PLATFORM_URL must be the deployment gateway's https URL" in result.stderr
    assert not (tmp_path / "ci_home").exists()


def test_the_token_is_sent_only_over_https_or_to_this_machine_and_never_printed(tmp_path, slack_server):
    """An HTTP server that is not the gateway records what it is sent."""
    plain = f"http://127.0.0.1:{slack_server.port}"
    result = verify(ci_runner(tmp_path, plain), "production", "--expected-version", "1")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"ops-platform: error: the platform at {plain} did not answer as a deployment "
                                     "gateway (HTTP 200; is OPS_PLATFORM_URL the gateway's address?)")
    [request] = slack_server.requests
    assert request.path == "/verifications" and request.headers["Authorization"] == f"Bearer {PRODUCTION_TOKEN}"
    for url, refusal in ((f"http://192.0.2.10:{slack_server.port}", "OPS_PLATFORM_URL must be https:// for 192.0.2.10: "
                                                                    "verify-deployment sends OPS_PLATFORM_TOKEN"),
                         ("http://platform.example.com", "OPS_PLATFORM_URL must be https:// for platform.example.com"),
                         (f"http://ci:{STAGING_TOKEN}@127.0.0.1:{slack_server.port}", "must not hold credentials")):
        result = verify(ci_runner(tmp_path, url), "production", "--expected-version", "1")
        assert result.returncode == 2 and refusal in result.stderr, result.stderr
        assert PRODUCTION_TOKEN not in result.stderr + result.stdout and STAGING_TOKEN not in result.stderr
    missing = verify(ci_runner(tmp_path, plain, token=""), "production", "--expected-version", "1")
    assert missing.returncode == 2 and "set OPS_PLATFORM_TOKEN" in missing.stderr
    assert len(slack_server.requests) == 1


def test_the_ci_token_verifies_its_own_environment_and_can_do_nothing_else(platform, tmp_path):
    """Through the gateway, CI's token launches no other job, no other run config, no other
    environment's verification, and reads or cancels no other run."""
    from ops_platform_tests.dagster_private import DagsterRun, DagsterRunStatus

    gateway = platform.gateway
    bearer = {"Authorization": f"Bearer {PRODUCTION_TOKEN}"}
    with platform.instance() as instance:
        backup = DagsterRun(job_name="backup_job", run_id=str(uuid.uuid4()), status=DagsterRunStatus.NOT_STARTED,
                            tags={"ops_platform/environment": "production"})
        instance.add_run(backup)
        before = {run.run_id for run in instance.get_runs()}
    launch_restore = {"query": "mutation { launchRun(executionParams: {selector: {repositoryLocationName: "
                               "\"ops_platform\", repositoryName: \"__repository__\", jobName: \"restore_job\"}}) "
                               "{ __typename } }"}
    verification = {"environment": "production", "expected_version": "1.2.3", "timeout_seconds": 5}
    answers = [
        httpx.post(f"{gateway}/graphql", json=launch_restore, headers=bearer),
        httpx.get(f"{gateway}/graphql", params=launch_restore, headers=bearer),
        httpx.post(f"{gateway}/verifications", json={**verification, "job": "restore_job"}, headers=bearer),
        httpx.post(f"{gateway}/verifications", json={**verification, "run_config": {"ops": {}}}, headers=bearer),
        httpx.post(f"{gateway}/verifications", json={**verification, "environment": "staging"}, headers=bearer),
        httpx.post(f"{gateway}/verifications", json=verification,
                   headers={"Authorization": f"Bearer {STAGING_TOKEN}"}),
        httpx.post(f"{gateway}/verifications", json=verification),
        httpx.post(f"{gateway}/verifications", json=verification, headers={"Authorization": "Bearer guess"}),
        httpx.get(f"{gateway}/verifications/{backup.run_id}", headers=bearer),
        httpx.post(f"{gateway}/verifications/{backup.run_id}/terminate", headers=bearer),
    ]
    assert [answer.status_code for answer in answers] == [404, 404, 400, 400, 401, 401, 401, 401, 404, 404]
    assert answers[2].json()["error"] == ("unknown field 'job'; a verification takes only environment, "
                                          "expected_version, timeout_seconds")
    assert answers[5].json()["error"] == "the token is not accepted for verifications of production"
    with platform.instance() as instance:
        assert {run.run_id for run in instance.get_runs()} == before
        assert instance.get_run_by_id(backup.run_id).status == DagsterRunStatus.NOT_STARTED
        instance.delete_run(backup.run_id)

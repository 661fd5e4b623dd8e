"""Post-deployment verification and rollback: the library against the test /health server and real
subprocesses, then the whole thing through ``ops-platform verify-deployment`` as a Dagster run."""

from __future__ import annotations

import json
import time

import pytest

from ops_platform import cli
from ops_platform.config import EnvironmentConfig
from ops_platform.lib import deploy
from ops_platform.lib.redact import Redactor
from ops_platform_tests.conftest import (
    SLACK_TOKEN,
    database_url,
    free_port,
    platform_resources,
)

SECRET = "R0llbackS3cretValue"


def production(**overrides) -> EnvironmentConfig:
    return EnvironmentConfig("production", database_url("production"), **overrides)


def test_version_arriving_late_within_budget_succeeds(health_server):
    health_server.version = "1.2.2"
    health_server.switch_version_after(0.4, "1.2.3")
    outcome = deploy.wait_for_version(health_server.url, "1.2.3", 3, poll_interval=0.1)
    assert outcome.ok and outcome.attempts >= 2 and 0.3 < outcome.seconds < 2


def test_version_that_never_arrives_fails_on_time(health_server):
    health_server.version = "1.2.2"
    started = time.monotonic()
    outcome = deploy.wait_for_version(health_server.url, "1.2.3", 0.5, poll_interval=0.1)
    assert not outcome.ok and outcome.observed_version == "1.2.2"
    assert outcome.reason == "not healthy at version 1.2.3 within 0.5s: /health reports version '1.2.2', expected '1.2.3'"
    assert time.monotonic() - started < 1.5


def test_hanging_app_does_not_stretch_the_budget(silent_listener):
    started = time.monotonic()
    outcome = deploy.wait_for_version(silent_listener.url, "1.2.3", 0.5, poll_interval=0.1)
    assert not outcome.ok and "sent no answer in time" in outcome.reason
    assert time.monotonic() - started < 1.5


def test_rollback_command_output_is_captured_and_redacted(monkeypatch):
    monkeypatch.setenv("PRODUCTION_ROLLBACK_TOKEN", SECRET)
    monkeypatch.setenv("COMMAND_VARIABLES", "PRODUCTION_ROLLBACK_TOKEN")
    command = 'echo "rolling back from $OPS_EXPECTED_VERSION to previous, token $PRODUCTION_ROLLBACK_TOKEN"'
    outcome = deploy.run_rollback(production(rollback_command=command), "1.2.3", "1.2.2", "version mismatch", 5)
    assert outcome.ok and outcome.summary == "rollback command succeeded"
    assert outcome.output == "rolling back from 1.2.3 to previous, token ***"


def test_failing_rollback_command_is_reported():
    outcome = deploy.run_rollback(production(rollback_command="echo 'kubectl: forbidden' >&2; exit 3"),
                                  "1.2.3", None, "down", 5)
    assert not outcome.ok and outcome.summary == "rollback command exited with code 3"
    assert "kubectl: forbidden" in outcome.output


def test_hanging_rollback_command_is_killed_at_its_timeout():
    started = time.monotonic()
    outcome = deploy.run_rollback(production(rollback_command="echo started; sleep 30"), "1.2.3", None, "down", 0.5)
    assert not outcome.ok and outcome.summary == "rollback command timed out after 0.5s and was killed"
    assert outcome.output == "started"
    assert time.monotonic() - started < 3


def test_rollback_webhook(slack_server):
    url = f"http://127.0.0.1:{slack_server.port}/hooks/rollback?token={SECRET}"
    outcome = deploy.run_rollback(production(rollback_webhook_url=url), "1.2.3", "1.2.2", "version mismatch", 5,
                                  Redactor.from_environ({"PRODUCTION_ROLLBACK_WEBHOOK_URL": url}))
    assert outcome.ok and outcome.summary == "rollback webhook accepted (HTTP 200)"
    [request] = slack_server.requests
    assert json.loads(request.body) == {"environment": "production", "expected_version": "1.2.3",
                                        "observed_version": "1.2.2", "reason": "version mismatch"}
    slack_server.fail_status = 500
    failed = deploy.run_rollback(production(rollback_webhook_url=url), "1.2.3", None, "down", 5)
    assert not failed.ok and failed.summary == "rollback webhook answered HTTP 500"
    refused = deploy.run_rollback(production(rollback_webhook_url=f"http://127.0.0.1:{free_port()}/x"),
                                  "1.2.3", None, "down", 5)
    assert refused.summary == "rollback webhook failed: connection refused by 127.0.0.1"


def test_no_rollback_configured():
    outcome = deploy.run_rollback(production(), "1.2.3", None, "down", 5)
    assert not outcome.attempted
    assert outcome.summary == ("no rollback configured (set PRODUCTION_ROLLBACK_COMMAND or "
                               "PRODUCTION_ROLLBACK_WEBHOOK_URL)")


@pytest.fixture
def deployed(monkeypatch, health_server, slack_server):
    """Production's API is the test app; Slack goes to the test server; polls are fast."""
    monkeypatch.setenv("PRODUCTION_API_URL", health_server.url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", SLACK_TOKEN)
    monkeypatch.setenv("SLACK_API_URL", slack_server.api_url)
    monkeypatch.setenv("SLACK_CHANNEL", "#deploys")
    monkeypatch.setenv("DEPLOY_POLL_INTERVAL_SECONDS", "0.1")
    monkeypatch.delenv("PRODUCTION_ROLLBACK_COMMAND", raising=False)
    monkeypatch.delenv("PRODUCTION_ROLLBACK_WEBHOOK_URL", raising=False)
    return health_server


def verify(version="1.2.4", timeout="3", environment="production") -> int:
    return cli.main(["verify-deployment", environment, "--expected-version", version, "--timeout", timeout])


def test_cli_verifies_a_late_version(deployed, slack_server, capsys):
    deployed.version = "1.2.3"
    deployed.switch_version_after(0.5, "1.2.4")
    assert verify() == 0
    assert "deployment of 1.2.4 to production verified" in capsys.readouterr().out
    texts = slack_server.texts()
    assert len(texts) == 2
    assert "Deployment started" in texts[0] and "`1.2.4`" in texts[0]
    assert "Deployment succeeded" in texts[1]


def test_cli_rolls_back_when_the_version_never_arrives(deployed, slack_server, capsys, monkeypatch):
    monkeypatch.setenv("PRODUCTION_ROLLBACK_COMMAND", "echo restoring release 1.2.3")
    assert verify(timeout="0.5") == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert error.startswith("ops-platform: error: deployment of 1.2.4 to production failed, rolled back: not "
                            "healthy at version 1.2.4 within 0.5s: /health reports version '1.2.3'")
    texts = slack_server.texts()
    assert len(texts) == 2 and "Deployment failed, rolled back" in texts[1]
    assert "restoring release 1.2.3" in texts[1]


def test_cli_reports_a_failed_rollback(deployed, slack_server, capsys, monkeypatch):
    monkeypatch.setenv("PRODUCTION_ROLLBACK_COMMAND", "echo no permission >&2; exit 4")
    deployed.mode = "error"
    assert verify(timeout="0.3") == 1
    assert "failed, rollback failed" in capsys.readouterr().err
    assert "rollback failed" in slack_server.texts()[-1] and "exited with code 4" in slack_server.texts()[-1]


def test_cli_rollback_through_the_webhook(deployed, slack_server, capsys, monkeypatch):
    monkeypatch.setenv("PRODUCTION_ROLLBACK_WEBHOOK_URL", f"http://127.0.0.1:{slack_server.port}/hooks/rollback")
    assert verify(timeout="0.3") == 1
    assert "rolled back" in capsys.readouterr().err
    assert any(r.path == "/hooks/rollback" for r in slack_server.requests)


@pytest.mark.parametrize("argv, message", [
    (["verify-deployment", "prod", "--expected-version", "1"], "unknown environment 'prod'; configured: "
                                                                "production, staging, development"),
    (["verify-deployment", "development", "--expected-version", "1"], "API_URL is not set; cannot verify a "
                                                                       "deployment of development"),
    (["verify-deployment", "production", "--expected-version", "1", "--timeout", "0"],
     "--timeout must be > 0 seconds, got 0"),
    (["verify-deployment", "production", "--expected-version", "1", "--timeout", "soon"], "invalid float value"),
    (["verify-deployment", "production", "--expected-version", "1", "--timeout", "86400"],
     "--timeout may be at most 1800s (DEPLOY_MAX_TIMEOUT_SECONDS), got 86400"),
    (["verify-deployment", "production"], "the following arguments are required: --expected-version"),
])
def test_cli_bad_input_is_one_line_and_exit_2(argv, message, capsys, monkeypatch):
    monkeypatch.delenv("API_URL", raising=False)
    assert cli.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error


def test_health_alerts_are_held_while_a_real_verification_runs(deployed, slack_server, capsys):
    import threading

    import dagster as dg

    from ops_platform.defs.health import sensors as health_sensors
    from ops_platform.defs.resources import OpsSlackResource
    from ops_platform_tests.test_health_sensor import record

    deployed.version = "1.2.3"
    exit_codes = []
    verification = threading.Thread(target=lambda: exit_codes.append(verify(timeout="3")))
    verification.start()
    slack = OpsSlackResource(token=SLACK_TOKEN, base_url=slack_server.api_url, channel="#ops", max_retries=1)
    with dg.DagsterInstance.get() as instance:
        deadline = time.monotonic() + 10
        while "production" not in health_sensors.environments_being_verified(instance):
            assert time.monotonic() < deadline, "the verification run never started"
            time.sleep(0.05)
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [spec.key for spec in health_sensors.health_assets.health_check_specs])
        cursor = json.dumps({"after": max([r.id for r in latest.values()], default=0)})
        def tick():
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=platform_resources(slack=slack))
            health_sensors.health_alert_sensor(context)
            return context.cursor

        for offset in range(4):
            record(instance, time.time() + offset, component="api")
            cursor = tick()
        verification.join()
        assert json.loads(cursor)["tracker"]["environments"]["production"]["incident"]["announced"] is False
        cursor = tick()
    assert exit_codes == [1]
    texts = [message.text for message in slack_server.messages() if message.path.startswith("/api/")]
    assert len(texts) == 5, texts
    assert "Deployment started" in texts[0] and "production: health alerts held" in texts[1]
    assert "Deployment failed" in texts[2]
    assert "production: health alerts resume" in texts[3] and "the verification ended" in texts[3]
    assert "production: 1 component is down" in texts[4]


@pytest.mark.parametrize("asked, message", [
    ({"timeout_seconds": 7200.0}, "timeout may be at most 1800s (DEPLOY_MAX_TIMEOUT_SECONDS), got 7200"),
    ({"timeout_seconds": 5.0, "rollback_timeout_seconds": 3600.0},
     "rollback timeout must be > 0 and at most 300s (DEPLOY_ROLLBACK_TIMEOUT_SECONDS), got 3600"),
])
def test_a_launch_that_asks_for_more_than_the_settings_allow_fails_before_any_work(asked, message, deployed,
                                                                                  slack_server):
    """However it is launched (here as the UI or the daemon would run it), with any max-runtime tag."""
    import dagster as dg

    from ops_platform.defs.deployments.jobs import verify_deployment_job

    config = {"environment": "production", "expected_version": "1.2.3", **asked}
    with dg.instance_for_test() as instance:
        result = verify_deployment_job.execute_in_process(
            run_config={"ops": {"verify_deployment": {"config": config}}}, resources=platform_resources(),
            instance=instance, raise_on_error=False, tags={"dagster/max_runtime_seconds": "999999"})
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert failure.step_failure_data.user_failure_data.description == message
    assert deployed.requests == [] and slack_server.texts() == []

"""The health alert sensor over scripted timelines of recorded check results, through the real
Dagster instance, sensor context and Slack client (pointed at the test Slack server)."""

from __future__ import annotations

import json
import uuid

import dagster as dg
import pytest

from ops_platform.defs.alerts import outbox
from ops_platform.defs.health import assets as health_assets
from ops_platform.defs.health import sensors as health_sensors
from ops_platform.lib.deploy import max_runtime_seconds
from ops_platform.lib.tags import ENVIRONMENT
from ops_platform_tests.conftest import SLACK_TOKEN, platform_resources
from ops_platform_tests.dagster_private import DagsterRun, DagsterRunStatus

T0 = 1_790_000_000.0
FIVE_MIN = 300.0


def posted(slack_server) -> list[str]:
    """Texts sent through chat.postMessage (the webhook receives the same messages)."""
    return [r.text for r in slack_server.messages() if r.path.startswith("/api/chat.postMessage")]


def record(instance, at: float, environment="production", component="api", status="unhealthy",
           reason="/health answered HTTP 503", checked_at=dg.MetadataValue.timestamp):
    """A check result as a sweep records it (``checked_at`` a timestamp; sweeps before it was one
    recorded a float, which ``checked_at=dg.MetadataValue.float`` writes)."""
    key = health_assets.check_key_for(environment, component)
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=key.asset_key, check_name=key.name, passed=status == "healthy",
        metadata={"environment": dg.MetadataValue.text(environment),
                  "component": dg.MetadataValue.text(component),
                  "status": dg.MetadataValue.text(status),
                  "reason": dg.MetadataValue.text(reason),
                  "checked_at": checked_at(at)},
        severity=dg.AssetCheckSeverity.ERROR,
    ))


class Daemon:
    """Ticks the sensor the way the daemon does: a fresh context each time, the cursor persisted."""

    def __init__(self, instance, slack_resource):
        self.instance, self.slack_resource, self.cursor = instance, slack_resource, None

    def tick(self):
        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor,
                                          resources=platform_resources(slack=self.slack_resource))
        result = health_sensors.health_alert_sensor(context)
        self.cursor = context.cursor
        return result


def script(instance, daemon, pattern: str, start_index: int = 0, component="api", environment="production"):
    """One sweep per 5 minutes ('.' healthy, 'x' failed), one sensor tick after each."""
    for offset, mark in enumerate(pattern):
        record(instance, T0 + (start_index + offset) * FIVE_MIN, environment, component,
               "healthy" if mark == "." else "unhealthy")
        daemon.tick()
    return start_index + len(pattern)


@pytest.fixture
def bot_slack(slack_server):
    from ops_platform.defs.resources import OpsSlackResource

    return OpsSlackResource(token=SLACK_TOKEN, base_url=slack_server.api_url, channel="#ops", max_retries=1)


@pytest.fixture
def daemon(instance, bot_slack):
    return Daemon(instance, bot_slack)


def test_blip_then_outage_then_reminders_then_one_recovery(instance, daemon, slack_server):
    index = script(instance, daemon, "..x...")
    assert posted(slack_server) == []
    index = script(instance, daemon, "xxx", index)
    [opened] = posted(slack_server)
    assert "production: 1 component is down" in opened and "/health answered HTTP 503" in opened
    assert "after 3 consecutive failed checks" in opened
    slack_server.reset()
    index = script(instance, daemon, "x" * 24, index)
    texts = posted(slack_server)
    assert len(texts) == 2 and all("still down" in text for text in texts)
    assert "after 1h 10m" in texts[0] and "after 2h 10m" in texts[1]
    slack_server.reset()
    script(instance, daemon, "....", index)
    [recovered] = posted(slack_server)
    assert "production recovered" in recovered and "Downtime: 2h 15m" in recovered


def test_results_recorded_before_checked_at_was_a_timestamp_still_count(instance, daemon, slack_server):
    """An instance upgraded in place: older results (a float) and newer ones (a timestamp) form one timeline."""
    daemon.tick()
    for offset in range(2):
        record(instance, T0 + offset * FIVE_MIN, checked_at=dg.MetadataValue.float)
    record(instance, T0 + 2 * FIVE_MIN)
    daemon.tick()
    [opened] = posted(slack_server)
    assert "production: 1 component is down" in opened and "after 3 consecutive failed checks" in opened


def test_restart_mid_incident_sends_no_duplicate_and_still_recovers(instance, bot_slack, slack_server):
    first = Daemon(instance, bot_slack)
    index = script(instance, first, "xxxx")
    assert len(posted(slack_server)) == 1
    restarted = Daemon(instance, bot_slack)
    restarted.cursor = first.cursor
    restarted.tick()
    index = script(instance, restarted, "xx", index)
    assert len(posted(slack_server)) == 1
    script(instance, restarted, "..", index)
    texts = posted(slack_server)
    assert len(texts) == 2 and "Downtime: 30m 00s" in texts[1]


def test_components_down_together_share_one_message(instance, daemon, slack_server):
    daemon.tick()
    for offset in range(3):
        at = T0 + offset * FIVE_MIN
        record(instance, at, "staging", "api", reason="/health reports status 'degraded'; redis: disconnected")
        record(instance, at, "staging", "api_redis", reason="the app reports redis: disconnected")
        record(instance, at, "staging", "postgres", status="healthy", reason="SELECT 1 succeeded")
    daemon.tick()
    [text] = posted(slack_server)
    assert "staging: 2 components are down" in text
    assert "*api_redis*: the app reports redis: disconnected" in text


def test_flapping_sends_one_notice(instance, daemon, slack_server):
    script(instance, daemon, "x.x.x.x.x.x.x.", component="frontend")
    texts = posted(slack_server)
    assert len(texts) == 1 and "frontend is flapping" in texts[0]


def test_slack_500_never_breaks_the_sensor(instance, daemon, slack_server):
    slack_server.fail_status = 500
    script(instance, daemon, "xxx")
    assert json.loads(daemon.cursor)["tracker"]["environments"]["production"]["incident"] is not None


def test_alerts_are_held_while_a_deployment_is_verified(instance, daemon, slack_server):
    run = DagsterRun(job_name="verify_deployment_job", run_id=str(uuid.uuid4()),
                     status=DagsterRunStatus.STARTED, tags={ENVIRONMENT: "production"})
    instance.add_run(run)
    index = script(instance, daemon, "xxxx..")
    [held] = posted(slack_server)
    assert "production: health alerts held" in held
    index = script(instance, daemon, "xxxx", index)
    assert len(posted(slack_server)) == 1
    instance.report_run_failed(run)
    script(instance, daemon, "x", index)
    [_, resumed, text] = posted(slack_server)
    assert "production: health alerts resume" in resumed and "the verification ended" in resumed
    assert "production: 1 component is down" in text


def test_results_without_health_metadata_are_ignored(instance, daemon, slack_server):
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("production_postgres"), check_name="reachable", passed=False, metadata={}))
    assert "read 0 check results" in daemon.tick().skip_message


def test_first_tick_replays_history_quietly_and_announces_only_what_is_still_down(instance, daemon, slack_server):
    for offset, mark in enumerate("xxxx..." + "xxx"):
        record(instance, T0 + offset * FIVE_MIN, status="healthy" if mark == "." else "unhealthy")
        record(instance, T0 + offset * FIVE_MIN, component="frontend", status="unhealthy" if offset < 4 else "healthy")
    daemon.tick()
    assert posted(slack_server) == []
    daemon.tick()
    [text] = posted(slack_server)
    assert "production: 1 component is down" in text and "*api*" in text


# --- runs that have planned checks but have not finished -------------------------------------------


def check_run(instance, environment="production", status=DagsterRunStatus.NOT_STARTED):
    """A health_check_job run created the way the schedule creates one, with its checks planned:
    execution records that get their result only when the run executes."""
    from ops_platform.definitions import defs

    job = defs().resolve_job_def("health_check_job")
    config = {"ops": {"health_checks": {"config": {"environments": [environment]}}}}
    return instance.create_run_for_job(job_def=job, run_config=config, status=status)


def finish(instance, run, at: float, environment="production", component="api", status="unhealthy"):
    """The run executes: its planned api check gets a result, then the run succeeds (a failed
    check does not fail the sweep)."""
    from ops_platform_tests.dagster_private import DagsterEvent, DagsterEventType

    key = health_assets.check_key_for(environment, component)
    evaluation = dg.AssetCheckEvaluation(
        asset_key=key.asset_key, check_name=key.name, passed=status == "healthy",
        metadata={"environment": dg.MetadataValue.text(environment),
                  "component": dg.MetadataValue.text(component),
                  "status": dg.MetadataValue.text(status),
                  "reason": dg.MetadataValue.text("/health answered HTTP 503"),
                  "checked_at": dg.MetadataValue.timestamp(at)},
        severity=dg.AssetCheckSeverity.ERROR)
    instance.report_dagster_event(DagsterEvent(event_type_value=DagsterEventType.ASSET_CHECK_EVALUATION.value,
                                               job_name=run.job_name, event_specific_data=evaluation),
                                  run_id=run.run_id)
    instance.handle_run_event(run.run_id, DagsterEvent(event_type_value=DagsterEventType.RUN_SUCCESS.value,
                                                       job_name=run.job_name))


def test_result_of_a_run_that_had_not_started_at_the_tick_is_still_read(instance, daemon, slack_server):
    daemon.tick()
    index = script(instance, daemon, "xx")
    run = check_run(instance)
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.NOT_STARTED
    daemon.tick()
    finish(instance, run, T0 + index * FIVE_MIN)
    assert "read 1 check results" in daemon.tick().skip_message
    [text] = posted(slack_server)
    assert "production: 1 component is down" in text


def test_an_older_pending_result_behind_newer_ones_is_still_read(instance, daemon, slack_server):
    daemon.tick()
    index = script(instance, daemon, "xx")
    slow = check_run(instance, status=DagsterRunStatus.STARTED)
    record(instance, T0 + 9 * FIVE_MIN, status="healthy", reason="healthy")  # a newer result, read first
    daemon.tick()
    script(instance, daemon, ".", 10)
    finish(instance, slow, T0 + index * FIVE_MIN)
    assert "read 1 check results" in daemon.tick().skip_message
    cursor = json.loads(daemon.cursor)
    assert cursor["pending_checks"] == []
    component = cursor["tracker"]["environments"]["production"]["components"]["api"]
    assert component["failures"] == 1 and component["reason"] == "/health answered HTTP 503"


# --- deployment verification runs ---------------------------------------------------------------------


def verify_run(instance, started_seconds_ago: float, tags=None, run_config=None):
    import datetime as dt

    from ops_platform_tests.dagster_private import DagsterEvent, DagsterEventType

    run = DagsterRun(job_name="verify_deployment_job", run_id=str(uuid.uuid4()),
                     status=DagsterRunStatus.NOT_STARTED, run_config=run_config or {},
                     tags={ENVIRONMENT: "production", **(tags or {})})
    instance.add_run(run)
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=started_seconds_ago)
    instance.handle_run_event(run.run_id, DagsterEvent(event_type_value=DagsterEventType.RUN_START.value,
                                                       job_name=run.job_name), update_timestamp=started)
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED
    return run


def test_a_dead_verification_run_does_not_hold_alerts_forever(instance, daemon, slack_server):
    verify_run(instance, 2 * 3600, tags={"dagster/max_runtime_seconds": "900"})
    verify_run(instance, 2 * 3600, run_config={"ops": {"verify_deployment": {"config": {
        "environment": "production", "expected_version": "1", "timeout_seconds": 600,
        "rollback_timeout_seconds": 60}}}})
    assert health_sensors.environments_being_verified(instance) == {}
    script(instance, daemon, "xxxx")
    [text] = posted(slack_server)
    assert "production: 1 component is down" in text


def test_a_hold_is_bounded_whatever_the_launcher_asked_and_announced_when_it_starts_and_ends(
        instance, daemon, slack_server, monkeypatch):
    """A launcher may set any max-runtime tag: the hold lasts at most DEPLOY_MAX_TIMEOUT_SECONDS plus
    the rollback timeout and a margin (here 600 + 300 + 300 s)."""
    monkeypatch.setenv("DEPLOY_MAX_TIMEOUT_SECONDS", "600")
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "http://dagster.example")
    verify_run(instance, 1300, tags={"dagster/max_runtime_seconds": str(30 * 86400)})
    assert health_sensors.environments_being_verified(instance, limit=1200) == {}
    daemon.tick()
    assert posted(slack_server) == []
    run = verify_run(instance, 60, tags={"dagster/max_runtime_seconds": str(30 * 86400)})
    daemon.tick()
    [held] = posted(slack_server)
    assert held.startswith(":pause_button: *production: health alerts held* while a deployment is verified, until ")
    assert f"/runs/{run.run_id}|View the verification run in Dagster>" in held
    hold = json.loads(daemon.cursor)["holds"]["production"]
    assert hold["run_id"] == run.run_id and hold["until"] - hold["since"] == 1200
    daemon.tick()
    assert len(posted(slack_server)) == 1
    instance.report_run_canceled(instance.get_run_by_id(run.run_id))
    daemon.tick()
    resumed = posted(slack_server)[1]
    assert resumed.startswith(":arrow_forward: *production: health alerts resume* after ")
    assert resumed.endswith(f": the verification ended.\n<http://dagster.example/runs/{run.run_id}|View the "
                            "verification run in Dagster>")


def test_a_live_verification_run_within_its_time_limit_still_holds(instance, daemon, slack_server):
    verify_run(instance, 600, tags={"dagster/max_runtime_seconds": "900"})
    script(instance, daemon, "xxxx")
    [held] = posted(slack_server)
    assert "production: health alerts held" in held
    assert "held for deployment verification: production" in daemon.tick().skip_message


def test_verify_job_declares_its_max_runtime():
    from ops_platform.defs.deployments import jobs as deployment_jobs

    tag = deployment_jobs.verify_deployment_job.tags["dagster/max_runtime_seconds"]
    assert float(tag) == max_runtime_seconds(300, 300) > 600


# --- slow Slack -----------------------------------------------------------------------------------------


class TimeLimitedDaemon(Daemon):
    """Like the daemon: a tick that runs past the time limit is abandoned and its cursor not saved."""

    def __init__(self, instance, slack_resource, limit: float):
        super().__init__(instance, slack_resource)
        self.limit = limit

    def tick(self):
        import time

        cursor = self.cursor
        started = time.monotonic()
        result = super().tick()
        if time.monotonic() - started > self.limit:
            self.cursor = cursor
        return result


def test_slow_slack_never_causes_duplicate_alerts(instance, bot_slack, slack_server, monkeypatch):
    monkeypatch.setattr(outbox, "POST_BUDGET_SECONDS", 0.5)
    daemon = TimeLimitedDaemon(instance, bot_slack, limit=3.0)
    daemon.tick()
    environments = ("production", "staging", "development")
    for offset in range(3):
        for environment in environments:
            record(instance, T0 + offset * FIVE_MIN, environment, "postgres")
    slack_server.delay_seconds = 1.2  # three messages take 3.6 s: more than the tick may take
    for _ in range(4):
        daemon.tick()
    texts = posted(slack_server)
    assert sorted(texts) == sorted(set(texts)) and len(texts) == 3
    assert json.loads(daemon.cursor)["outbox"] == []


def test_slack_errors_do_not_repeat_alerts(instance, slack_server, monkeypatch):
    from ops_platform.defs.resources import OpsSlackResource

    monkeypatch.setattr(outbox, "POST_BUDGET_SECONDS", 0.5)
    default_retries = OpsSlackResource(token=SLACK_TOKEN, base_url=slack_server.api_url, channel="#ops")
    daemon = TimeLimitedDaemon(instance, default_retries, limit=3.0)
    slack_server.fail_status = 500
    slack_server.delay_seconds = 0.3
    script(instance, daemon, "xxx")
    daemon.tick()
    daemon.tick()
    texts = posted(slack_server)
    assert texts and len(set(texts)) == 1 and len(texts) <= 2  # one message, at most one retry


def test_posts_per_tick_are_capped_and_the_rest_carried_in_the_cursor(instance, daemon, slack_server,
                                                                      monkeypatch):
    monkeypatch.setattr(outbox, "MAX_POSTS_PER_TICK", 2)
    daemon.tick()
    for offset in range(3):
        for environment in ("production", "staging", "development"):
            record(instance, T0 + offset * FIVE_MIN, environment, "postgres")
    assert "1 left for the next tick" in daemon.tick().skip_message
    assert len(posted(slack_server)) == 2
    daemon.tick()
    texts = posted(slack_server)
    assert len(texts) == 3 and len(set(texts)) == 3
    assert all(any(f"*{name}: 1 component is down*" in t for t in texts) for name in ("production", "staging", "development"))

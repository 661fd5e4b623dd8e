"""health_check_job end to end: real probes against the test /health server, PostgreSQL, Redis
and moto S3, results recorded as asset checks, then read back by the alert sensor."""

from __future__ import annotations

import datetime as dt
import functools

import dagster as dg
import pytest

from ops_platform.definitions import defs
from ops_platform.defs.health import sensors as health_sensors
from ops_platform_tests.conftest import (
    DB_PASSWORD,
    DB_USER,
    SLACK_TOKEN,
    free_port,
    platform_resources,
)

REDIS_SECRET = "R3disPassw0rdSecret"
API_TOKEN = "ApiQueryT0kenSecret"


@pytest.fixture
def databases(monkeypatch):
    """Every environment's database URL points at the server's maintenance database: health
    needs a reachable database, not the test data other suites recreate."""
    for variable in ("PRODUCTION_DATABASE_URL", "STAGING_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.setenv(variable, f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:5432/postgres")


@pytest.fixture
def app(monkeypatch, health_server, s3_bucket):
    """Production and staging pointed at the test app; development has only its database."""
    monkeypatch.setenv("PRODUCTION_API_URL", health_server.url)
    monkeypatch.setenv("PRODUCTION_FRONTEND_URL", health_server.url + "/")
    monkeypatch.setenv("PRODUCTION_REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("STAGING_API_URL", health_server.url)
    return health_server


@functools.lru_cache(maxsize=1)
def health_job():
    return defs().resolve_job_def("health_check_job")


def sweep(instance, environments=(), timeout=2.0):
    job = health_job()
    config = {"environments": list(environments), "timeout_seconds": timeout, "degraded_ms": 10_000}
    return job.execute_in_process(instance=instance, run_config={"ops": {"health_checks": {"config": config}}})


def evaluations(result):
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def test_definitions_have_health_assets_job_schedule_and_sensor():
    definitions = defs()
    keys = {key.to_user_string() for key in definitions.resolve_all_asset_keys()}
    assert {"production_api", "production_frontend", "production_redis", "production_bucket",
            "staging_api", "development_bucket"} <= keys
    schedule = definitions.resolve_schedule_def("health_check_schedule")
    assert schedule.cron_schedule == "*/5 * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    sensor = definitions.resolve_sensor_def("health_alert_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 3, 8, 7, 5, tzinfo=dt.timezone.utc))
    [request] = schedule.evaluate_tick(context).run_requests
    assert request.run_key == "health-2026-03-08T07:05:00+00:00"


def test_healthy_sweep_records_every_check_with_latency(instance, app, databases):
    result = sweep(instance)
    assert result.success
    found = evaluations(result)
    for key in [("production_api", "health_endpoint"), ("production_api", "service_redis"),
                ("production_frontend", "reachable"), ("production_redis", "reachable"),
                ("production_postgres", "reachable"), ("production_bucket", "reachable"),
                ("staging_api", "health_endpoint"), ("development_postgres", "reachable")]:
        assert found[key].passed, (key, found[key].description)
        assert found[key].metadata["latency_ms"].value >= 0
    assert found[("production_api", "health_endpoint")].metadata["version"].value == "1.2.3"
    checked_at = found[("production_api", "health_endpoint")].metadata["checked_at"]
    assert isinstance(checked_at, dg.TimestampMetadataValue)  # a date in the UI, not a plotted float
    assert abs(checked_at.value - dt.datetime.now(dt.timezone.utc).timestamp()) < 120
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("production_api"), "health_endpoint"), limit=5)
    assert len(history) == 1


def test_one_environment_only(instance, app, databases):
    found = evaluations(sweep(instance, ["staging"]))
    assert {key[0] for key in found} == {"staging_api", "staging_postgres", "staging_bucket"}


def test_the_launchpad_says_what_an_empty_environments_list_means():
    from ops_platform.defs.health.assets import HealthSweepConfig

    fields = HealthSweepConfig.to_config_schema().as_field().config_type.fields
    assert "Empty (the default, []) means every configured environment: production, staging, development" in (
        fields["environments"].description)
    assert "HEALTH_CHECK_TIMEOUT_SECONDS" in fields["timeout_seconds"].description
    assert "`environments: []` (the default) means every configured environment" in health_job().description


def test_unknown_environment_fails_with_a_clear_message(instance, app):
    result = health_job().execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"ops": {"health_checks": {"config": {"environments": ["prod"]}}}})
    assert not result.success
    assert "unknown environment(s): prod; configured: production, staging, development" in str(result.all_events)


def test_outage_through_recorded_runs_alerts_once_and_recovers(instance, app, databases, slack_server):
    from ops_platform.defs.resources import OpsSlackResource

    slack = OpsSlackResource(token=SLACK_TOKEN, base_url=slack_server.api_url, channel="#ops", max_retries=1)
    app.mode = "error"
    cursor = None

    def tick():
        nonlocal cursor
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=platform_resources(slack=slack))
        health_sensors.health_alert_sensor(context)
        cursor = context.cursor

    for _ in range(3):
        assert sweep(instance, ["production"]).success
        tick()
    [opened] = slack_server.texts()
    assert "production: 1 component is down" in opened and "HTTP 503" in opened
    app.mode = "healthy"
    for _ in range(2):
        sweep(instance, ["production"])
        tick()
    texts = slack_server.texts()
    assert len(texts) == 2 and "production recovered*: api" in texts[1]


def test_secrets_in_urls_stay_out_of_logs_metadata_and_slack(instance, monkeypatch, health_server, s3_bucket,
                                                              databases, slack_server):
    from ops_platform.defs.resources import OpsSlackResource

    monkeypatch.setenv("PRODUCTION_REDIS_URL", f"redis://:{REDIS_SECRET}@127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("PRODUCTION_API_URL", f"http://127.0.0.1:{free_port()}/?token={API_TOKEN}")
    monkeypatch.setenv("PRODUCTION_FRONTEND_URL", f"{health_server.url}/?token={API_TOKEN}")
    slack = OpsSlackResource(token=SLACK_TOKEN, base_url=slack_server.api_url, channel="#ops", max_retries=1)
    cursor = None
    runs = []
    for _ in range(3):
        runs.append(sweep(instance, ["production"]))
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=platform_resources(slack=slack))
        health_sensors.health_alert_sensor(context)
        cursor = context.cursor
    text = slack_server.all_bodies() + cursor
    for result in runs:
        for event in instance.all_logs(result.run_id):
            text += repr(event)
    assert "connection refused" in text
    for secret in (REDIS_SECRET, API_TOKEN, DB_PASSWORD):
        assert secret not in text


def test_the_first_sweep_while_the_platform_starts_does_not_judge_latency(instance, app, databases, monkeypatch):
    """The code server loaded the definitions a minute ago (make dev is still starting the webserver
    and the daemon): the scheduled sweep records a slow answer as healthy, saying why; five minutes
    later, or from the CLI, the same answer is degraded."""
    from ops_platform.defs import platform_start

    schedule = defs().resolve_schedule_def("health_check_schedule")
    loaded = dt.datetime(2026, 3, 8, 7, 4, tzinfo=dt.timezone.utc)
    monkeypatch.setattr(platform_start, "LOADED_AT", loaded.timestamp())
    app.delay_seconds = 0.3
    config = {"ops": {"health_checks": {"config": {"environments": ["staging"], "degraded_ms": 100}}}}
    statuses = {}
    for minute in (5, 10):
        when = loaded.replace(minute=minute)
        [request] = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=when)).run_requests
        result = health_job().execute_in_process(instance=instance, run_config=config, tags=request.tags)
        api = evaluations(result)[("staging_api", "health_endpoint")]
        statuses[minute] = (api.metadata["status"].value, api.description)
    assert statuses[5][0] == "healthy" and "latency not judged: the platform was starting" in statuses[5][1]
    assert statuses[10][0] == "degraded" and statuses[10][1].startswith("slow: answered in ")

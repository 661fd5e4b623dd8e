"""database_condition_sensor: failing database checks created for real reach the Slack test server
once when they start and once when they clear, with nothing repeated after a daemon restart."""

from __future__ import annotations

import time

import dagster as dg
import psycopg
import pytest

from ops_platform.defs.alerts import sensors as alert_sensors
from ops_platform.defs.insight import sensors as insight_sensors
from ops_platform.defs.resources import OpsSlackResource
from ops_platform_tests.conftest import DB_PASSWORD, SLACK_TOKEN, database_url, free_port, reset_database
from ops_platform_tests.insight_helpers import ConditionDaemon, check_evaluations, posted, run_stats


@pytest.fixture(scope="module", autouse=True)
def production_database():
    reset_database("production")
    yield


@pytest.fixture
def bot_slack(slack_server):
    return OpsSlackResource(token=SLACK_TOKEN, base_url=slack_server.api_url, channel="#ops", max_retries=1)


def test_idle_in_transaction_starts_once_survives_a_restart_and_clears_once(instance, bot_slack, slack_server,
                                                                             monkeypatch):
    monkeypatch.setenv("STATS_IDLE_IN_TRANSACTION_MINUTES", "0.005")  # 0.3 s
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "http://dagster.example:3000")
    daemon = ConditionDaemon(instance, bot_slack)
    daemon.tick()
    assert run_stats(instance).success
    daemon.tick()
    assert posted(slack_server) == []
    session = psycopg.connect(database_url("production"), application_name="stuck_worker")
    try:
        session.execute("SELECT 1")  # opens a transaction and leaves it idle
        time.sleep(0.6)
        result = run_stats(instance)
        assert result.success and not check_evaluations(result)["idle_in_transaction"].passed
        daemon.tick()
        [started] = posted(slack_server)
        assert "production database: idle_in_transaction* (error)" in started
        assert "application stuck_worker, user ops_test) idle in transaction for" in started
        assert "<http://dagster.example:3000/assets/database_stats?partition=production|" in started

        restarted = ConditionDaemon(instance, bot_slack, cursor=daemon.cursor)
        restarted.tick()
        assert run_stats(instance).success  # still idle: no reminder within STATS_REMINDER_MINUTES
        restarted.tick()
        assert len(posted(slack_server)) == 1
    finally:
        session.close()
    assert run_stats(instance).success
    restarted.tick()
    restarted.tick()
    texts = posted(slack_server)
    assert len(texts) == 2 and "production database: idle_in_transaction is back to normal* after" in texts[1]
    assert DB_PASSWORD not in slack_server.all_bodies()


def test_an_unreachable_database_is_one_alert_and_one_recovery_not_a_post_per_run(instance, bot_slack,
                                                                                 slack_server, monkeypatch):
    daemon = ConditionDaemon(instance, bot_slack)
    daemon.tick()
    reachable = database_url("production")
    monkeypatch.setenv("PRODUCTION_DATABASE_URL", f"postgresql://ops_test:{DB_PASSWORD}@127.0.0.1:{free_port()}/app")
    failed = [run_stats(instance) for _ in range(2)]
    assert not any(result.success for result in failed)
    daemon.tick()
    [started] = posted(slack_server)
    assert "production database: snapshot* (error)" in started and "cannot connect to 127.0.0.1" in started
    for result in failed:  # the run-failure sensor leaves database_stats_job to this sensor
        run = instance.get_run_by_id(result.run_id)
        failure = next(e for e in instance.all_logs(result.run_id)
                       if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE")
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_slack_sensor", dagster_instance=instance, dagster_run=run,
            dagster_event=failure.dagster_event, resources={"slack": bot_slack}).for_run_failure()
        alert_sensors.run_failure_slack_sensor(context)
    assert len(posted(slack_server)) == 1
    monkeypatch.setenv("PRODUCTION_DATABASE_URL", reachable)
    assert run_stats(instance).success
    daemon.tick()
    texts = posted(slack_server)
    assert len(texts) == 2 and "production database: snapshot is back to normal*" in texts[1]
    assert DB_PASSWORD not in slack_server.all_bodies()


def test_first_tick_announces_only_what_the_newest_snapshot_shows(instance, bot_slack, slack_server, monkeypatch):
    monkeypatch.setenv("STATS_CONNECTIONS_PERCENT", "0")  # every snapshot fails the connections check
    assert run_stats(instance).success
    monkeypatch.delenv("STATS_CONNECTIONS_PERCENT")
    assert run_stats(instance).success  # the condition is over by the time the sensor first runs
    monkeypatch.setenv("STATS_CONNECTIONS_PERCENT", "0")
    assert run_stats(instance).success
    daemon = ConditionDaemon(instance, bot_slack)
    summary = daemon.tick()
    [text] = posted(slack_server)
    assert "production database: connections* (error)" in text
    assert "failing: production: connections" in summary.skip_message
    cursor = insight_sensors.ConditionCursor.from_json(daemon.cursor)
    assert cursor.outbox == [] and cursor.after > 0

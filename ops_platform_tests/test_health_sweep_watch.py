"""The dead-man's switch on the health sweeps, and health_check_job failures as one incident:
the pure SweepWatch, then health_alert_sensor over a real instance, real runs of the job and the
real Slack clients against the test server. The sensor's clock is moved by the tests; everything
else runs at real time."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import dagster as dg
import pytest

from ops_platform.defs.alerts import sensors as alert_sensors
from ops_platform.defs.health import sensors as health_sensors
from ops_platform.lib.incidents import (
    CHECKS_FAILING,
    CHECKS_REMINDER,
    CHECKS_RESUMED,
    CHECKS_STOPPED,
    SweepRun,
    SweepWatch,
    SweepWatchSettings,
)
from ops_platform.lib.messages.health import incident_message
from ops_platform_tests.conftest import (
    DB_PASSWORD,
    DB_USER,
    SLACK_TOKEN,
    platform_resources,
)
from ops_platform_tests.test_health_sensor import Daemon, record

MINUTE = 60.0


def kinds(events):
    return [event.kind for event in events]


# --- the state machine -------------------------------------------------------------------------------


def test_fresh_instance_gets_its_first_intervals_then_one_alert_hourly_reminders_and_one_resume():
    watch = SweepWatch(SweepWatchSettings(interval_seconds=300, silence_intervals=3))
    assert watch.observe(0.0, hold=True) == []          # the first tick: no sweep has run yet
    for minute in range(1, 17):
        assert watch.observe(minute * MINUTE) == [], minute
    [stopped] = watch.observe(17 * MINUTE, open_incidents=["production"])
    assert stopped.kind == CHECKS_STOPPED
    text = incident_message(stopped).text
    assert "Health checks have stopped" in text and "no result yet" in text and "production" in text
    assert all(watch.observe(minute * MINUTE) == [] for minute in range(18, 77))
    [reminder] = watch.observe(77 * MINUTE)
    assert reminder.kind == CHECKS_REMINDER and "still stopped* after 1h 17m" in incident_message(reminder).text
    [resumed] = watch.observe(80 * MINUTE, result_at=80 * MINUTE)
    assert resumed.kind == CHECKS_RESUMED and "Health checks are running again" in incident_message(resumed).text
    assert watch.observe(81 * MINUTE) == []


def test_regular_sweeps_and_two_missed_ones_never_alert():
    watch = SweepWatch()
    watch.observe(0.0)
    events = []
    for minute in range(1, 120):
        arrived = minute % 5 == 0 and minute not in (45, 50)     # 2 sweeps missed
        at = minute * MINUTE + 20                                  # recorded a little late
        events += watch.observe(at, result_at=at - 15 if arrived else None)
    assert events == []


def test_a_failing_sweep_job_is_one_incident_until_a_run_succeeds():
    watch = SweepWatch()
    watch.observe(0.0)
    failed = [SweepRun(f"run-{i}", False, i * 300.0, "step health_checks: health sweep: X must be an integer")
              for i in range(1, 20)]
    events = []
    for minute in range(5, 95):
        events += watch.observe(minute * MINUTE, latest_run=failed[minute // 5 - 1])
    assert kinds(events) == [CHECKS_FAILING, CHECKS_REMINDER]
    assert "X must be an integer" in incident_message(events[0]).text
    assert "still failing* after 1h 00m" in incident_message(events[1]).text
    [resumed] = watch.observe(96 * MINUTE, result_at=96 * MINUTE, latest_run=SweepRun("ok", True, 96 * MINUTE))
    assert resumed.kind == CHECKS_RESUMED and "Health checks succeed again* after 1h 31m" in incident_message(resumed).text


def test_a_failure_seen_on_the_quiet_first_tick_is_announced_on_the_next():
    watch = SweepWatch()
    assert watch.observe(0.0, latest_run=SweepRun("r", False, -50.0, "boom"), hold=True) == []
    assert kinds(watch.observe(MINUTE)) == [CHECKS_FAILING]
    assert watch.observe(2 * MINUTE) == []


def test_after_the_sensor_itself_was_down_the_schedule_gets_its_intervals_again():
    watch = SweepWatch()
    watch.observe(0.0, result_at=0.0)
    assert watch.observe(3 * 3600.0) == []                   # the daemon was down for 3 hours
    assert watch.observe(3 * 3600.0 + 16 * MINUTE) == []
    assert kinds(watch.observe(3 * 3600.0 + 17 * MINUTE)) == [CHECKS_STOPPED]


def test_an_open_stop_stays_open_across_a_sensor_outage_until_results_arrive():
    watch = SweepWatch()
    events = []
    for minute in range(18):
        events += watch.observe(minute * MINUTE)
    assert kinds(events) == [CHECKS_STOPPED]
    assert kinds(watch.observe(5 * 3600.0)) == [CHECKS_REMINDER]           # the daemon was down meanwhile
    assert kinds(watch.observe(5 * 3600.0 + MINUTE, result_at=5 * 3600.0)) == [CHECKS_RESUMED]


# --- through the sensor ---------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, minutes: float) -> None:
        self.offset += minutes * MINUTE


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(health_sensors, "current_time", clock)
    return clock


@pytest.fixture
def bot_slack(slack_server):
    from ops_platform.defs.resources import OpsSlackResource

    return OpsSlackResource(token=SLACK_TOKEN, base_url=slack_server.api_url, channel="#ops", max_retries=1)


def utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def test_sweeps_that_stop_alert_once_survive_a_restart_remind_hourly_and_resume(instance, bot_slack, slack_server,
                                                                                clock):
    daemon = Daemon(instance, bot_slack)
    daemon.tick()
    for _ in range(3):                                       # a production outage is open...
        clock.advance(5)
        record(instance, time.time())
        daemon.tick()
    [opened] = slack_server.texts()
    assert "production: 1 component is down" in opened
    last = time.time()
    record(instance, last, component="frontend", status="healthy", reason="HTTP 200")
    daemon.tick()
    for _ in range(15):                                      # ...when the schedule is turned off
        clock.advance(1)
        daemon.tick()
    assert len(slack_server.texts()) == 1
    clock.advance(2)
    assert "health checks stopped" in daemon.tick().skip_message
    stopped = slack_server.texts()[1]
    assert "Health checks have stopped" in stopped and f"last result at {utc(last)}" in stopped
    assert "Open incidents get no reminders or recoveries meanwhile: production" in stopped
    restarted = Daemon(instance, bot_slack)
    restarted.cursor = daemon.cursor
    for _ in range(5):
        clock.advance(10)
        restarted.tick()
    texts = slack_server.texts()
    assert len(texts) == 2
    clock.advance(15)
    restarted.tick()
    assert len(slack_server.texts()) == 3 and "Health checks still stopped* after 1h 22m" in slack_server.texts()[2]
    clock.advance(5)
    record(instance, time.time())                            # the schedule is back on
    restarted.tick()
    assert len(slack_server.texts()) == 4 and "Health checks are running again" in slack_server.texts()[3]
    clock.advance(30)
    restarted.tick()
    assert len(slack_server.texts()) == 4


def test_a_fresh_instance_without_any_sweep_waits_for_the_first_intervals(instance, bot_slack, slack_server,
                                                                          clock):
    daemon = Daemon(instance, bot_slack)
    daemon.tick()
    for _ in range(15):
        clock.advance(1)
        daemon.tick()
    assert slack_server.texts() == []
    clock.advance(2)
    daemon.tick()
    [text] = slack_server.texts()
    assert "Health checks have stopped*: no result yet" in text


def test_the_silence_limit_is_a_setting(instance, bot_slack, slack_server, clock, monkeypatch):
    monkeypatch.setenv("HEALTH_SILENCE_INTERVALS", "12")
    daemon = Daemon(instance, bot_slack)
    daemon.tick()
    clock.advance(59)
    daemon.tick()
    assert slack_server.texts() == []
    clock.advance(2)
    daemon.tick()
    assert "Health checks have stopped" in slack_server.texts()[0]


# --- a configuration error fails every sweep -------------------------------------------------------------


@pytest.fixture
def sweepable(monkeypatch, s3_bucket, health_server):
    """Every check of a staging sweep answers quickly (the app, the server's maintenance database, moto)."""
    monkeypatch.setenv("STAGING_DATABASE_URL", f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:5432/postgres")
    monkeypatch.setenv("STAGING_API_URL", health_server.url)
    return health_server


def sweep(instance):
    from ops_platform.definitions import defs

    job = defs().resolve_job_def("health_check_job")
    config = {"environments": ["staging"], "timeout_seconds": 2.0, "degraded_ms": 10_000}
    return job.execute_in_process(instance=instance, raise_on_error=False, resources=platform_resources(),
                                  run_config={"ops": {"health_checks": {"config": config}}})


def run_failure_sensor(instance, result, slack):
    """run_failure_slack_sensor over a finished run, as the daemon evaluates it."""
    run = instance.get_run_by_id(result.run_id)
    failure = next(e for e in instance.all_logs(result.run_id) if e.dagster_event and
                   e.dagster_event.event_type_value == "PIPELINE_FAILURE")
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_slack_sensor", dagster_instance=instance, dagster_run=run,
        dagster_event=failure.dagster_event, resources={"slack": slack}).for_run_failure()
    alert_sensors.run_failure_slack_sensor(context)


def test_a_bad_setting_failing_every_sweep_is_one_incident_with_reminders_and_one_resolution(
        instance, bot_slack, slack_server, clock, sweepable, monkeypatch):
    from ops_platform_tests.test_alerts import exploding_job

    daemon = Daemon(instance, bot_slack)
    daemon.tick()
    monkeypatch.setenv("HEALTH_CHECK_TIMEOUT_SECONDS", "ten")
    for _ in range(4):                                       # 20 minutes of scheduled sweeps
        clock.advance(5)
        result = sweep(instance)
        assert not result.success
        run_failure_sensor(instance, result, bot_slack)
        daemon.tick()
    [failing] = slack_server.texts()
    assert "Health checks are failing" in failing
    assert "health sweep: HEALTH_CHECK_TIMEOUT_SECONDS must be an integer, got 'ten'" in failing
    for _ in range(9):                                       # the next 45 minutes
        clock.advance(5)
        run_failure_sensor(instance, sweep(instance), bot_slack)
        daemon.tick()
    texts = slack_server.texts()
    assert len(texts) == 2 and "Health checks still failing* after 1h 00m" in texts[1]
    assert "HEALTH_CHECK_TIMEOUT_SECONDS" in texts[1]

    monkeypatch.delenv("HEALTH_CHECK_TIMEOUT_SECONDS")       # fixed
    clock.advance(5)
    assert sweep(instance).success
    daemon.tick()
    clock.advance(5)
    assert sweep(instance).success
    daemon.tick()
    texts = slack_server.texts()
    assert len(texts) == 3 and "Health checks succeed again* after 1h 05m" in texts[2]

    other = exploding_job.execute_in_process(instance=instance, raise_on_error=False)
    run_failure_sensor(instance, other, bot_slack)          # other jobs: every failure, once
    assert len(slack_server.texts()) == 4 and "exploding_job" in slack_server.texts()[3]

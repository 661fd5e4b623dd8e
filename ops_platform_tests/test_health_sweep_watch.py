"""The dead-man's switch on the health sweeps, and health_check_job failures as one incident."""

from __future__ import annotations

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

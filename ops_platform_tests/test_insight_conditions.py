"""Thresholds from the environment and the ConditionTracker's alert timeline (pure)."""

from __future__ import annotations

import pytest

from ops_platform.config import ConfigError
from ops_platform.lib.insight.conditions import (
    CLEARED,
    ERROR,
    REMINDER,
    SEVERITIES,
    STARTED,
    THRESHOLD_VARIABLES,
    WARN,
    ConditionAlertSettings,
    ConditionResult,
    ConditionTracker,
    StatsThresholds,
)
from ops_platform.lib.insight.database_stats import StatsCollectionSettings
from ops_platform.lib.messages.database import condition_message


def test_thresholds_default_and_override_from_the_environment():
    assert StatsThresholds.from_environ({}) == StatsThresholds()
    custom = StatsThresholds.from_environ({"STATS_CONNECTIONS_PERCENT": "90", "STATS_DEAD_TUPLES_MIN": "500",
                                           "STATS_IDLE_IN_TRANSACTION_MINUTES": "2.5"})
    assert custom.connections_percent == 90 and custom.dead_tuples_min == 500
    assert custom.idle_in_transaction_minutes == 2.5
    assert {field for field, _ in THRESHOLD_VARIABLES.values()} == set(StatsThresholds.__dataclass_fields__)


@pytest.mark.parametrize("variable, value, expected", [
    ("STATS_CONNECTIONS_PERCENT", "eighty", "STATS_CONNECTIONS_PERCENT must be a number, got 'eighty'"),
    ("STATS_DEAD_TUPLES_MIN", "10k", "STATS_DEAD_TUPLES_MIN must be an integer, got '10k'"),
    ("STATS_CONNECTIONS_PERCENT", "150", "STATS_CONNECTIONS_PERCENT must be <= 100, got 150"),
    ("STATS_XID_AGE_FRACTION", "-1", "STATS_XID_AGE_FRACTION must be >= 0, got -1"),
    ("STATS_XID_AGE_FRACTION", "1.5", "STATS_XID_AGE_FRACTION must be <= 1, got 1.5"),
])
def test_a_bad_threshold_is_one_clear_line(variable, value, expected):
    with pytest.raises(ConfigError) as raised:
        StatsThresholds.from_environ({variable: value})
    assert str(raised.value) == expected


def test_collection_and_alert_settings_from_the_environment():
    assert StatsCollectionSettings.from_environ({}) == StatsCollectionSettings()
    with pytest.raises(ConfigError, match="^STATS_STATEMENT_TIMEOUT_MS must be an integer, got 'fast'$"):
        StatsCollectionSettings.from_environ({"STATS_STATEMENT_TIMEOUT_MS": "fast"})
    with pytest.raises(ConfigError, match="^STATS_LOCK_TIMEOUT_MS must be >= 1, got 0$"):
        StatsCollectionSettings.from_environ({"STATS_LOCK_TIMEOUT_MS": "0"})
    with pytest.raises(ConfigError, match="^STATS_EXACT_SIZES must be <= 1, got 2$"):
        StatsCollectionSettings.from_environ({"STATS_EXACT_SIZES": "2"})
    assert StatsCollectionSettings.from_environ({"STATS_EXACT_SIZES": "0"}).exact_sizes is False
    with pytest.raises(ConfigError, match="^STATS_ALERT_WARNINGS must be <= 1, got 3$"):
        ConditionAlertSettings.from_environ({"STATS_ALERT_WARNINGS": "3"})
    settings = ConditionAlertSettings.from_environ({"STATS_REMINDER_MINUTES": "30", "STATS_ALERT_WARNINGS": "1"})
    assert settings.reminder_seconds == 1800 and settings.alert_severities == (ERROR, WARN)
    assert ConditionAlertSettings.from_environ({}).alert_severities == (ERROR,)


def result(name="connections", passed=False, description="95 of 97 usable connections in use"):
    return ConditionResult(name, passed, SEVERITIES[name], description, {})


def test_started_reminders_cleared_and_nothing_repeated_after_a_restart():
    settings = ConditionAlertSettings(reminder_seconds=3600)
    tracker = ConditionTracker(settings)
    timeline = []
    for minute, passed in [(0, True), (15, False), (30, False), (60, False), (75, False), (90, False),
                           (150, False), (165, True), (180, True)]:
        tracker = ConditionTracker.from_json(tracker.to_json(), settings)  # a daemon restart every tick
        for event in tracker.observe("production", [result(passed=passed)], minute * 60.0):
            timeline.append((minute, event.kind))
        # the same snapshot seen again after a restart changes nothing
        again = ConditionTracker.from_json(tracker.to_json(), settings)
        assert again.observe("production", [result(passed=passed)], minute * 60.0) == []
    assert timeline == [(15, STARTED), (75, REMINDER), (150, REMINDER), (165, CLEARED)]


def test_cleared_event_carries_the_duration_and_messages_read_well():
    tracker = ConditionTracker()
    [started] = tracker.observe("staging", [result()], 1000.0)
    assert tracker.failing("staging")["connections"]["since"] == 1000.0
    [cleared] = tracker.observe("staging", [result(passed=True, description="40 of 97 in use")], 1000.0 + 5400)
    assert cleared.duration_seconds == 5400 and tracker.failing("staging") == {}
    assert "staging database: connections" in condition_message(started).text
    assert "back to normal* after 1h 30m" in condition_message(cleared).text


def test_warnings_alert_only_when_asked_and_environments_are_separate():
    warn = result("dead_tuples", description="public.orders has 20,000 dead tuples")
    assert ConditionTracker().observe("production", [warn], 1.0) == []
    both = ConditionTracker(ConditionAlertSettings(alert_severities=(ERROR, WARN)))
    assert [e.kind for e in both.observe("production", [warn], 1.0)] == [STARTED]
    assert [e.kind for e in both.observe("staging", [warn], 1.0)] == [STARTED]
    assert both.observe("production", [], 2.0) == []  # a check that was not evaluated keeps its state
    assert [e.kind for e in both.observe("production", [result("dead_tuples", passed=True)], 3.0)] == [CLEARED]


def test_a_malformed_cursor_starts_fresh():
    assert ConditionTracker.from_json("not json").state == {"environments": {}}
    assert ConditionTracker.from_json('{"environments": 3}').state == {"environments": {}}
    assert ConditionTracker.from_json(None).state == {"environments": {}}

"""The incident state machine over scripted timelines (pure; the sensor tests drive it through Dagster)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ops_platform.lib.incidents import (
    FLAPPING,
    OPENED,
    RECOVERED,
    REMINDER,
    IncidentSettings,
    IncidentTracker,
    Observation,
)
from ops_platform.lib.messages.health import incident_message

FIVE_MIN = 300.0


def run(tracker, pattern: str, component="api", start=0.0, env="production", hold=False):
    """Feed one check per 5 minutes: '.' passes, 'x' fails. Returns (index, event) pairs."""
    events = []
    for index, mark in enumerate(pattern):
        at = start + index * FIVE_MIN
        for event in tracker.observe(env, [Observation(component, mark == ".", f"{component} down", at)], hold):
            events.append((index, event))
    return events


def kinds(events):
    return [event.kind for _, event in events]


def test_one_blip_sends_nothing():
    assert run(IncidentTracker(), "..x.......xx.....") == []


def test_three_failures_open_one_incident():
    events = run(IncidentTracker(), "..xxxxxx")
    assert [(i, e.kind) for i, e in events] == [(4, OPENED)]
    assert events[0][1].components == {"api": "api down"}
    assert events[0][1].started_at == 2 * FIVE_MIN


def test_reminders_at_the_interval_then_one_recovery_with_downtime():
    tracker = IncidentTracker(IncidentSettings(reminder_seconds=3600))
    events = run(tracker, "x" * 30 + "..." + "....")
    assert kinds(events) == [OPENED, REMINDER, REMINDER, RECOVERED]
    assert [i for i, _ in events] == [2, 14, 26, 31]
    recovered = events[-1][1]
    assert recovered.downtime_seconds == 30 * FIVE_MIN
    assert "Downtime: 2h 30m" in incident_message(recovered).text


def test_one_success_does_not_recover():
    events = run(IncidentTracker(), "xxx.xx..")
    assert kinds(events) == [OPENED, RECOVERED]
    assert events[-1][0] == 7


def test_restart_mid_incident_keeps_state_through_json():
    tracker = IncidentTracker()
    assert kinds(run(tracker, "xxxx")) == [OPENED]
    restored = IncidentTracker.from_json(tracker.to_json())
    assert kinds(run(restored, "xx", start=4 * FIVE_MIN)) == []
    events = run(restored, "..", start=6 * FIVE_MIN)
    assert kinds(events) == [RECOVERED]
    assert events[0][1].downtime_seconds == 6 * FIVE_MIN


def test_components_are_grouped_in_one_incident():
    tracker = IncidentTracker()
    events = []
    for index in range(5):
        at = index * FIVE_MIN
        events += tracker.observe("staging", [Observation("redis", False, "connection refused", at),
                                              Observation("api_redis", False, "the app reports redis: down", at),
                                              Observation("postgres", True, "", at)])
    assert kinds([(0, e) for e in events]) == [OPENED]
    assert events[0].components == {"api_redis": "the app reports redis: down", "redis": "connection refused"}
    text = incident_message(events[0], 3).text
    assert "staging: 2 components are down" in text and "connection refused" in text


def test_flapping_sends_one_notice_and_no_incident_messages():
    tracker = IncidentTracker(IncidentSettings(flap_changes=4))
    events = run(tracker, "xxx..xxx..xxx..xxx..xxx..xxx..")
    assert kinds(events).count(FLAPPING) == 1
    after_notice = kinds(events)[kinds(events).index(FLAPPING) + 1:]
    assert OPENED not in after_notice and after_notice.count(RECOVERED) <= 1
    assert "flapping" in incident_message([e for _, e in events if e.kind == FLAPPING][0]).text


def test_hold_suppresses_incidents_that_end_during_it_and_announces_ones_that_outlast_it():
    tracker = IncidentTracker()
    assert run(tracker, "xxxx..", hold=True) == []
    assert run(tracker, "xxxx", start=10 * FIVE_MIN, hold=True) == []
    events = run(tracker, "x", start=20 * FIVE_MIN)
    assert kinds(events) == [OPENED]
    assert events[0][1].started_at == 10 * FIVE_MIN


def test_corrupt_cursor_starts_fresh():
    assert IncidentTracker.from_json("{not json").state == {"environments": {}}
    assert IncidentTracker.from_json('["x"]').state == {"environments": {}}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=60), st.integers(min_value=0, max_value=59))
def test_never_duplicates_and_restarts_change_nothing(marks, restart_at):
    pattern = "".join("." if ok else "x" for ok in marks)
    straight = run(IncidentTracker(IncidentSettings(flap_changes=1000)), pattern)
    tracker = IncidentTracker(IncidentSettings(flap_changes=1000))
    first = run(tracker, pattern[:restart_at])
    restored = IncidentTracker.from_json(tracker.to_json(), IncidentSettings(flap_changes=1000))
    second = run(restored, pattern[restart_at:], start=restart_at * FIVE_MIN)
    assert kinds(straight) == kinds(first) + kinds(second)
    opened_or_recovered = [k for k in kinds(straight) if k in (OPENED, RECOVERED)]
    assert opened_or_recovered == [OPENED, RECOVERED] * (len(opened_or_recovered) // 2) + \
        ([OPENED] if len(opened_or_recovered) % 2 else [])


def test_flapping_that_starts_during_a_hold_is_announced_once_the_hold_lifts():
    tracker = IncidentTracker(IncidentSettings(flap_changes=4))
    assert run(tracker, "x.x.x.x.", hold=True) == []
    events = run(tracker, "x", start=8 * FIVE_MIN)
    assert kinds(events) == [FLAPPING]
    assert events[0][1].components == {"api": "api down"}
    assert kinds(run(tracker, ".x.x", start=9 * FIVE_MIN)) == []


def test_flapping_seen_in_the_quiet_replay_is_announced_on_the_next_tick_even_without_new_results():
    tracker = IncidentTracker(IncidentSettings(flap_changes=4))
    replay = [Observation("frontend", index % 2 == 1, "frontend answered HTTP 502", index * FIVE_MIN)
              for index in range(8)]
    assert tracker.observe("production", replay, hold=True) == []
    [notice] = tracker.observe("production", [])
    assert notice.kind == FLAPPING and notice.changes == 7
    assert tracker.observe("production", []) == []


def test_flapping_notice_names_the_latest_failure_even_when_a_success_tipped_it():
    tracker = IncidentTracker(IncidentSettings(flap_changes=4))
    events = []
    for index, mark in enumerate("x.x.x."):
        events += tracker.observe("staging", [Observation(
            "api", mark == ".", "healthy (version 1.2.3)" if mark == "." else "/health answered HTTP 503",
            index * FIVE_MIN)])
    [notice] = events
    text = incident_message(notice).text
    assert "Latest failure: /health answered HTTP 503" in text and "healthy" not in text


def test_tracker_from_a_cursor_dict_is_validated():
    assert IncidentTracker.from_state(["x"]).state == {"environments": {}}
    assert IncidentTracker.from_state({"environments": 3}).state == {"environments": {}}
    state = {"environments": {"production": {"components": {}, "incident": None, "last_at": None}}}
    assert IncidentTracker.from_state(state).state is state

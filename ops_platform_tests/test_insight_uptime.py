"""Uptime figures on fabricated health history with known answers."""

from __future__ import annotations

import tracemalloc
from datetime import datetime, timezone

import pytest

from ops_platform.lib.insight.uptime import LatencyHistogram, UptimeAccumulator, uptime_from_results

NOW = datetime(2026, 1, 12, 9, 0, tzinfo=timezone.utc).timestamp()
STEP = 300.0
WEEK = 7 * 86400


def history(pattern, *, start=NOW - WEEK, component="api", environment="production", latency=0.05):
    """One result per 5 minutes from ``start``: pattern(i) says whether result i is ok."""
    count = int((NOW - start) // STEP)
    for i in range(count):
        yield (start + i * STEP, environment, component, pattern(i), latency)


def by_window(results, component="api"):
    return {r.window: r for r in results if r.component == component}


def test_a_30_minute_outage_in_a_week_is_99_70_percent():
    results = by_window(uptime_from_results(history(lambda i: not 1000 <= i < 1006), NOW))
    week = results["7d"]
    assert week.availability_percent == "99.70 %"
    assert week.availability == pytest.approx(1 - 1800 / WEEK)
    assert week.incidents == 1 and week.down_seconds == 1800
    assert week.longest_downtime_seconds == 1800 and week.mean_time_to_recover_seconds == 1800
    assert week.coverage == 1.0 and week.checks == 2016 and week.failed_checks == 6
    assert results["24h"].availability_percent == "100.00 %" and results["24h"].incidents == 0
    # the 30-day window has only this week of data: availability of what was observed, coverage 7/30
    assert results["30d"].availability_percent == "99.70 %" and results["30d"].coverage == pytest.approx(7 / 30)


def test_incidents_longest_and_total_downtime():
    down = set(range(100, 103)) | set(range(500, 512)) | {900}  # 15 min, 1 h, 5 min
    week = by_window(uptime_from_results(history(lambda i: i not in down), NOW))["7d"]
    assert week.incidents == 3
    assert week.longest_downtime_seconds == 3600
    assert week.down_seconds == 16 * STEP
    assert week.mean_time_to_recover_seconds == pytest.approx(16 * STEP / 3)
    assert week.open_outage_seconds is None


def test_no_data_is_not_up_and_each_result_covers_at_most_two_intervals():
    gap = set(range(1000, 1024))  # two hours without any result after a failure
    rows = [row for row in history(lambda i: i != 999) if int((row[0] - (NOW - WEEK)) // STEP) not in gap]
    week = by_window(uptime_from_results(rows, NOW))["7d"]
    assert week.down_seconds == 2 * STEP  # the failure before the gap covers 10 minutes, not 2 hours
    assert week.coverage == pytest.approx((WEEK - 24 * STEP + STEP) / WEEK)
    assert week.availability == pytest.approx(week.up_seconds / (week.up_seconds + week.down_seconds))


def test_an_outage_still_open_at_now():
    total = WEEK // STEP
    week = by_window(uptime_from_results(history(lambda i: i < total - 4), NOW))["7d"]
    assert week.open_outage_seconds == 4 * STEP and week.incidents == 1
    assert week.mean_time_to_recover_seconds is None and week.longest_downtime_seconds == 4 * STEP


def test_latency_percentiles_within_the_documented_precision():
    histogram = LatencyHistogram()
    for ms in range(1, 1001):
        histogram.add(ms / 1000)
    assert histogram.percentile(0.50) == pytest.approx(0.500, rel=0.049)
    assert histogram.percentile(0.95) == pytest.approx(0.950, rel=0.049)
    assert histogram.percentile(1.0) == 1.0 and histogram.percentile(0.0001) == 0.001
    assert LatencyHistogram().percentile(0.5) is None
    rows = ((NOW - 3600 + i, "production", "api", True, (i % 100 + 1) / 1000) for i in range(1000))
    [day] = [r for r in uptime_from_results(rows, NOW) if r.window == "24h"]
    assert day.latency_p95 == pytest.approx(0.095, rel=0.049) and day.latency_p50 == pytest.approx(0.050, rel=0.049)


def test_components_and_environments_are_separate_and_late_results_are_skipped():
    accumulator = UptimeAccumulator(NOW)
    accumulator.add(NOW - 600, "production", "api", True, 0.1)
    accumulator.add(NOW - 600, "staging", "api", False, None)
    accumulator.add(NOW - 900, "production", "api", True, 0.1)  # older than the previous one: skipped
    accumulator.add(NOW + 60, "production", "api", True, 0.1)  # after now: skipped
    assert accumulator.skipped == 2
    results = {(r.environment, r.window): r for r in accumulator.results()}
    assert results[("production", "24h")].availability == 1.0
    assert results[("staging", "24h")].availability == 0.0 and results[("staging", "24h")].open_outage_seconds == 600


def _peak(days: int) -> int:
    tracemalloc.start()
    accumulator = UptimeAccumulator(NOW)
    for component in ("api", "frontend", "redis"):
        accumulator.extend(history(lambda i: i % 500 != 0, start=NOW - days * 86400, component=component))
    accumulator.results()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_history_length():
    short, long = _peak(3), _peak(30)
    assert long < short * 1.3 + 20_000


def test_newest_first_spool_replays_oldest_first_with_flat_memory():
    import tracemalloc

    from ops_platform.lib.insight.uptime import NewestFirstSpool

    def peak(count: int) -> int:
        tracemalloc.start()
        with NewestFirstSpool() as spool:
            for index in range(count, 0, -1):  # as the event log pages them: newest first
                spool.add(float(index), index % 7 != 0, None if index % 5 == 0 else index / 1000)
            first, last, previous = [], None, 0.0
            for item in spool.oldest_first():
                assert item[0] > previous
                previous, last = item[0], item
                if len(first) < 3:
                    first.append(item[0])
        found = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert first == [1.0, 2.0, 3.0]
        assert last == (float(count), count % 7 != 0, None if count % 5 == 0 else count / 1000, 0)
        return found

    small, large = peak(5_000), peak(50_000)
    assert large < small * 1.5 + 512 * 1024, (small, large)

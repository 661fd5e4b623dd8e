"""The nightly schedules, including both 2026 DST transitions in New York."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import dagster as dg

from ops_platform.definitions import defs
from ops_platform.defs.backups import schedules as backup_schedules
from ops_platform_tests.dagster_private import cron_string_iterator

NEW_YORK = ZoneInfo("America/New_York")


def schedule(name):
    return next(s for s in backup_schedules.backup_schedules if s.name == name)


def fire_times(cron: str, start: datetime, count: int) -> list[datetime]:
    iterator = cron_string_iterator(start.timestamp(), cron, "America/New_York")
    return [next(iterator) for _ in range(count)]


def evaluate(name: str, when: datetime) -> dg.RunRequest:
    """The schedule's tick, as the daemon evaluates it (its partition registered on the instance)."""
    repository = defs().get_repository_def()
    with dg.instance_for_test() as instance, dg.build_schedule_context(
            instance=instance, scheduled_execution_time=when, repository_def=repository) as context:
        requests = repository.get_schedule_def(name).evaluate_tick(context).run_requests
        assert set(instance.get_dynamic_partitions("targets")) == {request.partition_key for request in requests}
    assert len(requests) == 1
    return requests[0]


def test_production_runs_at_2am_and_staging_at_3am_new_york():
    production = evaluate("production_backup_schedule", datetime(2026, 1, 15, 2, 0, tzinfo=NEW_YORK))
    staging = evaluate("staging_backup_schedule", datetime(2026, 1, 15, 3, 0, tzinfo=NEW_YORK))
    assert production.partition_key == "production" and staging.partition_key == "staging"
    assert production.tags["ops_platform/backup_kind"] == "scheduled"
    assert production.run_key != staging.run_key


def test_spring_forward_both_schedules_fire_once_and_stay_distinct():
    start = datetime(2026, 3, 7, 12, 0, tzinfo=timezone.utc)
    production_times = fire_times("0 2 * * *", start, 2)
    staging_times = fire_times("0 3 * * *", start, 2)
    # 2026-03-08 02:00 does not exist in New York: the 02:00 schedule fires at 03:00 EDT,
    # the same instant as the 03:00 schedule.
    assert production_times[0].astimezone(timezone.utc) == datetime(2026, 3, 8, 7, 0, tzinfo=timezone.utc)
    assert staging_times[0].astimezone(timezone.utc) == datetime(2026, 3, 8, 7, 0, tzinfo=timezone.utc)
    production = evaluate("production_backup_schedule", production_times[0])
    staging = evaluate("staging_backup_schedule", staging_times[0])
    assert (production.partition_key, staging.partition_key) == ("production", "staging")
    assert production.run_key != staging.run_key
    assert "2026-03-08T03:00:00-04:00" in production.run_key


def test_fall_back_each_schedule_fires_exactly_once():
    start = datetime(2026, 10, 31, 12, 0, tzinfo=timezone.utc)
    production_times = fire_times("0 2 * * *", start, 2)
    staging_times = fire_times("0 3 * * *", start, 2)
    assert [t.astimezone(timezone.utc) for t in production_times] == [
        datetime(2026, 11, 1, 7, 0, tzinfo=timezone.utc), datetime(2026, 11, 2, 7, 0, tzinfo=timezone.utc)]
    assert [t.astimezone(timezone.utc) for t in staging_times] == [
        datetime(2026, 11, 1, 8, 0, tzinfo=timezone.utc), datetime(2026, 11, 2, 8, 0, tzinfo=timezone.utc)]
    keys = {evaluate("production_backup_schedule", t).run_key for t in production_times}
    assert len(keys) == 2

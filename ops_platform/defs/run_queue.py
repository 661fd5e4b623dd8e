"""``queued_run_sensor``: a run waiting in the queue says what it waits for, naming the runs in its
way: a tag the Runs list shows under it (``ops_platform/waiting_for: backup_job run 1a2b3c4d of
development (one run per environment at a time)``) and the sentence in its log once it runs."""

import dagster as dg

from ops_platform.defs.dagster_private import IN_PROGRESS_RUN_STATUSES
from ops_platform.lib.run_queue import QueuedOrRunning, QueueLimits, why_queued
from ops_platform.lib.tags import WAITING_FOR

PAGE = 100


def _as_seen(run: dg.DagsterRun) -> QueuedOrRunning:
    concurrency = run.run_op_concurrency
    pools = (frozenset(concurrency.root_key_counts)
             if concurrency and not concurrency.has_unconstrained_root_nodes else frozenset())
    return QueuedOrRunning(run.run_id, run.job_name, dict(run.tags), pools)


def queue_limits(instance: dg.DagsterInstance, pools: set[str]) -> QueueLimits:
    queue = instance.get_concurrency_config().run_queue_config
    held = {}
    for pool in sorted(pools):
        info = instance.event_log_storage.get_concurrency_info(pool)
        if info.limit is not None:
            held[pool] = (info.limit, [slot.run_id for slot in info.claimed_slots])
    return QueueLimits(queue.max_concurrent_runs if queue else -1,
                       list(queue.tag_concurrency_limits or []) if queue else [], held)


@dg.sensor(
    name="queued_run_sensor",
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Tags each queued run with what it waits for (the runs in its way and the dagster.yaml limit).",
)
def queued_run_sensor(context: dg.SensorEvaluationContext):
    instance = context.instance
    queued = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]), limit=PAGE)
    if not queued:
        return dg.SkipReason("no run is queued")
    running = [_as_seen(run) for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS_RUN_STATUSES),
                                                          limit=PAGE)]
    waiting = [_as_seen(run) for run in queued]
    limits = queue_limits(instance, set().union(*(run.pools for run in waiting)))
    explained = 0
    for run, seen in zip(queued, waiting):
        wait = why_queued(seen, running, limits)
        if wait and run.tags.get(WAITING_FOR) != wait.waiting_for:
            instance.add_run_tags(run.run_id, {WAITING_FOR: wait.waiting_for})
            instance.report_engine_event(f"Queued: {wait.reason}", run)
            explained += 1
    return dg.SkipReason(f"{len(queued)} runs queued, {explained} newly explained")

"""Why a queued run waits, in words a person reads on its page: the instance's run queue limits
(``concurrency`` in dagster.yaml: runs at a time, tag limits, pools) against the runs in progress.
The same rules as Dagster's queue: a tag limit counts the runs in progress that carry the tag (its
value, or each value on its own), a pool the slots its steps hold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ops_platform.lib.tags import PARTITION


@dataclass(frozen=True)
class QueuedOrRunning:
    """A run as the queue sees it: its job, tags and the pools its steps need."""

    run_id: str
    job_name: str
    tags: Mapping[str, str]
    pools: frozenset[str] = frozenset()

    def label(self) -> str:
        partition = self.tags.get(PARTITION)
        return f"{self.job_name} run {self.run_id[:8]}" + (f" of {partition}" if partition else "")


@dataclass(frozen=True)
class QueueLimits:
    max_concurrent_runs: int = -1
    tag_limits: Sequence[Mapping] = ()
    # pool -> (its limit, the ids of the runs holding its slots)
    pools: Mapping[str, tuple[int, Sequence[str]]] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueWait:
    """What a queued run waits for: short, for a tag in the runs list, and as a sentence for its log."""

    waiting_for: str
    reason: str


def _blocking_tag_limit(run: QueuedOrRunning, running: Sequence[QueuedOrRunning], limit: Mapping
                        ) -> tuple[list[QueuedOrRunning], str] | None:
    key, value, most = limit["key"], limit.get("value"), limit["limit"]
    if key not in run.tags or (isinstance(value, str) and run.tags[key] != value):
        return None
    per_value = isinstance(value, str) or bool(value and value.get("applyLimitPerUniqueValue"))
    holders = [other for other in running
               if key in other.tags and (not per_value or other.tags[key] == run.tags[key])]
    if len(holders) < most:
        return None
    if key == PARTITION and per_value and most == 1:
        return holders, "one run per environment at a time"
    scope = f"{key}={run.tags[key]}" if per_value else key
    return holders, f"{most} run{'s' if most != 1 else ''} with {scope} at a time"


def why_queued(run: QueuedOrRunning, running: Sequence[QueuedOrRunning], limits: QueueLimits) -> QueueWait | None:
    """What holds ``run`` in the queue, naming the runs in its way; None when nothing does (the
    queue has not got to it yet)."""
    by_id = {other.run_id: other for other in running}
    for limit in limits.tag_limits:
        found = _blocking_tag_limit(run, running, limit)
        if found:
            holders, rule = found
            names = ", ".join(holder.label() for holder in holders)
            return QueueWait(f"{names} ({rule})", f"waits for {names} to finish: the instance runs {rule} "
                                                  "(dagster.yaml, concurrency.runs.tag_concurrency_limits)")
    for pool in sorted(run.pools):
        most, holding = limits.pools.get(pool, (None, ()))
        if most is not None and len(holding) >= most:
            names = ", ".join(by_id[run_id].label() if run_id in by_id else f"run {run_id[:8]}"
                              for run_id in dict.fromkeys(holding))
            return QueueWait(f"a slot of the pool {pool}, held by {names}",
                             f"waits for a slot of the pool {pool} ({most} at a time), held by {names} "
                             "(dagster.yaml, concurrency.pools)")
    if 0 <= limits.max_concurrent_runs <= len(running):
        return QueueWait(f"one of the {len(running)} runs in progress (at most {limits.max_concurrent_runs} at a time)",
                         f"waits for one of the {len(running)} runs in progress to finish: the instance runs at "
                         f"most {limits.max_concurrent_runs} at a time (dagster.yaml, "
                         "concurrency.runs.max_concurrent_runs)")
    return None

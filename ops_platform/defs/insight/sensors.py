"""``database_condition_sensor``: failing database checks reach Slack with the discipline of health
incidents. One message when a condition starts, a reminder every STATS_REMINDER_MINUTES while it
lasts, one message when it clears, and nothing repeated across daemon restarts.

It reads the ``database_stats`` check results from the event log the way the health sensor reads
its own (``new_observations``: a watermark that never passes a result still pending), feeds each
snapshot's results to ``lib/insight/conditions.py::ConditionTracker``, and posts through an
outbox. The whole state (what was read, the tracker, the posts not yet made) lives in the cursor.
Its first tick announces only what the newest snapshot of each environment shows failing, not
the whole recorded history.
"""

import json
from dataclasses import asdict, dataclass, field

import dagster as dg

from ops_platform.defs.alerts.outbox import post_outbox
from ops_platform.defs.health.sensors import new_observations
from ops_platform.defs.insight.common import asset_url
from ops_platform.defs.insight.database_stats import STATS_CHECK_KEYS, STATS_KEY
from ops_platform.defs.resources import OpsSlackResource
from ops_platform.defs.settings import InsightSettings
from ops_platform.lib.insight.conditions import ERROR, WARN, ConditionEvent, ConditionResult, ConditionTracker
from ops_platform.lib.messages.database import condition_message


@dataclass
class ConditionCursor:
    after: int = 0
    seen: set[int] = field(default_factory=set)
    pending_checks: set[str] = field(default_factory=set)
    tracker: dict | None = None
    outbox: list[dict] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"after": self.after, "seen": sorted(self.seen), "pending_checks": sorted(self.pending_checks),
                           "tracker": self.tracker, "outbox": self.outbox}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> "ConditionCursor":
        try:
            data = json.loads(text) if text else {}
            tracker = data.get("tracker")
            return cls(int(data.get("after") or 0), {int(i) for i in data.get("seen") or []},
                       {str(key) for key in data.get("pending_checks") or []},
                       tracker if isinstance(tracker, dict) else None,
                       [item for item in data.get("outbox") or [] if isinstance(item, dict)])
        except (ValueError, AttributeError, TypeError):
            return cls()


def parse_condition(record) -> tuple[str, tuple[float, ConditionResult]] | None:
    """A finished database_stats check result as (environment, (snapshot time, condition))."""
    event = record.event
    evaluation = event.dagster_event.event_specific_data if event and event.dagster_event else None
    if not isinstance(evaluation, dg.AssetCheckEvaluation):
        return None
    metadata = {key: value.value for key, value in (evaluation.metadata or {}).items()}
    environment = metadata.get("environment") or evaluation.partition
    if not environment or "collected_at" not in metadata:
        return None
    severity = WARN if evaluation.severity == dg.AssetCheckSeverity.WARN else ERROR
    return str(environment), (float(metadata["collected_at"]), ConditionResult(
        evaluation.check_name, evaluation.passed, severity, evaluation.description or ""))


def _render(item: dict):
    event = ConditionEvent(**item)
    return condition_message(event, asset_url(STATS_KEY.to_user_string(), event.environment))


@dg.sensor(
    name="database_condition_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts failing ERROR checks of database_stats to Slack (warnings too with STATS_ALERT_WARNINGS=1): "
                "one message when a condition starts, a reminder every STATS_REMINDER_MINUTES while it lasts, one "
                "when it clears. An unreachable database is the failing check `snapshot`. State lives in the cursor.",
)
def database_condition_sensor(context: dg.SensorEvaluationContext, slack: OpsSlackResource,
                              insight_settings: InsightSettings) -> dg.SkipReason:
    cursor = ConditionCursor.from_json(context.cursor)
    tracker = ConditionTracker.from_state(cursor.tracker, insight_settings.alert_settings())
    found, cursor.after, cursor.seen, cursor.pending_checks = new_observations(
        context.instance, cursor.after, cursor.seen, STATS_CHECK_KEYS, cursor.pending_checks, parse=parse_condition)
    first_tick = not context.cursor
    events = []
    for environment, items in sorted(found.items()):
        snapshots: dict[float, list[ConditionResult]] = {}
        for at, result in items:
            snapshots.setdefault(at, []).append(result)
        times = sorted(snapshots)
        for at in times[-1:] if first_tick else times:
            events += tracker.observe(environment, snapshots[at], at)
    cursor.tracker = tracker.state
    outbox = cursor.outbox + [asdict(event) for event in events]
    cursor.outbox = post_outbox(slack, context.log, outbox, _render)
    context.update_cursor(cursor.to_json())
    read = sum(len(items) for items in found.values())
    summary = f"read {read} check results; sent {len(outbox) - len(cursor.outbox)} notices"
    if cursor.outbox:
        summary += f"; {len(cursor.outbox)} left for the next tick"
    failing = {env: sorted(tracker.failing(env)) for env in tracker.state["environments"] if tracker.failing(env)}
    if failing:
        summary += "; failing: " + "; ".join(f"{env}: {', '.join(names)}" for env, names in sorted(failing.items()))
    if insight_settings.invalid_settings:
        summary += f"; bad setting (defaults used here): {insight_settings.invalid_settings[0]}"
    return dg.SkipReason(summary)

"""``target_discovery_sensor``: keeps the ``targets`` partitions in step with the servers.

Every minute it lists the targets (lib/targets.py: the environments, the file's targets and the
databases found now on each server) and registers the new ones as partitions. A database that
appears is announced once in Slack with its first backup's time; one that disappears is announced
once, stops being scheduled (the server's schedule finds databases at its tick) and keeps its
partition, so its backups stay under retention. A server that cannot be listed says so and
changes nothing: its databases are not taken for gone. The known databases and the outbox of
posts live in the cursor, so a daemon restart neither repeats nor loses an announcement."""

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
from croniter import croniter

from ops_platform.defs.alerts.outbox import post_outbox
from ops_platform.defs.environments import TARGETS
from ops_platform.defs.resources import OpsSlackResource
from ops_platform.lib.messages import fleet as messages
from ops_platform.lib.targets import DISCOVERED, OPERATIONS_TIMEZONE, load_targets


def first_backup_at(cron: str, now: datetime) -> str:
    """The next tick of ``cron`` after ``now``, in the operations team's time zone."""
    local = now.astimezone(ZoneInfo(OPERATIONS_TIMEZONE))
    return croniter(cron, local).get_next(datetime).strftime("%Y-%m-%d %H:%M %Z")


@dg.sensor(
    name="target_discovery_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers every target (environments, ops_platform.yaml's targets, the databases on its servers) as "
                "a partition of 'targets', and announces a database that appears on a server or disappears.",
)
def target_discovery_sensor(context: dg.SensorEvaluationContext, slack: OpsSlackResource):
    state = json.loads(context.cursor) if context.cursor else {"known": None, "outbox": []}
    result = load_targets()
    for problem in result.problems:
        context.log.warning(str(problem))
    registered = set(context.instance.get_dynamic_partitions(TARGETS))
    new_partitions = [name for name in result.names if name not in registered]
    discovered = {target.name: target for target in result.targets if target.kind == DISCOVERED}
    unreachable = set(result.unreachable_servers)
    known = state["known"]
    if known is not None and not result.file_is_bad:
        now = datetime.now(ZoneInfo("UTC"))
        for name in sorted(set(discovered) - set(known)):
            target = discovered[name]
            state["outbox"].append({"event": "found", "target": name, "server": target.server,
                                    "first_backup": first_backup_at(target.schedule, now)})
        for name in sorted(set(known) - set(discovered)):
            server = name.split(".", 1)[0]
            if server not in unreachable:
                state["outbox"].append({"event": "gone", "target": name, "server": server})
    if not result.file_is_bad:
        kept = [name for name in known or [] if name.split(".", 1)[0] in unreachable]
        state["known"] = sorted(set(discovered) | set(kept))
    state["outbox"] = post_outbox(slack, context.log, state["outbox"], messages.discovery_message)
    summary = (f"{len(result.targets)} target(s), {len(new_partitions)} new partition(s)"
               + "".join(f"; {problem}" for problem in result.problems))
    return dg.SensorResult(
        dynamic_partitions_requests=[dg.AddDynamicPartitionsRequest(TARGETS, new_partitions)] if new_partitions else [],
        cursor=json.dumps(state), skip_reason=None if new_partitions else dg.SkipReason(summary))

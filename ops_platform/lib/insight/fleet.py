"""Which targets the reports cover, and when each is expected to have been backed up: the
environments first, then every other target, whether registered as a partition of ``targets``
or found on a server now."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ops_platform.lib.targets import ENVIRONMENT_BACKUP_CRONS, TargetsResult


@dataclass(frozen=True)
class ReportTarget:
    """A target the reports cover; ``cron`` its backup schedule (None: no backup is expected,
    e.g. development, or a database gone from its server whose backups are kept)."""

    name: str
    cron: str | None
    environment: bool = False


def report_targets(environments: Iterable[str], registered: Iterable[str], live: TargetsResult,
                   server_schedules: Mapping[str, str] | None = None) -> list[ReportTarget]:
    """The environments (in their order), then the other targets by name. A target listed now
    (``live``) is expected on its schedule; a registered one that is not listed is expected on
    its server's schedule when that server could not be asked (``server_schedules``: each
    unreachable server's cron), and not at all when it is gone."""
    environments = list(environments)
    found = [ReportTarget(name, ENVIRONMENT_BACKUP_CRONS.get(name), True) for name in environments]
    schedules = {target.name: target.schedule for target in live.targets}
    unreachable = {server: cron for server, cron in (server_schedules or {}).items()
                   if server in live.unreachable_servers}
    others = sorted(set(registered) | set(schedules) - set(environments))
    for name in others:
        if name in environments:
            continue
        cron = schedules.get(name)
        if name not in schedules and "." in name:
            cron = unreachable.get(name.split(".", 1)[0])
        found.append(ReportTarget(name, cron))
    return found

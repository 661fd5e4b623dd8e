"""The configured environments, and the partitions every per-target asset shares (the database,
its backups, retention, restores, drills, statistics): one partition per target, the three
environments and the targets of ``ops_platform.yaml`` (lib/targets.py), discovered databases
included.

The partitions are Dagster dynamic partitions named ``targets``: a database created on a server
next month becomes a partition without a reload. Whatever starts a run of one registers its
partition first (``ensure_partitions``): the CLI, ``make dev``, the schedules and
``target_discovery_sensor``, which keeps them in step with the servers."""

import dagster as dg

from ops_platform.config import configured_environment_names

ENVIRONMENT_NAMES = configured_environment_names()
TARGETS = "targets"
environment_partitions = dg.DynamicPartitionsDefinition(name=TARGETS)


def ensure_partitions(instance: dg.DagsterInstance, names) -> list[str]:
    """Register ``names`` as partitions of ``targets`` where they are not yet; the ones added."""
    existing = set(instance.get_dynamic_partitions(TARGETS))
    missing = list(dict.fromkeys(name for name in names if name not in existing))
    if missing:
        instance.add_dynamic_partitions(TARGETS, missing)
    return missing

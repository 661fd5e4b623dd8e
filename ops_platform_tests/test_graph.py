"""Fast feedback on the definitions, with no server: the whole graph (assets and their
dependencies, checks and their blocking flags, jobs, schedules, sensors, resources) rendered as
text and compared with ``graph_snapshot.txt``. A change shows as a readable diff; when the change is
intended, ``make graph-snapshot`` rewrites the file, and the diff is reviewed with the code.

Runs in a few seconds: ``make test-fast``. The code location is loaded in a child process with a
fixed environment (every environment configured, S3 and the app's URLs set), so the result does
not depend on the machine or on other tests."""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path

NEEDS_SERVICES = False
SNAPSHOT = Path(__file__).with_name("graph_snapshot.txt")

FIXED_ENVIRONMENT = {
    "PRODUCTION_DATABASE_URL": "postgresql://app@db.invalid/app",
    "PRODUCTION_API_URL": "https://api.example.invalid",
    "PRODUCTION_FRONTEND_URL": "https://example.invalid",
    "PRODUCTION_REDIS_URL": "redis://redis.invalid:6379/0",
    "STAGING_DATABASE_URL": "postgresql://app@staging-db.invalid/app",
    "STAGING_API_URL": "https://staging-api.example.invalid",
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/ops_platform_demo",
    "AWS_S3_BUCKET": "backups.invalid",
}

RENDER = r'''
import dagster as dg
from ops_platform.definitions import defs

d = defs()
graph = d.resolve_asset_graph()
lines = []
for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
    node = graph.get(key)
    definition = node.partitions_def
    partitions = ("-" if definition is None else f"dynamic:{definition.name}"
                  if isinstance(definition, dg.DynamicPartitionsDefinition)
                  else ",".join(definition.get_partition_keys()))
    kinds = ",".join(sorted(node.kinds)) or "-"
    condition = node.automation_condition
    automation = (condition.get_label() or type(condition).__name__) if condition else "-"
    pools = ",".join(sorted(node.pools or [])) or "-"
    lines.append(f"asset {key.to_user_string()}: group={node.group_name} kinds={kinds} partitions={partitions} "
                 f"{'external' if node.is_external else 'materializable'} automation={automation} pool={pools}")
    for parent in sorted(node.parent_keys, key=lambda k: k.to_user_string()):
        mapping = node.partition_mappings.get(parent)
        lines.append(f"  dep {parent.to_user_string()}" + (f" mapping={type(mapping).__name__}" if mapping else ""))
    for check_key in sorted(graph.asset_check_keys, key=lambda k: k.name):
        if check_key.asset_key == key:
            spec = graph.get_check_spec(check_key)
            lines.append(f"  check {check_key.name}{' (blocking)' if spec.blocking else ''}")
for job_name in sorted({job.name for job in d.jobs if not job.name.startswith("__")}):
    resolved = d.resolve_job_def(job_name)
    selected = sorted(k.to_user_string() for k in resolved.asset_layer.selected_asset_keys)
    tags = ",".join(f"{k}={v}" for k, v in sorted(resolved.tags.items()))
    lines.append(f"job {job_name}: assets={','.join(selected) or '-'} tags={tags or '-'}")
for schedule in sorted(d.schedules, key=lambda s: s.name):
    lines.append(f"schedule {schedule.name}: cron={schedule.cron_schedule!r} tz={schedule.execution_timezone} "
                 f"job={schedule.job_name} default={schedule.default_status.value}")
for sensor in sorted(d.sensors, key=lambda s: s.name):
    lines.append(f"sensor {sensor.name}: {type(sensor).__name__} default={sensor.default_status.value} "
                 f"interval={sensor.minimum_interval_seconds}")
for name, resource in sorted((d.resources or {}).items()):
    lines.append(f"resource {name}: {type(resource).__name__}")
print("\n".join(lines))
'''


def render_graph() -> str:
    env = {key: value for key, value in os.environ.items()
           if not key.endswith(("DATABASE_URL", "_API_URL", "_FRONTEND_URL", "_REDIS_URL")) and key not in (
               "API_URL", "FRONTEND_URL", "REDIS_URL", "AWS_S3_BUCKET")}
    env.update(FIXED_ENVIRONMENT)
    result = subprocess.run([sys.executable, "-c", RENDER], env=env, capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_graph_matches_the_snapshot():
    rendered = render_graph()
    if os.environ.get("UPDATE_GRAPH_SNAPSHOT"):
        SNAPSHOT.write_text(rendered)
    expected = SNAPSHOT.read_text()
    diff = "".join(difflib.unified_diff(expected.splitlines(True), rendered.splitlines(True),
                                        "graph_snapshot.txt", "the code location now"))
    assert not diff, ("the definitions changed; if intended, run `make graph-snapshot` and commit the file:\n"
                      + diff)


def test_dagster_packages_share_one_version():
    """The pins hold, including the ones dagster itself makes for its own packages."""
    from importlib.metadata import version

    assert {version(name) for name in ("dagster", "dagster-webserver", "dagster-graphql", "dagster-pipes",
                                       "dagster-shared")} == {"1.13.27"}
    assert {version(name) for name in ("dagster-aws", "dagster-slack", "dagster-postgres", "dagster-celery")} == {"0.29.27"}


"""Health of every configured environment's components, as external assets with asset checks,
and of the fleet's databases (``fleet_databases``: every one accepts a connection).

Each component (the app's API, its frontend, PostgreSQL, Redis, the backup bucket) of each
configured environment is an external asset in the ``health`` group, named ``<env>_<component>``,
with its checks. One multi-asset check runs a whole sweep concurrently and records, per check, the result, the
latency and the reason, so the UI shows each component's check history and the alert sensor can
read it back from the instance.
"""


import os
from datetime import datetime
from pathlib import Path

import dagster as dg
from pydantic import Field

from ops_platform.config import ConfigError, load_environments
from ops_platform.defs import platform_start
from ops_platform.defs.environments import ENVIRONMENT_NAMES, TARGETS
from ops_platform.defs.resources import BackupBucketResource, BackupStorageResource
from ops_platform.defs.settings import HealthSettings
from ops_platform.lib import probes
from ops_platform.lib.incidents import SWEEP_JOB
from ops_platform.lib.redact import Redactor
from ops_platform.lib.tags import PLATFORM_STARTING
from ops_platform.lib.targets import load_platform_config, probed_targets

HEALTH_GROUP = "health"
SWEEP_INTERVAL_MINUTES = 5
API_CHECK = "health_endpoint"
REACHABLE_CHECK = "reachable"
SERVICE_CHECK_PREFIX = "service_"
COMPONENT_KINDS = {"api": {"http"}, "frontend": {"http"}, "postgres": {"postgres"}, "redis": {"redis"},
                   "bucket": {"s3"}}
COMPONENT_DESCRIPTIONS = {
    "api": "The app's API: `$API_URL/health` answers HTTP 200 with status healthy. Each service the "
           "app reports (database, redis, storage) is its own check.",
    "frontend": "The app's frontend: `$FRONTEND_URL` answers 2xx.",
    "postgres": "The environment's PostgreSQL server: connect and `SELECT 1` within the timeouts.",
    "redis": "The environment's Redis, checked directly with PING.",
    "bucket": "The backup bucket: HeadBucket plus a write, read and delete canary under the prefix.",
}
FLEET_KEY = dg.AssetKey("fleet_databases")
FLEET_CHECK = "accept_connections"


def _components(environment, environ) -> list[str]:
    found = ["postgres"]
    if environment.api_url:
        found.append("api")
    if environment.frontend_url:
        found.append("frontend")
    if environment.redis_url:
        found.append("redis")
    if environ.get("AWS_S3_BUCKET", "").strip():
        found.append("bucket")
    return found


def component_asset_key(environment: str, component: str) -> dg.AssetKey:
    return dg.AssetKey(f"{environment}_{component}")


def check_key_for(environment: str, component: str) -> dg.AssetCheckKey | None:
    """Where a probe's component is recorded; None for services the seed format does not name."""
    if component == "api":
        return dg.AssetCheckKey(component_asset_key(environment, "api"), API_CHECK)
    if component.startswith("api_"):
        service = component[len("api_"):]
        if service in probes.SEED_SERVICES:
            return dg.AssetCheckKey(component_asset_key(environment, "api"), SERVICE_CHECK_PREFIX + service)
        return None
    return dg.AssetCheckKey(component_asset_key(environment, component), REACHABLE_CHECK)


def _build(environ):
    environments = {name: env for name, env in load_environments(environ).items()
                    if name in ENVIRONMENT_NAMES}
    specs, check_specs = [], []
    for name, environment in environments.items():
        components = _components(environment, environ)
        for component in components:
            specs.append(dg.AssetSpec(
                key=component_asset_key(name, component),
                description=f"{COMPONENT_DESCRIPTIONS[component]} ({name})",
                group_name=HEALTH_GROUP,
                kinds=COMPONENT_KINDS[component],
                metadata={"environment": name, "component": component},
            ))
        for component in components:
            if component == "api":
                check_specs.append(dg.AssetCheckSpec(API_CHECK, asset=component_asset_key(name, "api"),
                                                     description="/health answers 200 with status healthy, in time."))
                for service in probes.SEED_SERVICES:
                    check_specs.append(dg.AssetCheckSpec(
                        SERVICE_CHECK_PREFIX + service, asset=component_asset_key(name, "api"),
                        description=f"The app reports {service} as connected."))
            else:
                check_specs.append(dg.AssetCheckSpec(REACHABLE_CHECK, asset=component_asset_key(name, component),
                                                     description=COMPONENT_DESCRIPTIONS[component]))
    if _has_fleet(environ):
        specs.append(dg.AssetSpec(
            key=FLEET_KEY, group_name=HEALTH_GROUP, kinds={"postgres"}, metadata={"component": "postgres"},
            description="The databases beyond the environments (ops_platform.yaml's targets and the databases "
                        "registered from its servers): each accepts a connection and answers SELECT 1. One check "
                        "result per sweep, each database's answer in its metadata `targets`; the health alert "
                        "sensor follows each database as its own target."))
        check_specs.append(dg.AssetCheckSpec(FLEET_CHECK, asset=FLEET_KEY,
                                             description="Every fleet database accepts a connection in time."))
    return specs, check_specs


def _has_fleet(environ) -> bool:
    try:
        platform = load_platform_config(environ)
    except ConfigError:
        return False
    return bool(platform.servers or platform.targets)


health_component_specs, health_check_specs = _build(os.environ)
FLEET_CHECK_KEY = dg.AssetCheckKey(FLEET_KEY, FLEET_CHECK)


class HealthSweepConfig(dg.Config):
    environments: list[str] = Field(
        default=[], description="Environments to check, e.g. [production]. Empty (the default, []) means every "
                                f"configured environment: {', '.join(ENVIRONMENT_NAMES) or 'none'}.")
    timeout_seconds: float | None = Field(
        default=None, description="Per-check timeout for this sweep; empty: HEALTH_CHECK_TIMEOUT_SECONDS.")
    degraded_ms: int | None = Field(
        default=None, description="Answers slower than this are degraded; empty: HEALTH_DEGRADED_LATENCY_MS.")


def _check_result(environment: str, result: probes.ProbeResult, checked_at: datetime, sweep_id: str,
                  extra: dict | None = None) -> dg.AssetCheckResult:
    key = check_key_for(environment, result.component)
    metadata = {
        "environment": environment,
        "component": result.component,
        "status": result.status,
        "reason": result.reason,
        "latency_ms": dg.MetadataValue.float(round(result.latency_seconds * 1000, 1)),
        "checked_at": dg.MetadataValue.timestamp(checked_at),
        "sweep_id": sweep_id,
    }
    if result.details.get("version"):
        metadata["version"] = result.details["version"]
    metadata.update(extra or {})
    return dg.AssetCheckResult(
        asset_key=key.asset_key, check_name=key.name,
        passed=result.status == probes.HEALTHY,
        severity=dg.AssetCheckSeverity.WARN if result.status == probes.DEGRADED else dg.AssetCheckSeverity.ERROR,
        description=result.reason,
        metadata=metadata,
    )


def fleet_check_result(results: list[probes.ProbeResult], problems: list[str], checked_at: datetime,
                       sweep_id: str) -> dg.AssetCheckResult:
    """The fleet's databases in one check result: passed when every one is healthy; the metadata
    `targets` holds each one's [status, reason, latency_ms], which the health alert sensor reads."""
    failing = sorted(r.environment for r in results if r.status == probes.UNHEALTHY)
    slow = sorted(r.environment for r in results if r.status == probes.DEGRADED)
    status = probes.worst_status([r.status for r in results]) if results else probes.HEALTHY
    description = (f"{len(results) - len(failing)} of {len(results)} databases accept connections"
                   + (f"; failing: {', '.join(failing[:20])}" + (" ..." if len(failing) > 20 else "") if failing else "")
                   + (f"; slow: {', '.join(slow[:20])}" if slow else ""))
    latencies = [r.latency_seconds for r in results]
    return dg.AssetCheckResult(
        asset_key=FLEET_KEY, check_name=FLEET_CHECK, passed=not failing and not slow,
        severity=dg.AssetCheckSeverity.ERROR if failing else dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "component": "postgres", "status": status, "checked_at": dg.MetadataValue.timestamp(checked_at),
            "sweep_id": sweep_id, "databases": dg.MetadataValue.int(len(results)),
            "failing": dg.MetadataValue.int(len(failing)),
            "latency_ms": dg.MetadataValue.float(round(max(latencies, default=0.0) * 1000, 1)),
            "targets": dg.MetadataValue.json({r.environment: [r.status, r.reason, round(r.latency_seconds * 1000, 1)]
                                              for r in sorted(results, key=lambda r: r.environment)}),
            **({"not_checked": dg.MetadataValue.json(problems)} if problems else {}),
        })


def component_state(asset_key: dg.AssetKey, results: list[probes.ProbeResult], sweep: probes.SweepResult
                    ) -> dg.AssetMaterialization:
    """One component's state in a sweep (its worst check), recorded on its asset."""
    worst = max(results, key=lambda result: probes.STATUS_RANK[result.status])
    main = next((result for result in results if component_asset_key(result.environment, result.component)
                 == asset_key), worst)
    reason = worst.reason if worst is main else f"{worst.component}: {worst.reason}"
    return dg.AssetMaterialization(asset_key=asset_key, description=f"{worst.status}: {reason}", metadata={
        "status": worst.status,
        "reason": reason,
        "latency_ms": dg.MetadataValue.float(round(main.latency_seconds * 1000, 1)),
        "checked_at": dg.MetadataValue.timestamp(sweep.started_at),
        "sweep_id": sweep.sweep_id,
    })


def sweep_settings(config: HealthSweepConfig, health_settings: HealthSettings, run_tags=None) -> probes.ProbeSettings:
    settings = health_settings.probe_settings()
    settings.judge_latency = PLATFORM_STARTING not in (run_tags or {})
    if config.timeout_seconds:
        settings.timeout_seconds = config.timeout_seconds
    if config.degraded_ms:
        settings.degraded_seconds = config.degraded_ms / 1000
    return settings


def build_probes(environments, settings: probes.ProbeSettings, backup_bucket: BackupBucketResource,
                 swap_root: Path | None = None):
    s3_client, s3_problem, encryption = None, None, None
    if backup_bucket.bucket:
        try:
            s3_client = backup_bucket.get_client(max_attempts=1, read_timeout_seconds=settings.timeout_seconds)
            encryption = backup_bucket.encryption()
        except ConfigError as error:
            s3_client, s3_problem = None, f"S3 configuration: {error}"
    sweep = []
    for environment in environments:
        sweep += probes.environment_probes(environment, settings, s3_client=s3_client,
                                           bucket=backup_bucket.bucket, prefix=backup_bucket.prefix,
                                           encryption=encryption, swap_root=swap_root)
        if s3_problem:
            sweep.append(probes.failed_probe(environment.name, "bucket", s3_problem))
    return sweep


if health_check_specs:
    @dg.multi_asset_check(specs=health_check_specs, can_subset=True, name="health_checks",
                          description="One health sweep of every configured environment, all checks at once.")
    def health_checks(context: dg.AssetCheckExecutionContext, config: HealthSweepConfig,
                      backup_bucket: BackupBucketResource, backup_storage: BackupStorageResource,
                      health_settings: HealthSettings):
        """Probe every component of the selected environments concurrently, with hard per-check
        timeouts, and record each result with its latency, and each component's state as a
        materialization of its asset: the Catalog shows it (red when a check failed) with its time,
        and the asset's plots its latency. A sweep of every environment also connects to every
        fleet database (``fleet_databases``), a few at a time with short timeouts."""
        selected = set(config.environments) or set(ENVIRONMENT_NAMES)
        unknown = selected - set(ENVIRONMENT_NAMES)
        if unknown:
            raise dg.Failure(f"unknown environment(s): {', '.join(sorted(unknown))}; configured: "
                             f"{', '.join(ENVIRONMENT_NAMES)}")
        environments = [env for name, env in load_environments().items() if name in selected]
        health_settings.require_valid("health sweep")
        settings = sweep_settings(config, health_settings, context.run.tags)
        sweep_probes = build_probes(environments, settings, backup_bucket, backup_storage.local_store().root)
        fleet, not_checked = {}, []
        if FLEET_CHECK_KEY in context.selected_asset_check_keys and not config.environments:
            registered = [name for name in context.instance.get_dynamic_partitions(TARGETS)
                          if name not in ENVIRONMENT_NAMES]
            fleet, not_checked = probed_targets(registered)
            if fleet:
                sweep_probes.append(probes.fleet_probe(fleet, settings))
        sweep = probes.run_sweep(sweep_probes, Redactor.from_environ())
        context.log.info(f"health sweep of {', '.join(sorted(selected))}: {len(sweep.results)} checks in "
                         f"{sweep.duration_seconds:.2f}s")
        selected_keys = context.selected_asset_check_keys
        for environment in environments:
            results = sweep.for_environment(environment.name)
            others = {r.component: f"{r.status}: {r.reason}" for r in results
                      if check_key_for(environment.name, r.component) is None}
            recorded = [(check_key_for(environment.name, result.component), result) for result in results]
            recorded = [(key, result) for key, result in recorded if key is not None and key in selected_keys]
            for asset_key in dict.fromkeys(key.asset_key for key, _ in recorded):
                context.op_execution_context.log_event(component_state(
                    asset_key, [result for key, result in recorded if key.asset_key == asset_key], sweep))
            for key, result in recorded:
                extra = {"other_services": dg.MetadataValue.json(others)} if others and result.component == "api" else None
                if result.status != probes.HEALTHY:
                    context.log.warning(f"{environment.name} {result.component}: {result.status}: {result.reason}")
                yield _check_result(environment.name, result, sweep.started_at, sweep.sweep_id, extra)
        if FLEET_CHECK_KEY in selected_keys and not config.environments:
            results = [r for r in sweep.results if r.environment in fleet or r.environment == probes.FLEET]
            results = [r for r in results if r.environment != probes.FLEET] or [
                probes.ProbeResult(name, "postgres", probes.UNHEALTHY, r.reason, r.latency_seconds)
                for r in results for name in fleet]
            for problem in not_checked:
                context.log.warning(f"fleet health: not checked: {problem}")
            check = fleet_check_result(results, not_checked, sweep.started_at, sweep.sweep_id)
            context.log.info(f"fleet databases: {check.description}")
            context.op_execution_context.log_event(dg.AssetMaterialization(
                asset_key=FLEET_KEY, description=f"{check.metadata['status'].value}: {check.description}",
                metadata={key: check.metadata[key] for key in ("status", "databases", "failing", "latency_ms",
                                                               "checked_at", "sweep_id")}))
            yield check

    health_check_job = dg.define_asset_job(
        SWEEP_JOB,
        selection=dg.AssetSelection.checks(health_checks),
        description="Run one health sweep: every configured environment's API, frontend, PostgreSQL, "
                    "Redis and backup bucket, checked concurrently with hard timeouts. In the launchpad, "
                    "`environments: []` (the default) means every configured environment.",
        tags={"ops_platform/kind": "health"},
    )

    @dg.schedule(
        name="health_check_schedule",
        cron_schedule=f"*/{SWEEP_INTERVAL_MINUTES} * * * *",
        job=health_check_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="A health sweep every 5 minutes (the first one while the platform starts does not judge "
                    "latency).",
    )
    def health_check_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        starting = platform_start.starting(context.scheduled_execution_time)
        return dg.RunRequest(run_key=f"health-{context.scheduled_execution_time.isoformat()}",
                             tags={PLATFORM_STARTING: "latency not judged"} if starting else {})

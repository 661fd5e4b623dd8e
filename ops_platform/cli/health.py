"""``ops-platform health [ENV] [--json]``: one health sweep now, as a Dagster run."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from ops_platform.cli.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, CommandError
from ops_platform.cli.runs import failure_message, run_job
from ops_platform.config import configured_environment_names, get_environment
from ops_platform.lib import settings
from ops_platform.lib.probes import (
    UNHEALTHY,
    ProbeResult,
    checked_at_seconds,
    environment_summary,
    fleet_probe,
    run_sweep,
)
from ops_platform.lib.redact import Redactor
from ops_platform.lib.tags import LAUNCHED_BY


def _results_by_environment(result) -> tuple[dict[str, list[ProbeResult]], datetime]:
    found: dict[str, list[ProbeResult]] = {}
    checked_at = datetime.now(timezone.utc)
    for evaluation in result.get_asset_check_evaluations():
        metadata = {key: value.value for key, value in evaluation.metadata.items()}
        if isinstance(metadata.get("targets"), dict):
            for name, (status, reason, latency_ms) in sorted(metadata["targets"].items()):
                found.setdefault(name, []).append(ProbeResult(name, "postgres", status, reason,
                                                              float(latency_ms) / 1000))
            continue
        if "environment" not in metadata:
            continue
        checked_at = datetime.fromtimestamp(checked_at_seconds(metadata["checked_at"]), timezone.utc)
        details = {"version": metadata["version"]} if metadata.get("version") else {}
        found.setdefault(metadata["environment"], []).append(ProbeResult(
            metadata["environment"], metadata["component"], metadata["status"], metadata.get("reason", ""),
            float(metadata["latency_ms"]) / 1000, details))
    return found, checked_at


def health_command(args) -> int:
    settings.check(settings.HEALTH + settings.S3_ENCRYPTION)
    if args.environment:
        environment = get_environment(args.environment)
        if environment.name not in configured_environment_names():
            return _target_health(args, environment)
    elif not configured_environment_names():
        raise CommandError("no environments configured (set DATABASE_URL, STAGING_DATABASE_URL or "
                           "PRODUCTION_DATABASE_URL)", EXIT_BAD_INPUT)
    config = {"environments": [args.environment] if args.environment else []}
    result = run_job("health_check_job", run_config={"ops": {"health_checks": {"config": config}}},
                     tags={LAUNCHED_BY: "cli"})
    if not result.success:
        raise CommandError(f"{failure_message(result)} (run {result.run_id})")
    by_environment, checked_at = _results_by_environment(result)
    return _report(args, by_environment, checked_at, f"run {result.run_id}")


def _target_health(args, target) -> int:
    """A target beyond the environments (a file target, ``<server>.<database>``): its database
    answers a connection and ``SELECT 1`` now, as the sweep's ``fleet_databases`` check asks it.
    Nothing is recorded: the sweep every 5 minutes records the fleet in the UI."""
    from ops_platform.defs.settings import HealthSettings

    probe_settings = HealthSettings(**settings.values(settings.HEALTH)).probe_settings()
    sweep = run_sweep([fleet_probe({target.name: target.database_url}, probe_settings)], Redactor.from_environ())
    checked_at = datetime.now(timezone.utc)
    return _report(args, {target.name: sweep.for_environment(target.name)}, checked_at,
                   "not recorded: a check of one target now (the sweep records the fleet)")


def _report(args, by_environment: dict[str, list[ProbeResult]], checked_at: datetime, last_line: str) -> int:
    summaries = {name: environment_summary(results, checked_at) for name, results in by_environment.items()}
    if args.json:
        print(json.dumps(summaries[args.environment] if args.environment else summaries, indent=2))
    else:
        width = max([12, *(len(name) + 1 for name in by_environment)])
        print(f"{'ENVIRONMENT':<{width}} {'COMPONENT':<14} {'STATUS':<10} {'LATENCY':>9}  DETAIL")
        for name, results in by_environment.items():
            for probe in sorted(results, key=lambda r: r.component):
                print(f"{name:<{width}} {probe.component:<14} {probe.status:<10} "
                      f"{probe.latency_seconds * 1000:>6.0f} ms  {probe.reason}")
        for name, summary in summaries.items():
            version = f", version {summary['version']}" if summary["version"] else ""
            print(f"{name}: {summary['status']}{version}")
        print(last_line)
    unhealthy = any(probe.status == UNHEALTHY for results in by_environment.values() for probe in results)
    return EXIT_FAILED if unhealthy else EXIT_OK

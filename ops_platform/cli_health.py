"""``ops-platform health [ENV] [--json]`` and ``ops-platform verify-deployment ENV ...``.

Both run as Dagster runs on the ``$DAGSTER_HOME`` instance, so they show in the UI."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

from ops_platform.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, CommandError, failure_message, run_job
from ops_platform.config import ENVIRONMENT_PREFIXES, configured_environment_names, get_environment
from ops_platform.lib.probes import UNHEALTHY, ProbeResult, environment_summary, probe_settings_from_environ


def _results_by_environment(result) -> tuple[dict[str, list[ProbeResult]], datetime]:
    found: dict[str, list[ProbeResult]] = {}
    checked_at = datetime.now(timezone.utc)
    for evaluation in result.get_asset_check_evaluations():
        metadata = {key: value.value for key, value in evaluation.metadata.items()}
        if "environment" not in metadata:
            continue
        checked_at = datetime.fromtimestamp(float(metadata["checked_at"]), timezone.utc)
        details = {"version": metadata["version"]} if metadata.get("version") else {}
        found.setdefault(metadata["environment"], []).append(ProbeResult(
            metadata["environment"], metadata["component"], metadata["status"], metadata.get("reason", ""),
            float(metadata["latency_ms"]) / 1000, details))
    return found, checked_at


def health_command(args) -> int:
    probe_settings_from_environ()
    if args.environment:
        get_environment(args.environment)
    elif not configured_environment_names():
        raise CommandError("no environments configured (set DATABASE_URL, STAGING_DATABASE_URL or "
                           "PRODUCTION_DATABASE_URL)", EXIT_BAD_INPUT)
    config = {"environments": [args.environment] if args.environment else []}
    result = run_job("health_check_job", run_config={"ops": {"health_checks": {"config": config}}},
                     tags={"ops_platform/launched_by": "cli"})
    if not result.success:
        raise CommandError(f"{failure_message(result)} (run {result.run_id})")
    by_environment, checked_at = _results_by_environment(result)
    summaries = {name: environment_summary(results, checked_at) for name, results in by_environment.items()}
    if args.json:
        print(json.dumps(summaries[args.environment] if args.environment else summaries, indent=2))
    else:
        print(f"{'ENVIRONMENT':<12} {'COMPONENT':<14} {'STATUS':<10} {'LATENCY':>9}  DETAIL")
        for name, results in by_environment.items():
            for probe in sorted(results, key=lambda r: r.component):
                print(f"{name:<12} {probe.component:<14} {probe.status:<10} "
                      f"{probe.latency_seconds * 1000:>6.0f} ms  {probe.reason}")
        for name, summary in summaries.items():
            version = f", version {summary['version']}" if summary["version"] else ""
            print(f"{name}: {summary['status']}{version}")
        print(f"run {result.run_id}", file=sys.stderr)
    unhealthy = any(probe.status == UNHEALTHY for results in by_environment.values() for probe in results)
    return EXIT_FAILED if unhealthy else EXIT_OK


def verify_deployment_command(args) -> int:
    environment = get_environment(args.environment)
    if not environment.api_url:
        raise CommandError(f"{ENVIRONMENT_PREFIXES[environment.name]}API_URL is not set; cannot verify a "
                           f"deployment of {environment.name}", EXIT_BAD_INPUT)
    if not args.expected_version.strip():
        raise CommandError("--expected-version must not be empty", EXIT_BAD_INPUT)
    if not args.timeout > 0:
        raise CommandError(f"--timeout must be > 0 seconds, got {args.timeout:g}", EXIT_BAD_INPUT)
    config = {"environment": environment.name, "expected_version": args.expected_version.strip(),
              "timeout_seconds": float(args.timeout)}
    if sys.stderr.isatty():
        print(f"verifying {environment.name} at version {config['expected_version']} "
              f"(up to {args.timeout:g}s)...", file=sys.stderr)
    from ops_platform.defs.deployments import jobs as deployment_jobs
    from ops_platform.defs.health import assets as health_assets

    max_runtime = deployment_jobs.max_runtime_seconds(config["timeout_seconds"])
    result = run_job("verify_deployment_job", run_config={"ops": {"verify_deployment": {"config": config}}},
                     tags={health_assets.ENVIRONMENT_TAG: environment.name,
                           deployment_jobs.MAX_RUNTIME_TAG: str(int(max_runtime))})
    if not result.success:
        raise CommandError(f"{failure_message(result)} (run {result.run_id})")
    print(f"deployment of {config['expected_version']} to {environment.name} verified (run {result.run_id})")
    return EXIT_OK

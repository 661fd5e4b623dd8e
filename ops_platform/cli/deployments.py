"""``ops-platform verify-deployment ENV --expected-version VERSION [--timeout SECONDS]``: poll
``/health`` for the new version and roll back when it does not arrive, as a Dagster run."""

from __future__ import annotations

import sys

from ops_platform.cli.errors import EXIT_BAD_INPUT, EXIT_OK, CommandError
from ops_platform.cli.runs import failure_message, run_job
from ops_platform.config import ENVIRONMENT_PREFIXES, get_environment
from ops_platform.lib import settings
from ops_platform.lib.deploy import max_runtime_seconds
from ops_platform.lib.tags import ENVIRONMENT, MAX_RUNTIME


def verify_deployment_command(args) -> int:
    environment = get_environment(args.environment)
    settings.check(settings.DEPLOYMENT)
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
    max_runtime = max_runtime_seconds(config["timeout_seconds"])
    result = run_job("verify_deployment_job", run_config={"ops": {"verify_deployment": {"config": config}}},
                     tags={ENVIRONMENT: environment.name, MAX_RUNTIME: str(int(max_runtime))})
    if not result.success:
        raise CommandError(f"{failure_message(result)} (run {result.run_id})")
    print(f"deployment of {config['expected_version']} to {environment.name} verified (run {result.run_id})")
    return EXIT_OK

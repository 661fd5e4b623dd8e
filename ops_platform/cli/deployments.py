"""``ops-platform verify-deployment ENV --expected-version VERSION [--timeout SECONDS]``: poll
``/health`` for the new version and roll back when it does not arrive, as a Dagster run.

With ``OPS_PLATFORM_URL`` set (a CI runner that is not the platform's host), the run is launched on
the platform's instance through its deployment gateway and run by its daemon, so the platform's
health alerts are held while it runs and the platform's configuration (API URL, rollback, Slack) is
used; this process follows it and exits as a local run would. Without it, the run happens in this
process, on the instance in ``$DAGSTER_HOME``."""

from __future__ import annotations

import os
import signal
import sys

from ops_platform.cli.errors import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_TERMINATED,
    CommandError,
)
from ops_platform.cli.remote import Platform, PlatformError
from ops_platform.cli.runs import failure_message, run_job
from ops_platform.config import ENVIRONMENT_PREFIXES, ConfigError, get_environment
from ops_platform.lib import settings
from ops_platform.lib.deploy import DeploymentLimits, max_runtime_seconds
from ops_platform.lib.tags import ENVIRONMENT, MAX_RUNTIME

JOB = "verify_deployment_job"


def _check_arguments(args, limits: DeploymentLimits | None = None) -> None:
    if not args.expected_version.strip():
        raise CommandError("--expected-version must not be empty", EXIT_BAD_INPUT)
    if not args.timeout > 0:
        raise CommandError(f"--timeout must be > 0 seconds, got {args.timeout:g}", EXIT_BAD_INPUT)
    if limits is not None:
        try:
            limits.check(args.timeout)
        except ConfigError as error:
            raise CommandError(f"--{error}", EXIT_BAD_INPUT) from None


def verify_deployment_command(args) -> int:
    try:
        platform = Platform.from_environ(os.environ)
    except PlatformError as error:
        raise CommandError(str(error), EXIT_BAD_INPUT) from None
    if platform is not None:
        return _verify_on_platform(platform, args)
    environment = get_environment(args.environment)
    settings.check(settings.DEPLOYMENT)
    if not environment.api_url:
        raise CommandError(f"{ENVIRONMENT_PREFIXES[environment.name]}API_URL is not set; cannot verify a "
                           f"deployment of {environment.name}", EXIT_BAD_INPUT)
    _check_arguments(args, DeploymentLimits.from_environ())
    config = {"environment": environment.name, "expected_version": args.expected_version.strip(),
              "timeout_seconds": float(args.timeout)}
    if sys.stderr.isatty():
        print(f"verifying {environment.name} at version {config['expected_version']} "
              f"(up to {args.timeout:g}s)...", file=sys.stderr)
    max_runtime = max_runtime_seconds(config["timeout_seconds"])
    result = run_job(JOB, run_config={"ops": {"verify_deployment": {"config": config}}},
                     tags={ENVIRONMENT: environment.name, MAX_RUNTIME: str(int(max_runtime))})
    if not result.success:
        raise CommandError(f"{failure_message(result)} (run {result.run_id})")
    print(f"deployment of {config['expected_version']} to {environment.name} verified (run {result.run_id})")
    return EXIT_OK


class _Terminated(BaseException):
    pass


def _raise_terminated(signum, frame):
    raise _Terminated()


def _verify_on_platform(platform: Platform, args) -> int:
    """The gateway checks everything against the platform before it launches the run (exit 2 when
    wrong); after that, the run's outcome decides (exit 0 or 1). Interrupted, the run is terminated."""
    name = args.environment
    if name not in ENVIRONMENT_PREFIXES:
        raise CommandError(f"unknown environment '{name}'; expected one of {', '.join(ENVIRONMENT_PREFIXES)}",
                           EXIT_BAD_INPUT)
    _check_arguments(args)
    version = args.expected_version.strip()
    try:
        run_id, max_runtime = platform.start(name, version, float(args.timeout))
    except PlatformError as error:
        raise CommandError(str(error), EXIT_BAD_INPUT) from None
    max_runtime = max_runtime or max_runtime_seconds(float(args.timeout))

    def line(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    line(f"verifying {name} at version {version} (up to {args.timeout:g}s) on the platform: "
         f"{platform.run_url(run_id)}")
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        outcome = platform.follow(run_id, line, max_runtime)
    except PlatformError as error:
        raise CommandError(str(error)) from None
    except (KeyboardInterrupt, _Terminated) as interrupted:
        platform.terminate(run_id)
        line(f"run {run_id} on the platform was terminated")
        if isinstance(interrupted, _Terminated):
            raise CommandError("terminated", EXIT_TERMINATED) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not outcome.ok:
        reason = outcome.failure or f"the run ended {outcome.status.lower()}"
        raise CommandError(f"{reason} (run {run_id})")
    print(f"deployment of {version} to {name} verified (run {run_id})")
    return EXIT_OK

"""The ``ops-platform`` command. It mirrors the old scripts, and every command that changes
something runs as a Dagster run on the instance in ``$DAGSTER_HOME``, so it shows in the UI.

Exit codes: 0 success, 1 the work failed, 2 bad input or configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ops_platform.config import ConfigError, get_environment

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class CommandError(Exception):
    """A one-line error for the operator, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise CommandError(f"{message} (see '{self.prog} --help')", EXIT_BAD_INPUT)


REPO_INSTANCE_CONFIG = Path(__file__).resolve().parents[1] / "dagster.yaml"


def _ensure_dagster_home() -> Path:
    """``$DAGSTER_HOME`` (default ``./.dagster_home``), given the project's dagster.yaml if it has none."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        default = REPO_INSTANCE_CONFIG.read_text() if REPO_INSTANCE_CONFIG.exists() else "telemetry:\n  enabled: false\n"
        config.write_text(default)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def load_definitions():
    from ops_platform.definitions import defs

    return defs()


def run_job(job_name: str, *, partition_key: str | None = None, tags: dict | None = None,
            run_config: dict | None = None):
    """Run a job of the code location in this process, recorded on the ``$DAGSTER_HOME`` instance."""
    import dagster as dg

    _ensure_dagster_home()
    for noisy in ("dagster", "botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    job = load_definitions().resolve_job_def(job_name)
    config = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    config.update(run_config or {})
    with dg.DagsterInstance.get() as instance:
        return job.execute_in_process(
            instance=instance, partition_key=partition_key, raise_on_error=False,
            tags={"ops_platform/launched_by": "cli", **(tags or {})}, run_config=config,
        )


def failure_message(result) -> str:
    """The first step failure of a run, as one line."""
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                return data.user_failure_data.description.splitlines()[0]
            if data.error:
                return (data.error.message or "").strip().splitlines()[-1] if data.error.message else "step failed"
    return "the run failed"


def in_progress_runs(partition_key: str, job_names: tuple[str, ...]) -> list:
    import dagster as dg
    from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES

    _ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(
            statuses=list(IN_PROGRESS_RUN_STATUSES), tags={"dagster/partition": partition_key}))
    return [run for run in runs if run.job_name in job_names]


class _TerminalProgress(logging.Handler):
    """Shows the backup's progress line on a terminal (and nothing when output is piped)."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream
        self.shown = False

    def emit(self, record):
        self.stream.write(f"\r\033[K{record.getMessage()}")
        self.stream.flush()
        self.shown = True

    def finish(self):
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def cmd_backup(args) -> int:
    from ops_platform.defs.backups.assets import BACKUP_KIND_TAG, PROGRESS_LOGGER

    get_environment(args.environment)
    busy = in_progress_runs(args.environment, ("backup_job", "restore_job"))
    if busy:
        raise CommandError(f"a backup or restore of {args.environment} is already running (run {busy[0].run_id})")
    handler = _TerminalProgress(sys.stderr) if sys.stderr.isatty() else None
    if handler:
        PROGRESS_LOGGER.addHandler(handler)
        PROGRESS_LOGGER.setLevel(logging.INFO)
    try:
        result = run_job("backup_job", partition_key=args.environment, tags={BACKUP_KIND_TAG: "manual"})
    finally:
        if handler:
            handler.finish()
            PROGRESS_LOGGER.removeHandler(handler)
    if not result.success:
        raise CommandError(f"{failure_message(result)} (run {result.run_id})")
    materialization = result.asset_materializations_for_node("database_backup")[-1]
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    from ops_platform.lib.formatting import human_bytes, human_duration

    print(f"backup {metadata['backup_id']} verified: {human_bytes(metadata['stored_bytes'])} stored "
          f"({human_bytes(metadata['raw_bytes'])} raw) in {human_duration(metadata['duration_seconds'])}")
    for location in metadata["destinations"]:
        print(f"  {location}")
    for warning in metadata.get("warnings") or []:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"run {result.run_id}")
    return EXIT_OK


def cmd_backups_list(args) -> int:
    from ops_platform.lib.catalog import list_backups
    from ops_platform.lib.formatting import human_bytes

    get_environment(args.environment)
    listing = list_backups(args.environment)
    for warning in listing.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    entries = [entry for entry in listing.entries]
    if args.json:
        print(json.dumps(entries, indent=2))
        return EXIT_OK
    if not entries:
        print(f"no backups for {args.environment}")
        return EXIT_OK
    print(f"{'ID':<30} {'CREATED (UTC)':<21} {'SIZE':>10} {'VERIFIED':<9} LOCATIONS")
    for entry in entries:
        where = ", ".join("s3" if loc.startswith("s3://") else "local" for loc in entry["locations"])
        print(f"{entry['id']:<30} {entry['created_at']:<21} {human_bytes(entry['size_bytes']):>10} "
              f"{'yes' if entry['verified'] else 'NO':<9} {where}")
    return EXIT_OK


def _not_yet(name: str):
    def handler(args) -> int:
        raise CommandError(f"'{name}' is not available in this version yet", EXIT_BAD_INPUT)
    return handler


def _optional_handler(module: str, function: str, name: str):
    """Commands whose implementation lives beside its domain; absent until that domain lands."""
    import importlib

    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError):
        return _not_yet(name)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ops-platform", description="Backups, restores, retention, health and deployment checks.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    backup = commands.add_parser("backup", help="back up an environment's database now")
    backup.add_argument("environment")
    backup.set_defaults(handler=cmd_backup)

    backups = commands.add_parser("backups", help="inspect backups")
    backups_commands = backups.add_subparsers(dest="backups_command", required=True, parser_class=_Parser)
    listing = backups_commands.add_parser("list", help="list committed backups, newest first")
    listing.add_argument("environment")
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(handler=cmd_backups_list)

    restore = commands.add_parser("restore", help="restore a backup")
    restore.add_argument("backup", metavar="latest|BACKUP_ID")
    restore.add_argument("environment")
    restore.add_argument("--target-database")
    restore.add_argument("--yes", action="store_true")
    restore.set_defaults(handler=_optional_handler("ops_platform.cli_restore", "restore_command", "restore"))

    retention = commands.add_parser("retention", help="apply (or plan) the retention policy")
    retention.add_argument("environment")
    retention.add_argument("--dry-run", action="store_true")
    retention.add_argument("--as-of", metavar="ISO8601")
    retention.add_argument("--json", action="store_true")
    retention.set_defaults(handler=_optional_handler("ops_platform.cli_retention", "retention_command", "retention"))

    health = commands.add_parser("health", help="run one health sweep now")
    health.add_argument("environment", nargs="?")
    health.add_argument("--json", action="store_true")
    health.set_defaults(handler=_optional_handler("ops_platform.cli_health", "health_command", "health"))

    verify = commands.add_parser("verify-deployment", help="verify a deployment, rolling back on failure")
    verify.add_argument("environment")
    verify.add_argument("--expected-version", required=True)
    verify.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS")
    verify.set_defaults(handler=_optional_handler("ops_platform.cli_health", "verify_deployment_command",
                                                  "verify-deployment"))
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except CommandError as error:
        print(f"ops-platform: error: {error}", file=sys.stderr)
        return error.code
    except ConfigError as error:
        print(f"ops-platform: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("ops-platform: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the operator gets one line; OPS_PLATFORM_DEBUG=1 shows more
        if os.environ.get("OPS_PLATFORM_DEBUG"):
            raise
        from ops_platform.lib.redact import Redactor

        detail = (str(error).strip().splitlines() or [""])[0]
        print(f"ops-platform: error: {type(error).__name__}: {Redactor.from_environ()(detail)} "
              "(OPS_PLATFORM_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

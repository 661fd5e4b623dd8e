"""``ops-platform restore (latest|BACKUP_ID) ENV [--target-database NAME [--replace-target]] [--yes]``.

Everything the request says is checked before any work starts (exit 2): the backup exists and
belongs to the environment (or ``--allow-other-environment``), a target database does not exist
(or ``--replace-target``), and replacing the environment's own database was confirmed by typing its
name on a terminal (or ``--yes``). Then ``restore_job`` runs as a Dagster run on the instance.
"""

from __future__ import annotations

import sys
from dataclasses import replace

from ops_platform.cli.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, CommandError
from ops_platform.cli.runs import (
    failure_message,
    in_progress_runs,
    progress_on_terminal,
    run_job,
    step_lines,
)
from ops_platform.config import ConfigError, get_environment, load_environments
from ops_platform.lib import settings
from ops_platform.lib.formatting import did_you_mean, human_duration
from ops_platform.lib.restore.errors import RestoreInputError, RestoreStepError
from ops_platform.lib.restore.plan import RestoreRequest, plan_restore
from ops_platform.lib.restore.resolve import LATEST
from ops_platform.lib.restore.swap import recover_interrupted_swaps
from ops_platform.lib.stores import destination_stores, stores_from_environ
from ops_platform.lib.tags import RESTORE_LEFT

BUSY_JOBS = ("backup_job", "restore_job", "retention_job", "restore_drill_job")


def ask_to_replace(what: str, answer: str, yes: bool) -> None:
    """A person at the terminal types ``answer`` (the environment's name, or the name of the
    database replaced) before an existing database is replaced; --yes says it in advance."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise CommandError(f"replacing {what} needs confirmation: run it on a terminal to type {answer}, or add --yes",
                           EXIT_BAD_INPUT)
    print(f"This replaces {what} with the backup (the current one is backed up and kept).", file=sys.stderr)
    print(f"Type {answer} to continue: ", end="", file=sys.stderr, flush=True)
    try:
        typed = input()
    except EOFError:
        typed = ""
    if typed.strip() != answer:
        raise CommandError(f"not confirmed (typed '{typed.strip()[:40]}'); nothing was touched", EXIT_BAD_INPUT)


def restore_command(args) -> int:
    if args.recover:
        return recover_command(args)
    if not args.backup or not args.environment:
        raise CommandError("restore needs a backup (latest or an id) and an environment: "
                           "ops-platform restore latest ENV", EXIT_BAD_INPUT)
    environment = get_environment(args.environment)
    _recover(environment)
    settings.check(settings.RESTORE + settings.RETENTION + settings.S3_ENCRYPTION)
    if args.replace_target and not args.target_database:
        raise CommandError("--replace-target needs --target-database", EXIT_BAD_INPUT)
    request = RestoreRequest(environment.name, args.backup, args.target_database, args.replace_target,
                             args.skip_migrations, args.allow_other_environment, fix_sequences=args.fix_sequences,
                             create_roles=args.create_roles)
    local, s3 = stores_from_environ()
    try:
        destinations = destination_stores(max_attempts=2, read_timeout=20)
    except ConfigError as error:
        print(f"warning: the off-site destinations are not used: {error}", file=sys.stderr)
        destinations = []
    try:
        plan = plan_restore(request, environment, local, s3, other_environments=load_environments(), confirm=False,
                            destinations=destinations)
    except RestoreInputError as error:
        raise CommandError(f"{error}{did_you_mean(args.backup, [LATEST])}", EXIT_BAD_INPUT) from None
    except RestoreStepError as error:
        raise CommandError(str(error)) from None
    if plan.confirmation:
        own = plan.own_database
        ask_to_replace(plan.describe_target(), environment.name if own else plan.target, args.yes)
        request = replace(request, confirm=plan.confirmation)
    busy = in_progress_runs(environment.name, BUSY_JOBS)
    if busy:
        raise CommandError(f"a {busy[0].job_name} run of {environment.name} is in progress (run {busy[0].run_id}); "
                           "nothing was touched")
    config = {"backup": request.backup, "target_database": request.target_database or "",
              "replace_target": request.replace_target, "skip_migrations": request.skip_migrations,
              "allow_other_environment": request.allow_other_environment, "confirm": request.confirm,
              "fix_sequences": request.fix_sequences, "create_roles": request.create_roles}
    with progress_on_terminal(sys.stderr), step_lines(sys.stderr):
        result = run_job("restore_job", partition_key=environment.name,
                         run_config={"ops": {"resolve_restore": {"config": config}}})
    if not result.success:
        try:
            message = failure_message(result)
        except CommandError as interrupted:  # Ctrl-C or SIGTERM: say what was left as it was
            left = result.dagster_run.tags.get(RESTORE_LEFT) or _left_tag(result.run_id)
            raise CommandError(f"{interrupted}; {left}" if left else str(interrupted), interrupted.code) from None
        code = EXIT_BAD_INPUT if _input_error(result) else 1
        raise CommandError(f"{message} (run {result.run_id})", code)
    metadata = _restore_metadata(result)
    print(f"restored {metadata['backup_id']} into {metadata['target_database']}: {metadata['tables_verified']} tables, "
          f"{metadata['rows_verified']} rows verified, in {human_duration(metadata['duration_seconds'])}")
    if metadata.get("fetched_from"):
        print(f"  copy used: {metadata['fetched_from']}")
    if metadata["backup_environment"] != environment.name:
        print(f"  the data comes from {metadata['backup_environment']}'s backup")
    if metadata["safety_backup"]:
        print(f"  safety backup of the previous data: {metadata['safety_backup']}")
    if metadata["kept_database"]:
        print(f"  the previous database is kept as {metadata['kept_database']} (README: \"Going back\")")
    print(f"run {result.run_id}")
    if metadata.get("older_than_newest"):
        print(f"WARNING: {metadata['older_than_newest']}")
    return EXIT_OK


def recover_command(args) -> int:
    """``ops-platform restore --recover ENV``: finish or undo a swap a stopped restore left half
    done, and say which; exit 1 when one needs a person."""
    if not args.backup or args.environment:
        raise CommandError("--recover takes the environment only: ops-platform restore --recover ENV", EXIT_BAD_INPUT)
    environment = get_environment(args.backup)
    recoveries = _recover(environment, busy_is_error=True, stream=sys.stdout)
    if not recoveries:
        print(f"nothing to recover: no swap of {environment.name} was left half done")
    return EXIT_OK if all(recovery.settled for recovery in recoveries) else EXIT_FAILED


def _recover(environment, busy_is_error: bool = False, stream=None) -> list:
    """Recover every interrupted swap of the environment under its lock (lib/restore/swap.py),
    each said on ``stream`` (default: a warning on stderr) and in Slack. When the environment is
    busy, the run holding it recovers them itself."""
    from ops_platform.config import backup_root
    from ops_platform.lib import locks
    from ops_platform.lib.messages.restores import swap_recovered
    from ops_platform.lib.slack import notifier_from_environ

    try:
        with locks.environment_lock(environment.database_url, environment.name, holder="cli recovery"):
            recoveries = recover_interrupted_swaps(environment.database_url, backup_root(), environment.name)
    except locks.LockBusy as error:
        if busy_is_error:
            raise CommandError(f"{error}; it finishes or undoes any interrupted swap itself") from None
        return []
    except (locks.LockUnavailable, RestoreStepError) as error:
        raise CommandError(f"cannot check for interrupted swaps of {environment.name}: {error}") from None
    slack = notifier_from_environ()
    for recovery in recoveries:
        print(recovery.message if stream else f"warning: {recovery.message}", file=stream or sys.stderr)
        if slack.configured and recovery.action != "busy":
            slack.post(swap_recovered(environment.name, recovery.action, recovery.message, recovery.record.run_id))
    return recoveries


def _input_error(result) -> bool:
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            data = event.step_failure_data.user_failure_data
            if data and data.metadata.get("input_error") and data.metadata["input_error"].value:
                return True
    return False


def _restore_metadata(result) -> dict:
    for event in reversed(result.all_events):
        if event.event_type_value in ("ASSET_MATERIALIZATION", "ASSET_OBSERVATION"):
            data = event.event_specific_data
            record = getattr(data, "materialization", None) or getattr(data, "asset_observation", None)
            if record is not None and "rows_verified" in record.metadata:
                return {key: value.value for key, value in record.metadata.items()}
    raise CommandError(f"the restore run {result.run_id} recorded no result")


def _left_tag(run_id: str) -> str | None:
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(run_id)
    return run.tags.get(RESTORE_LEFT) if run else None

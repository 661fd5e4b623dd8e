"""``restore_job``: bring a backup back, one op per step, each with its own duration in the run.

    resolve_restore -> fetch_backup -> take_safety_backup -> restore_database
        -> run_migrations -> verify_restore -> swap_into_place

The steps run in one process (the in-process executor), so the restore lock taken by the first
step (a PostgreSQL advisory lock on the target database, held by ``restore_lock``) lasts until
the run ends, however it ends. A failure before the swap leaves the live database untouched,
drops the scratch copy, posts one Slack alert saying so, and fails the run at that step.
"""


import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field

from ops_platform.config import (
    ConfigError,
    EnvironmentConfig,
    backup_root,
    get_environment,
    load_environments,
)
from ops_platform.defs.alerts.marking import mark_alerted
from ops_platform.defs.databases import DATABASE_KEY
from ops_platform.defs.environments import environment_partitions
from ops_platform.defs.private_folders import private_backup_folder, private_folder
from ops_platform.defs.restores.recovery import settle_interrupted_swaps
from ops_platform.defs.resources import (
    RESTORE_STATE_IO_MANAGER,
    BackupBucketResource,
    BackupStorageResource,
    OpsSlackResource,
    RestoreLockResource,
)
from ops_platform.defs.settings import (
    BackupSettings,
    RestoreSettings,
    RetentionSettings,
)
from ops_platform.lib.backup import is_transient, perform_backup
from ops_platform.lib.formatting import describe, human_bytes, human_duration
from ops_platform.lib.messages import restores as messages
from ops_platform.lib.messages.common import run_url
from ops_platform.lib.progress import STEP_LOGGER, ProgressLine
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore import databases
from ops_platform.lib.locks import LockBusy
from ops_platform.lib.restore.errors import RestoreBusy, RestoreInputError, RestoreStepError
from ops_platform.lib.restore.fetch import fetch_restorable, make_work_dir
from ops_platform.lib.stores import destination_stores
from ops_platform.lib.restore.migrate import run_migrations as run_migrate_command
from ops_platform.lib.restore.pg_restore import restore_in_place, restore_into
from ops_platform.lib.restore.plan import RestoreRequest, RestoreState, confirmation_phrase, plan_restore
from ops_platform.lib.restore.swap import SwapJournal, swap
from ops_platform.lib.restore.verify import verify_restored_database
from ops_platform.lib.roles import create_missing_roles
from ops_platform.lib.tags import KIND, MAX_RETRIES, RESTORE_LEFT

WORK_FOLDER = ".restore"
STATE_OUT = dg.Out(io_manager_key=RESTORE_STATE_IO_MANAGER,
                   description="The restore so far (lib/restore/plan.RestoreState), pickled between steps.")


class RestoreConfig(dg.Config):
    backup: str = Field(default="latest", description="'latest' (the newest verified backup, local or S3) or a "
                                                      "backup id such as production-20261120T070000Z.")
    target_database: str = Field(default="", description="Restore into this database on the same server instead of "
                                                         "the environment's own, which is then left untouched. It is "
                                                         "created; an existing one needs replace_target.")
    replace_target: bool = Field(default=False, description="Replace target_database when it exists (the old one "
                                                            "is kept as <name>__pre_restore_<time>).")
    skip_migrations: bool = Field(default=False, description="Do not run <ENV>_MIGRATE_COMMAND after the restore.")
    allow_other_environment: bool = Field(default=False, description="Allow a backup of another environment "
                                                                     "(e.g. production's into staging).")
    confirm: str = Field(default="", description="Replacing an existing database (the environment's own, or "
                                                 "target_database with replace_target): the phrase the refusal gives, "
                                                 "e.g. 'production-20261120T070000Z over shop #16384' (the backup, "
                                                 "and the database as it is now, so a remembered one never "
                                                 "replays). Not needed for a new target_database.")
    fix_sequences: bool = Field(default=False, description="Move sequences that are behind the column they feed "
                                                           "forward (they are restored as the source had them).")
    create_roles: bool = Field(default=False, description="Create the roles the backup's grants name that this "
                                                          "server lacks (from the roles kept with the backup), "
                                                          "without passwords, before restoring.")


def _work_paths(restore_settings: RestoreSettings, backup_storage: BackupStorageResource) -> tuple[Path, Path]:
    """(the work root, the folder up to which it and its parents are kept private): RESTORE_WORK_DIR
    itself, or ``<backup root>/.restore`` below the backup root."""
    if restore_settings.work_dir:
        return Path(restore_settings.work_dir), Path(restore_settings.work_dir)
    backups = Path(backup_storage.backup_dir or backup_root())
    return backups / WORK_FOLDER, backups


def work_root(restore_settings: RestoreSettings, backup_storage: BackupStorageResource) -> Path:
    return _work_paths(restore_settings, backup_storage)[0]


def private_work_folder(log, restore_settings: RestoreSettings, backup_storage: BackupStorageResource,
                        name: str) -> Path:
    """``<work root>/<name>``, created private; it and the folders above it up to RESTORE_WORK_DIR
    (or the backup root, which holds the default work root) are tightened if open to others."""
    root, boundary = _work_paths(restore_settings, backup_storage)
    return private_folder(log, root / name, boundary, "the restore work folder")


def _announce(context: dg.OpExecutionContext, line: str) -> None:
    context.log.info(line)
    STEP_LOGGER.info(line)


def _warn(context: dg.OpExecutionContext, line: str) -> None:
    """A warning in the run's log and, for a CLI restore, on the terminal."""
    context.log.warning(line)
    STEP_LOGGER.warning(f"warning: {line}")


def _left_as_it_was(state: RestoreState | None, step: str) -> str:
    if state is not None and step == "swap" and state.swap_outcome:
        return state.swap_outcome
    if state is None or step in ("resolve", "fetch", "safety_backup", "scratch") or not state.in_place:
        if state is not None and state.replacing:
            return f"{state.target} was left untouched"
        return "nothing was changed on the server"
    if step == "pg_restore":
        return f"{state.target} is as it was: the single-transaction restore rolled back"
    return (f"{state.target} now holds the backup's data but did not pass {step}; the safety backup "
            f"{state.safety_backup_id or '(none)'} holds what was there before")


def _clean_up(state: RestoreState | None, environment: EnvironmentConfig | None, log) -> None:
    """Drop the scratch copy and the decompressed archive of a restore that stopped."""
    if state is None:
        return
    if state.scratch_created and environment is not None:
        try:
            databases.drop_database(environment.database_url, state.scratch)
        except RestoreStepError as error:
            log.warning(f"could not drop {state.scratch} (the next restore drops it): {error}")
    if state.work_dir:
        shutil.rmtree(state.work_dir, ignore_errors=True)


@contextlib.contextmanager
def restore_step(context: dg.OpExecutionContext, step: str, slack: OpsSlackResource,
                 state: RestoreState | None = None) -> Iterator[None]:
    """Run one step: time it, and turn any failure into one Slack alert, a clean-up and a
    one-line step failure."""
    started = time.monotonic()
    environment = None
    try:
        environment = get_environment(context.partition_key)
        yield
    except BaseException as error:  # noqa: BLE001 - every failure, Ctrl-C included, gets the alert and clean-up
        message = error.description if isinstance(error, dg.Failure) else describe(error)
        if not isinstance(error, Exception):
            message = f"interrupted ({type(error).__name__})"
        message = Redactor.from_environ()(message)
        _clean_up(state, environment, context.log)
        left = _left_as_it_was(state, step)
        refused = isinstance(error, RestoreInputError | RestoreBusy | LockBusy)
        if not refused:  # a refusal is the answer to whoever asked, not an incident for the channel
            slack.notifier(context.log).post(messages.restore_failed(
                context.partition_key, step, message, left, state.backup_id if state else None,
                run_url(context.run_id)))
        mark_alerted(context.instance, context.run_id)
        context.instance.add_run_tags(context.run_id, {RESTORE_LEFT: left})
        if not isinstance(error, Exception):
            raise
        what = "was refused" if refused else f"failed at {step}"
        raise dg.Failure(description=f"restore of {context.partition_key} {what}: {message}; {left}",
                         metadata={"step": step, "input_error": isinstance(error, RestoreInputError)},
                         allow_retries=False) from None
    if state is not None:
        state.seconds[step] = round(time.monotonic() - started, 2)


@dg.op(out=STATE_OUT, description="Check the request, take the restore lock, drop what a killed restore left, and choose the "
                   "backup (latest verified, local first, else S3). Nothing is changed yet.")
def resolve_restore(context: dg.OpExecutionContext, config: RestoreConfig, slack: OpsSlackResource,
                    backup_storage: BackupStorageResource, backup_bucket: BackupBucketResource,
                    restore_settings: RestoreSettings, retention_settings: RetentionSettings,
                    backup_settings: BackupSettings, restore_lock: RestoreLockResource) -> RestoreState:
    state = None
    with restore_step(context, "resolve", slack):
        restore_settings.require_valid(f"restore of {context.partition_key}")
        retention_settings.require_valid(f"restore of {context.partition_key}")
        environment = get_environment(context.partition_key)
        request = RestoreRequest(environment.name, config.backup.strip() or "latest",
                                 config.target_database.strip() or None, config.replace_target,
                                 config.skip_migrations, config.allow_other_environment, config.confirm,
                                 config.fix_sequences, config.create_roles)
        started = time.monotonic()
        live = databases.database_name(environment.database_url)
        lock = restore_lock.acquire(context, environment.database_url, environment.name,
                                    request.target_database or live, backup_settings.lock_wait_seconds)
        settle_interrupted_swaps(context, slack, environment.database_url, backup_storage.local_store().root,
                                 environment.name, held=lock)
        state = plan_restore(request, environment, backup_storage.local_store(), backup_bucket.store(),
                             other_environments=load_environments(), destinations=_destinations(context))
        for name in databases.drop_stale_scratch(environment.database_url, state.target, lock):
            _warn(context, f"dropped {name}, left by a restore that was stopped")
        stale_work = work_root(restore_settings, backup_storage) / state.target
        shutil.rmtree(stale_work, ignore_errors=True)
        state.seconds["resolve"] = round(time.monotonic() - started, 2)
        how = "in place (the role cannot create databases)" if state.in_place else f"via {state.scratch}"
        _announce(context, f"resolve: {state.backup_id} -> {state.describe_target()}, {how}")
        for warning in state.warnings:
            _warn(context, warning)
        slack.notifier(context.log).post(messages.restore_started(state, run_url(context.run_id)))
    return state


@dg.op(out=STATE_OUT, description="Stream the backup (local file, or S3 through the transfer manager), check its sha256 and "
                   "size against the manifest, and decompress it into a private file pg_restore can seek.")
def fetch_backup(context: dg.OpExecutionContext, state: RestoreState, slack: OpsSlackResource,
                 backup_storage: BackupStorageResource, backup_bucket: BackupBucketResource,
                 restore_settings: RestoreSettings) -> RestoreState:
    with restore_step(context, "fetch", slack, state):
        url = get_environment(state.environment).database_url
        parent = private_work_folder(context.log, restore_settings, backup_storage, state.target)
        state.work_dir = str(make_work_dir(parent))
        show = ProgressLine(context.log.info)

        def progress(done: int, total: int) -> None:
            show(f"fetch: {human_bytes(done)} of {human_bytes(total)}", done=done >= total)

        s3 = _bucket_or_none(backup_bucket, context) if any(c.source == "s3" for c in state.candidates) else None
        off_site = (_destinations(context) if any(c.source not in ("local", "s3") for c in state.candidates)
                    else [])
        fetched = fetch_restorable(state.resolution, Path(state.work_dir), s3, progress=progress,
                                   on_fallback=lambda note: _warn(context, note),
                                   s3_stall_seconds=restore_settings.s3_stall_seconds, destinations=off_site)
        state.dump_path, state.manifest = str(fetched.path), fetched.candidate.manifest
        state.backup_id, state.fetched_from = fetched.candidate.backup_id, fetched.candidate.location
        if fetched.candidate.source not in ("local", "s3"):
            state.warnings.append(f"restored from the off-site copy in destination {fetched.candidate.source} "
                                  f"({fetched.candidate.location}): no local or S3 copy of {state.backup_id} "
                                  "was usable")
            _warn(context, state.warnings[-1])
        state.warnings += fetched.warnings
        state.older_than_newest = fetched.older_than_newest
        if state.older_than_newest and state.replacing:
            fetched.remove()
            older = confirmation_phrase(state.backup_id, state.target, databases.database_oid(url, state.target))
            newest = fetched.passed_over[0]
            raise RestoreStepError("fetch", f"the newest backup {newest.backup_id} {newest.reason}, and replacing "
                                            f"{state.describe_target()} with the older {state.backup_id} is a decision "
                                            f"of its own: restore it by its id (ops-platform restore "
                                            f"{state.backup_id} {state.environment}; in the launchpad backup: "
                                            f"{state.backup_id} with confirm: '{older}')")
        _announce(context, f"fetch: {state.backup_id} from {state.fetched_from}, sha256 matches, "
                           f"{human_bytes(fetched.raw_bytes)} raw in {human_duration(fetched.seconds)}")
        if state.older_than_newest:
            _warn(context, state.older_than_newest)
    return state


@dg.op(out=STATE_OUT, description="Back up the database about to be replaced, through the backup pipeline (kind pre-restore), "
                   "to every place a backup goes (local, S3, the destinations); the restore stops unless it passes "
                   "its blocking checks. Skipped when nothing is replaced.")
def take_safety_backup(context: dg.OpExecutionContext, state: RestoreState, slack: OpsSlackResource,
                       backup_storage: BackupStorageResource, backup_bucket: BackupBucketResource) -> RestoreState:
    with restore_step(context, "safety_backup", slack, state):
        if not state.replacing:
            _announce(context, f"safety backup: skipped, {state.target} does not exist yet")
        elif not state.own_database:
            _announce(context, f"safety backup: skipped, the replaced {state.target} is kept as a database")
        else:
            environment = get_environment(state.environment)
            private_backup_folder(context.log, backup_storage.local_store(), environment.name)
            outcome = perform_backup(environment, backup_storage.local_store(), _bucket_or_none(backup_bucket, context),
                                     compression=backup_storage.compression_settings(), kind="pre-restore",
                                     run_id=context.run_id, redactor=Redactor.from_environ(),
                                     destinations=_destinations(context))
            for copy in outcome.manifest.copies:
                if not copy.get("verified"):
                    _warn(context, f"safety backup: no verified copy in {copy['name']}: {copy.get('detail')}")
            failed = [check for check in outcome.checks if check.blocking and not check.passed]
            if failed:
                raise RestoreStepError("safety_backup", "the safety backup failed its checks: "
                                                + "; ".join(f"{c.name}: {c.description}" for c in failed))
            state.safety_backup_id = outcome.manifest.id
            context.log_event(dg.AssetMaterialization(
                asset_key="database_backup", partition=state.environment,
                description=f"pre-restore safety backup before restoring {state.backup_id}",
                metadata={"backup_id": outcome.manifest.id, "kind": "pre-restore", "verified": True,
                          "stored_bytes": dg.MetadataValue.int(outcome.manifest.stored_bytes),
                          "destinations": dg.MetadataValue.json(outcome.manifest.locations)}))
            _announce(context, f"safety backup: {outcome.manifest.id} verified, "
                               f"{human_bytes(outcome.manifest.stored_bytes)}")
    return state


def _destinations(context) -> list:
    """The off-site copies of ops_platform.yaml, built in this op (clients never cross ops); a bad
    file leaves them out, with a warning."""
    try:
        return destination_stores()
    except ConfigError as error:
        _warn(context, f"the off-site destinations are not used: {error}")
        return []


def _bucket_or_none(backup_bucket: BackupBucketResource, context):
    try:
        return backup_bucket.store()
    except ConfigError as error:
        _warn(context, f"the bucket is not usable, only local copies are: {error}")
        return None


@dg.op(out=STATE_OUT, description="pg_restore -j into a new scratch database on the same server while the live database keeps "
                   "serving (or, for a role without CREATEDB, --clean --single-transaction into the target). A "
                   "server that restarts meanwhile is retried like a backup is (BACKUP_RETRIES), from a new copy.")
def restore_database(context: dg.OpExecutionContext, state: RestoreState, slack: OpsSlackResource,
                     restore_settings: RestoreSettings, backup_settings: BackupSettings,
                     restore_lock: RestoreLockResource) -> RestoreState:
    with restore_step(context, "pg_restore", slack, state):
        url = get_environment(state.environment).database_url
        _create_roles(context, url, state)
        for attempt in range(1, backup_settings.retries + 2):
            try:
                run = _load(context, url, state, restore_settings, restore_lock)
                break
            except RestoreStepError as error:
                if attempt > backup_settings.retries or not is_transient("pg_restore", str(error)):
                    raise
                delay = backup_settings.retry_delay_seconds * 2 ** (attempt - 1)
                if state.scratch_created:
                    databases.drop_database(url, state.scratch)
                    state.scratch_created = False
                _warn(context, f"pg_restore attempt {attempt} failed, a transient failure ({error}); the copy was "
                               f"dropped, retrying in {delay}s")
                time.sleep(delay)
        if not run.acl_restored and state.manifest.roles_sql and not state.create_roles:
            run.warnings.append("the backup keeps the cluster's roles: restore with --create-roles (create_roles: "
                                "true) to create the missing ones first and keep the grants")
        if state.manifest.database_properties is not None:
            with databases.connect(url) as connection:
                run.warnings += databases.apply_database_properties(connection, state.building,
                                                                    state.manifest.database_properties)
        state.warnings += run.warnings
        for warning in run.warnings:
            _warn(context, warning)
        _announce(context, f"pg_restore: {run.items} archive items into {run.database} with {run.jobs} job(s) in "
                           f"{human_duration(run.seconds)}")
    return state


def _load(context: dg.OpExecutionContext, url: str, state: RestoreState, restore_settings: RestoreSettings,
          restore_lock: RestoreLockResource):
    """One pg_restore: into a new scratch copy, or in place."""
    timeout = restore_settings.timeout_minutes * 60.0
    show = ProgressLine(context.log.info)

    def progress(done: int, total: int) -> None:
        show(f"pg_restore: {done} of {total} archive items", done=done >= total)

    if state.in_place:
        return restore_in_place(url, state.target, Path(state.dump_path), timeout=timeout,
                                lock_timeout=restore_settings.lock_timeout_seconds, progress=progress)
    restore_lock.held.require(state.target)
    databases.create_database(url, state.scratch, like=state.target if state.replacing else None)
    state.scratch_created = True
    return restore_into(url, state.scratch, Path(state.dump_path), jobs=restore_settings.parallel_jobs(),
                        timeout=timeout, progress=progress)


def _create_roles(context: dg.OpExecutionContext, url: str, state: RestoreState) -> None:
    """With create_roles, the roles the server lacks, from those kept with the backup."""
    if not state.create_roles:
        return
    if not state.manifest.roles_sql:
        _warn(context, f"create_roles: backup {state.backup_id} keeps no roles (made before roles were kept, or "
                       "they could not be read); none were created")
        return
    created, warnings = create_missing_roles(url, state.manifest.roles_sql)
    for warning in warnings:
        _warn(context, warning)
    state.warnings += warnings
    _announce(context, f"roles: created {', '.join(created)} (no passwords: set them before anything logs in)"
              if created else "roles: every role of the backup exists here")


@dg.op(out=STATE_OUT, description="Run <ENV>_MIGRATE_COMMAND (e.g. npx prisma migrate deploy) against the restored copy, with "
                   "DATABASE_URL pointed there, under a timeout; its redacted output goes to the run log.")
def run_migrations(context: dg.OpExecutionContext, state: RestoreState, slack: OpsSlackResource,
                   restore_settings: RestoreSettings) -> RestoreState:
    with restore_step(context, "migrate", slack, state):
        environment = get_environment(state.environment)
        if state.skip_migrations or not environment.migrate_command:
            why = "skip_migrations was set" if state.skip_migrations else "no migrate command is configured"
            _announce(context, f"migrate: skipped, {why}")
        else:
            result = run_migrate_command(environment.migrate_command, environment.database_url, state.building,
                                         timeout=restore_settings.migrate_timeout_seconds)
            context.log.info(f"migrate command output:\n{result.output}" if result.output else "migrate: no output")
            _announce(context, f"migrate: {result.summary}")
    return state


@dg.op(out=STATE_OUT, description="Check the restored copy against the manifest before anything is swapped: every table exists, "
                   "row counts are equal, no sequence is behind its column, and the operator's SQL checks hold.")
def verify_restore(context: dg.OpExecutionContext, state: RestoreState, slack: OpsSlackResource,
                   restore_settings: RestoreSettings) -> RestoreState:
    with restore_step(context, "verify", slack, state):
        environment = get_environment(state.environment)
        report = verify_restored_database(environment.database_url, state.building, state.manifest,
                                          checks_file=environment.restore_checks_file,
                                          fix_sequences=state.fix_sequences, jobs=restore_settings.parallel_jobs())
        report.raise_for_failure()
        state.rows_verified, state.tables_verified = report.rows_verified, report.tables_checked
        for note in report.sequence_notes():
            _warn(context, note)
            state.warnings.append(note)
        _announce(context, f"verify: {report.summary()}")
    return state


@dg.op(description="Put the verified copy in place: end the live database's sessions, rename it to "
                   "<db>__pre_restore_<time> (kept for BACKUP_PRE_RESTORE_DAYS), rename the copy to <db>. "
                   "A failed rename puts the old name back. Then record the restore and report it.")
def swap_into_place(context: dg.OpExecutionContext, state: RestoreState, slack: OpsSlackResource,
                    backup_storage: BackupStorageResource, restore_lock: RestoreLockResource) -> None:
    with restore_step(context, "swap", slack, state):
        url = get_environment(state.environment).database_url
        if state.in_place:
            _announce(context, f"swap: nothing to swap, {state.target} was restored in place")
        elif state.replacing:
            journal = SwapJournal(backup_storage.local_store().root, state.environment, state.target)
            try:
                result = swap(url, state.target, state.scratch, state.stamp, journal=journal,
                              environment=state.environment, backup_id=state.backup_id, run_id=context.run_id,
                              lock=restore_lock.held, copy_properties=state.manifest.database_properties is None)
            finally:
                state.swap_outcome = journal.outcome
            state.scratch_created, state.kept_database = False, result.kept
            state.warnings += result.warnings
            _announce(context, f"swap: {state.target} is the restored copy; the previous one is kept as {result.kept} "
                               f"({result.terminated} session(s) ended)")
        else:
            databases.promote_scratch(url, state.scratch, state.target, lock=restore_lock.held)
            state.scratch_created = False
            _announce(context, f"swap: {state.target} created from the restored copy")
    if state.work_dir:
        shutil.rmtree(state.work_dir, ignore_errors=True)
    metadata = {
        "backup_id": state.backup_id, "backup_environment": state.source_environment,
        "target_database": state.target, "fetched_from": state.fetched_from or "",
        "rows_verified": dg.MetadataValue.int(state.rows_verified),
        "tables_verified": dg.MetadataValue.int(state.tables_verified),
        "duration_seconds": dg.MetadataValue.float(round(float(sum(state.seconds.values())), 2)),
        "step_seconds": dg.MetadataValue.json(state.seconds),
        "safety_backup": state.safety_backup_id or "", "kept_database": state.kept_database or "",
        "in_place": state.in_place,
        "older_than_newest": state.older_than_newest or "",
    }
    if state.own_database:
        context.log_event(dg.AssetMaterialization(asset_key=DATABASE_KEY, partition=state.environment,
                                                  description=f"restored from {state.backup_id}", metadata=metadata))
    else:
        context.log_event(dg.AssetObservation(asset_key=DATABASE_KEY, partition=state.environment,
                                              description=f"{state.backup_id} restored into {state.target}",
                                              metadata=metadata))
    slack.notifier(context.log).post(messages.restore_succeeded(state, run_url(context.run_id)))


@dg.job(
    name="restore_job",
    partitions_def=environment_partitions,
    executor_def=dg.in_process_executor,
    tags={MAX_RETRIES: "0", KIND: "restore"},
    description="Restore a backup into the environment's database (the partition), or into another database on the "
                "same server: resolve and fetch the backup, take a safety backup of what is replaced, pg_restore "
                "into a scratch copy, run the migrate command, verify against the manifest, then swap. Replacing the "
                "environment's own database needs confirm: <environment name> in the config.",
)
def restore_job():
    swap_into_place(verify_restore(run_migrations(restore_database(take_safety_backup(fetch_backup(
        resolve_restore()))))))

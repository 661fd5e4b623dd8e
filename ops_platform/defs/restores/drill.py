"""``restore_drill``: every Sunday, each scheduled environment's newest verified backup is restored
into a throwaway database, verified against its manifest and dropped, and its other copies (S3,
the off-site destinations) are read back in full, so a backup nobody can bring back, from any
place it is kept, is found on a quiet morning rather than on the night it is needed."""

import dagster as dg

from ops_platform.config import ConfigError, get_environment
from ops_platform.defs.alerts.marking import mark_alerted
from ops_platform.defs.backups.assets import DUMP_POOL
from ops_platform.defs.backups.schedules import BACKUP_CRONS
from ops_platform.defs.environments import environment_partitions
from ops_platform.defs.private_folders import private_backup_folder
from ops_platform.defs.resources import (
    BackupBucketResource,
    BackupStorageResource,
    OpsSlackResource,
)
from ops_platform.defs.restores.jobs import private_work_folder, work_root
from ops_platform.defs.run_guards import environment_guard
from ops_platform.defs.scheduling import environment_schedules
from ops_platform.defs.settings import BackupSettings, RestoreSettings
from ops_platform.lib.locks import LockBusy, LockUnavailable
from ops_platform.lib.messages import restores as messages
from ops_platform.lib.messages.common import run_url
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore.drill import INTACT, drill_database, record_drill, run_drill
from ops_platform.lib.stores import destination_stores
from ops_platform.lib.tags import MAX_RETRIES

DRILL_CHECKS = [
    dg.AssetCheckSpec("latest_backup_restores", asset="restore_drill",
                      description="The newest verified backup is fetched (sha256 checked) and restores into a "
                                  "throwaway database with pg_restore --exit-on-error."),
    dg.AssetCheckSpec("row_counts_match", asset="restore_drill",
                      description="Every table of the restored copy exists with the row count the source had at "
                                  "dump time (the manifest's)."),
    dg.AssetCheckSpec("sequences_match", asset="restore_drill",
                      description="Every sequence of the restored copy has the value the source had at dump time. A "
                                  "sequence behind its column, as in the source, is a note, not a failure."),
    dg.AssetCheckSpec("sql_checks_pass", asset="restore_drill",
                      description="The operator's SQL checks (<ENV>_RESTORE_CHECKS_FILE) each return true on the "
                                  "restored copy; passes when none are configured."),
    dg.AssetCheckSpec("every_copy_intact", asset="restore_drill",
                      description="Every other copy of the restored backup (S3, each off-site destination) is read "
                                  "back in full: sizes and sha256 match the manifest and it decompresses, so it "
                                  "restores as the drilled copy did."),
]
DRILL_CRONS = {environment: "0 4 * * 0" for environment in BACKUP_CRONS}


@dg.asset(
    partitions_def=environment_partitions,
    deps=["database_backup"],
    group_name="restores",
    kinds={"postgres"},
    check_specs=DRILL_CHECKS,
    pool=DUMP_POOL,
)
def restore_drill(context: dg.AssetExecutionContext, slack: OpsSlackResource, backup_storage: BackupStorageResource,
                  backup_bucket: BackupBucketResource, restore_settings: RestoreSettings,
                  backup_settings: BackupSettings):
    """The newest verified backup of the environment, restored into a throwaway database, verified
    against its manifest (tables, row counts, sequences, the operator's SQL checks) and dropped.
    A failed drill fails the run and alerts; its result is also written into the backup's manifest."""
    environment_name = context.partition_key
    try:
        restore_settings.require_valid(f"restore drill of {environment_name}")
        environment = get_environment(environment_name)
        local, s3 = backup_storage.local_store(), backup_bucket.store()
    except (ConfigError, dg.Failure) as error:
        message = error.description if isinstance(error, dg.Failure) else str(error)
        slack.notifier(context.log).post(messages.drill_failed(environment_name, message, None,
                                                               run_url(context.run.run_id)))
        mark_alerted(context.instance, context.run.run_id)
        raise dg.Failure(description=f"restore drill of {environment_name}: {message}", allow_retries=False) from None
    private_backup_folder(context.log, local, environment_name)
    private_work_folder(context.log, restore_settings, backup_storage, drill_database(environment))
    try:
        destinations = destination_stores(read_timeout=backup_bucket.read_timeout_seconds)
    except ConfigError as error:
        destinations = []
        context.log.warning(f"the off-site copies are not drilled: {error}")
    try:
        with environment_guard(context, environment.database_url, environment_name, backup_settings.lock_wait_seconds):
            outcome = run_drill(environment, local, s3, work_root(restore_settings, backup_storage),
                                jobs=restore_settings.parallel_jobs(), timeout=restore_settings.timeout_minutes * 60.0,
                                redactor=Redactor.from_environ(), destinations=destinations)
    except (LockBusy, LockUnavailable) as error:
        slack.notifier(context.log).post(messages.drill_failed(environment_name, str(error), None,
                                                               run_url(context.run.run_id)))
        mark_alerted(context.instance, context.run.run_id)
        raise dg.Failure(description=f"restore drill of {environment_name}: {error}", allow_retries=False) from None
    for warning in outcome.warnings:
        context.log.warning(warning)
    if outcome.manifest is not None:
        for warning in record_drill(outcome.manifest, outcome.record(context.run.run_id), local, s3):
            context.log.warning(warning)
    report = outcome.report
    yield dg.AssetCheckResult(
        check_name="latest_backup_restores", passed=outcome.restored,
        description=(f"{outcome.backup_id} restored in {outcome.seconds.get('pg_restore', 0):.1f}s" if outcome.restored
                     else f"failed at {outcome.failed_step}: {outcome.error}"),
        metadata={"backup_id": outcome.backup_id or "", "seconds": dg.MetadataValue.float(outcome.total_seconds)})
    not_reached = "not reached: the backup did not restore"
    yield dg.AssetCheckResult(
        check_name="row_counts_match", passed=bool(report and report.rows_ok),
        description=report.rows_summary() if report else not_reached,
        metadata={"tables": dg.MetadataValue.int(report.tables_checked if report else 0),
                  "rows": dg.MetadataValue.int(report.rows_verified if report else 0)})
    yield dg.AssetCheckResult(
        check_name="sequences_match", passed=bool(report and report.sequences_ok),
        description=report.sequences_summary() if report else not_reached,
        metadata={"compared": dg.MetadataValue.int(report.sequences_compared if report else 0),
                  "behind_their_column": dg.MetadataValue.int(len(report.sequences_behind) if report else 0)})
    yield dg.AssetCheckResult(
        check_name="sql_checks_pass", passed=bool(report and not report.failed_checks),
        description=report.checks_summary() if report else not_reached,
        metadata={"checks": dg.MetadataValue.int(len(report.checks) if report else 0)})
    yield dg.AssetCheckResult(
        check_name="every_copy_intact", passed=bool(outcome.copies) and not outcome.bad_copies,
        description=("; ".join(outcome.bad_copies.values()) if outcome.bad_copies
                     else f"intact: {', '.join(outcome.copies)}" if outcome.copies else not_reached),
        metadata={"copies": dg.MetadataValue.json(outcome.copies),
                  "intact": dg.MetadataValue.int(sum(result == INTACT for result in outcome.copies.values()))})
    for note in report.sequence_notes() if report else []:
        context.log.warning(note)
    if not outcome.passed:
        slack.notifier(context.log).post(messages.drill_failed(environment_name, outcome.error or "failed",
                                                               outcome.backup_id, run_url(context.run.run_id),
                                                               outcome.failed_step))
        mark_alerted(context.instance, context.run.run_id)
        raise dg.Failure(description=f"restore drill of {environment_name} failed at {outcome.failed_step}: "
                                     f"{outcome.error}", allow_retries=False)
    context.log.info(f"drill of {outcome.backup_id} passed: {report.summary()} in {outcome.total_seconds:.1f}s")
    yield dg.MaterializeResult(metadata={
        "backup_id": outcome.backup_id,
        "duration_seconds": dg.MetadataValue.float(outcome.total_seconds),
        "step_seconds": dg.MetadataValue.json(outcome.seconds),
        "tables_verified": dg.MetadataValue.int(report.tables_checked),
        "rows_verified": dg.MetadataValue.int(report.rows_verified),
        "sequences_checked": dg.MetadataValue.int(report.sequences_checked),
        "copies_intact": dg.MetadataValue.json(sorted(outcome.copies)),
        "backup_created_at": outcome.manifest.created_at,
    })


restore_drill_job = dg.define_asset_job(
    "restore_drill_job",
    selection=dg.AssetSelection.assets(restore_drill),
    description="Restore the environment's newest verified backup into a throwaway database, verify it and drop it.",
    tags={MAX_RETRIES: "0"},
)

drill_schedules = environment_schedules("restore_drill", DRILL_CRONS, restore_drill_job)

"""The ``backup_retention`` asset: the retention policy applied to one environment's backups."""


import os

import dagster as dg

from ops_platform.config import ConfigError, get_environment
from ops_platform.defs.environments import environment_partitions
from ops_platform.defs.private_folders import private_backup_folder
from ops_platform.defs.resources import (
    BackupBucketResource,
    BackupStorageResource,
    OpsSlackResource,
)
from ops_platform.defs.run_guards import environment_guard
from ops_platform.defs.settings import BackupSettings, RetentionSettings
from ops_platform.lib.artifacts import utc_iso
from ops_platform.lib.formatting import human_bytes
from ops_platform.lib.locks import LockBusy
from ops_platform.lib.messages.common import run_url
from ops_platform.lib.messages.retention import retention_summary
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore import databases
from ops_platform.lib.restore.drill import DRILL_SUFFIX
from ops_platform.lib.restore.errors import RestoreBusy, RestoreStepError
from ops_platform.lib.retention import alerts
from ops_platform.lib.retention.policy import RetentionPlan, resolve_as_of
from ops_platform.lib.retention.stores import ApplyResult, apply_plan, build_destination_plan, build_plan
from ops_platform.lib.stores import destination_stores
from ops_platform.lib.settings import (
    BACKUP,
    RETENTION_RUNTIME_SECONDS,
    values_or_defaults,
)
from ops_platform.lib.tags import MAX_RUNTIME

RETENTION_S3_TIMEOUT_SECONDS = 10.0


class RetentionConfig(dg.Config):
    as_of: str | None = None
    """Apply the policy as of this ISO-8601 time instead of now (never later than now)."""


NONE_KEPT = "none: no verified backup is kept"


def _metadata(plan: RetentionPlan, applied: ApplyResult, warnings: list[str]) -> dict:
    summary = plan.summary()
    return {
        "kept": dg.MetadataValue.int(summary["kept"]),
        "deleted": dg.MetadataValue.int(summary["deleted"]),
        "verified_kept": dg.MetadataValue.int(summary["verified_kept"]),
        "freed": human_bytes(applied.bytes_freed),
        "bytes_freed": dg.MetadataValue.int(applied.bytes_freed),
        "oldest_kept": summary["oldest_kept"] or NONE_KEPT,
        "newest_kept": summary["newest_kept"] or NONE_KEPT,
        "as_of": utc_iso(plan.as_of),
        "policy": plan.policy.describe(),
        "deleted_backups": dg.MetadataValue.json(
            [{"id": item.id, "status": item.status, "reason": item.reason} for item in plan.deleted]),
        "corrupt": dg.MetadataValue.int(summary["corrupt"]),
        "corrupt_backups": dg.MetadataValue.json(
            [{"id": c["id"], "location": c["location"], "detail": c["detail"]} for c in plan.corrupt_copies()]),
        "rechecked": dg.MetadataValue.json(plan.rechecks),
        "aborted_uploads": dg.MetadataValue.int(len(applied.aborted_uploads)),
        "dropped_databases": dg.MetadataValue.json(applied.dropped_databases),
        "dropped_leftovers": dg.MetadataValue.json(applied.dropped_leftovers),
        "warnings": dg.MetadataValue.json(warnings),
    }


# What follows a verified backup, however it was launched: a new materialization of database_backup
# (only a backup that passed its blocking checks is one) requests retention for that environment,
# unless the run that made it also targeted retention (backup_job, the CLI: eager ignores such
# updates) or a run of either is in progress. retention_automation_sensor evaluates it.
RETENTION_AFTER_BACKUP = dg.AutomationCondition.eager()


@dg.asset(
    partitions_def=environment_partitions,
    deps=["database_backup"],
    group_name="retention",
    kinds={"postgres", "s3"} if os.environ.get("AWS_S3_BUCKET", "").strip() else {"postgres"},
    automation_condition=RETENTION_AFTER_BACKUP,
)
def backup_retention(context: dg.AssetExecutionContext, config: RetentionConfig, slack: OpsSlackResource,
                     backup_storage: BackupStorageResource, backup_bucket: BackupBucketResource,
                     retention_settings: RetentionSettings, backup_settings: BackupSettings) -> dg.MaterializeResult:
    """Backups this environment keeps after the retention policy ran: everything younger than
    BACKUP_RETENTION_DAYS, always the newest BACKUP_KEEP_MIN verified ones whatever their age, and
    optional daily/weekly/monthly tiers. Before a verified backup is deleted, the backups kept in
    its place are re-checked against their manifests; a corrupt one is kept for a person, never
    counted, and alerted once. Unverified and incomplete backups older than a day are
    deleted, from the local folder and S3 alike, and stale S3 multipart uploads are aborted.
    It runs right after a backup whose blocking checks passed, however the backup was launched
    (in backup_job, or by retention_automation_sensor after a backup launched on its own), and
    daily on its own schedule."""
    environment = context.partition_key
    try:
        database_url = get_environment(environment).database_url
        if retention_settings.invalid_settings:
            raise ConfigError(retention_settings.invalid_settings[0])
        policy = retention_settings.policy(environment)
        as_of = resolve_as_of(config.as_of)
    except ConfigError as error:
        raise dg.Failure(description=f"retention for {environment}: {error}", allow_retries=False) from None
    local = backup_storage.local_store()
    if local.env_dir(environment).is_dir():
        private_backup_folder(context.log, local, environment)
    try:
        # Short waits: a hung S3 leaves its side for the next run and must not hold up the local one.
        s3 = backup_bucket.store(max_attempts=1, read_timeout_seconds=RETENTION_S3_TIMEOUT_SECONDS)
    except ConfigError as error:
        s3 = None
        context.log.warning(f"S3 is left as is, its configuration is wrong: {error}; only the local folder is cleaned")
    try:
        destinations = destination_stores(max_attempts=1, read_timeout=RETENTION_S3_TIMEOUT_SECONDS)
    except ConfigError as error:
        destinations = []
        context.log.warning(f"the off-site destinations are left as they are: {error}")
    try:
        with environment_guard(context, database_url, environment, backup_settings.lock_wait_seconds, required=False):
            return apply_retention(context, slack, environment, database_url, local, s3, policy, as_of,
                                   destinations)
    except LockBusy as error:
        raise dg.Failure(description=f"retention for {environment}: {error}", allow_retries=False) from None


def _apply_destinations(context, environment: str, destinations, policy, as_of, redactor) -> tuple[dict, list[str]]:
    """Each destination planned and cleaned on its own (its own floor: the last good backup of
    every place is kept). Returns what each kept and deleted, and the warnings."""
    results, warnings = {}, []
    for store in destinations:
        plan = build_destination_plan(environment, store, policy, as_of)
        for item in plan.deleted:
            context.log.info(f"deleting {item.id} from destination {store.name} ({item.status}): {item.reason}")
        warnings += [redactor(f"destination {store.name}: {warning}")
                     for warning in plan.warnings + plan.corrupt_warnings()]
        try:
            applied = apply_plan(plan, None, store)
        except Exception as error:  # noqa: BLE001 - the next run tries again; the other places stand
            warnings.append(redactor(f"destination {store.name}: deleting failed: {type(error).__name__}: {error}"))
            continue
        results[store.name] = {"kept": plan.summary()["kept"], "deleted": [item.id for item in plan.deleted],
                               "aborted_uploads": len(applied.aborted_uploads)}
    return results, warnings


def apply_retention(context, slack, environment, database_url, local, s3, policy, as_of,
                    destinations=(), post_routine: bool = True) -> dg.MaterializeResult:
    """The retention policy applied to one target's backups in every place (the caller holds or
    tried its environment lock): backup_retention, and each target's step of fleet_backup_job.
    ``post_routine=False`` (a fleet run, which sums up the night in one message): Slack hears only
    of a newly corrupt backup, not of each routine deletion."""
    plan = build_plan(environment, local, s3, policy, as_of)
    for item in plan.deleted:
        context.log.info(f"deleting {item.id} ({item.status}): {item.reason}")
    redactor = Redactor.from_environ()
    warnings = [redactor(warning) for warning in plan.warnings + plan.corrupt_warnings()]
    for warning in warnings:
        context.log.warning(warning)
    applied = apply_plan(plan, local, s3)
    off_site, off_site_warnings = _apply_destinations(context, environment, destinations, policy, as_of, redactor)
    for warning in off_site_warnings:
        context.log.warning(warning)
    warnings += off_site_warnings
    try:
        applied.dropped_databases = databases.drop_expired_pre_restore(
            database_url, databases.database_name(database_url), policy.pre_restore_days, as_of)
    except RestoreStepError as error:
        warnings.append(f"databases kept by earlier restores were not checked: {error}")
        context.log.warning(warnings[-1])
    for name in applied.dropped_databases:
        context.log.info(f"dropped {name}, kept by a restore more than {policy.pre_restore_days} days ago")
    applied.dropped_leftovers, problems = drop_stopped_restores_scratch(database_url)
    for name in applied.dropped_leftovers:
        context.log.warning(f"dropped {name}, a scratch database left by a restore or drill that was stopped")
    for problem in problems:
        warnings.append(problem)
        context.log.warning(problem)
    summary = plan.summary()
    context.log.info(f"{environment}: kept {summary['kept']}, deleted {summary['deleted']}, "
                     f"aborted {len(applied.aborted_uploads)} stale upload(s)")
    state_file = alerts.state_path(local, environment)
    alerted = alerts.load(state_file)
    corrupt, state = alerts.new_corruption(plan, alerted)
    routine = plan.deleted or applied.aborted_uploads or applied.dropped_databases or applied.dropped_leftovers
    if corrupt or (routine and post_routine):
        report = slack.notifier(context.log).post(retention_summary(plan, applied, run_url(context.run.run_id),
                                                                    corrupt))
        if corrupt and report.errors and not report.delivered:
            state = {key: detail for key, detail in state.items() if key in alerted}  # post them next time
    if state != alerted:
        alerts.save(state_file, state)
    metadata = _metadata(plan, applied, warnings)
    if destinations:
        metadata["destinations"] = dg.MetadataValue.json(off_site)
    return dg.MaterializeResult(metadata=metadata)


def drop_stopped_restores_scratch(database_url: str) -> tuple[list[str], list[str]]:
    """(scratch databases of the environment's database and of its drills that a killed restore
    or drill left, now dropped; problems). Each under its restore lock, so one in use by a running
    restore is never touched."""
    live = databases.database_name(database_url)
    dropped, problems = [], []
    for base in (live, live + DRILL_SUFFIX):
        try:
            with databases.restore_lock(database_url, base, holder="retention") as lock:
                dropped += databases.drop_stale_scratch(database_url, base, lock)
        except RestoreBusy:
            continue  # a restore or drill is running: its scratch database is in use
        except RestoreStepError as error:
            problems.append(f"scratch databases left by stopped restores were not checked: {error}")
    return dropped, problems


retention_job = dg.define_asset_job(
    "retention_job",
    selection=dg.AssetSelection.assets(backup_retention),
    description="Apply the backup retention policy to one environment (the partition), locally and in S3.",
    tags={MAX_RUNTIME: str(RETENTION_RUNTIME_SECONDS + values_or_defaults(BACKUP)["lock_wait_seconds"])},
)

"""The ``database_backup`` asset: a verified, compressed custom-format dump per environment."""


import os

import dagster as dg

from ops_platform.config import ConfigError, get_environment
from ops_platform.defs.alerts.marking import mark_alerted
from ops_platform.defs.databases import database_dep
from ops_platform.defs.environments import environment_partitions
from ops_platform.defs.private_folders import private_backup_folder
from ops_platform.defs.restores.recovery import settle_interrupted_swaps
from ops_platform.defs.resources import (
    BackupBucketResource,
    BackupStorageResource,
    OpsSlackResource,
)
from ops_platform.defs.run_guards import environment_guard
from ops_platform.defs.settings import BackupSettings, RetentionSettings
from ops_platform.lib import settings
from ops_platform.lib.backup import (
    BackupOutcome,
    CheckOutcome,
    clear_leftovers,
    perform_backup,
)
from ops_platform.lib.dump import BackupStepError, Progress
from ops_platform.lib.formatting import human_bytes
from ops_platform.lib.locks import LockBusy, LockUnavailable
from ops_platform.lib.messages import backups as messages
from ops_platform.lib.messages.common import run_url
from ops_platform.lib.progress import ProgressLine
from ops_platform.lib.redact import Redactor
from ops_platform.lib.stores import S3Store, destination_stores
from ops_platform.lib.targets import file_names_destinations, load_platform_config
from ops_platform.lib.tags import BACKUP_KIND, MAX_RUNTIME

# One dump at a time on this machine (dagster.yaml gives every pool one slot): on the spring-forward
# night production's 02:00 and staging's 03:00 fire together, and two dumps sharing the CPU would each
# hold their database's locks twice as long.
DUMP_POOL = "database_dumps"

BACKUP_CHECKS = [
    dg.AssetCheckSpec("decodes_completely", asset="database_backup", blocking=True,
                      description="The stored artifact decodes completely through pg_restore (not just --list)."),
    dg.AssetCheckSpec("not_empty", asset="database_backup", blocking=True,
                      description="The backup holds at least one table."),
    dg.AssetCheckSpec("size_not_dropped", asset="database_backup",
                      description="Warns when the uncompressed dump is under half the size of the previous verified one's "
                                  "(raw bytes, so a change of compression neither fakes nor hides a drop)."),
]

S3_CHECKS = [
    dg.AssetCheckSpec("s3_copy_matches", asset="database_backup",
                      description="The sha256 of what S3 holds matches the manifest, and with AWS_S3_SSE "
                                  "S3 reports the object encrypted that way.")
] if os.environ.get("AWS_S3_BUCKET", "").strip() else []


def counts_copies() -> bool:
    """Copies are counted when ops_platform.yaml has destinations (or names some in a file that is
    wrong: then they are missing copies) or BACKUP_MIN_COPIES is set."""
    if os.environ.get("BACKUP_MIN_COPIES", "").strip() not in ("", "0"):
        return True
    try:
        return bool(load_platform_config().destinations)
    except ConfigError:
        return file_names_destinations()


COPY_CHECKS = [
    dg.AssetCheckSpec("enough_copies", asset="database_backup",
                      description="At least BACKUP_MIN_COPIES copies (default: every configured place: the local "
                                  "folder, AWS_S3_BUCKET and each destination of ops_platform.yaml) were read back "
                                  "intact; a failure names the missing copy and alerts.")
] if counts_copies() else []


def _progress_reporter(context: dg.AssetExecutionContext, environment: str):
    show = ProgressLine(context.log.info)

    def report(progress: Progress) -> None:
        rate = progress.raw_bytes / progress.elapsed / 1e6 if progress.elapsed else 0.0
        show(f"{environment}: {human_bytes(progress.raw_bytes)} dumped, "
             f"{human_bytes(progress.stored_bytes)} stored, {rate:.1f} MB/s", done=progress.done)

    return report


def backup_metadata(outcome: BackupOutcome) -> dict:
    """What a verified backup records on ``database_backup``, however it was launched."""
    manifest, dump = outcome.manifest, outcome.dump
    seconds = max(dump.duration_seconds, 1e-6)
    return {
        "backup_id": manifest.id,
        "kind": manifest.kind,
        "stored": human_bytes(manifest.stored_bytes),
        "raw": human_bytes(manifest.raw_bytes),
        "stored_bytes": dg.MetadataValue.int(manifest.stored_bytes),
        "raw_bytes": dg.MetadataValue.int(manifest.raw_bytes),
        "compression": f"{manifest.compression} level {manifest.compression_level}",
        "compression_ratio": dg.MetadataValue.float(round(manifest.raw_bytes / max(manifest.stored_bytes, 1), 3)),
        "duration_seconds": dg.MetadataValue.float(round(manifest.duration_seconds, 3)),
        "dump_seconds": dg.MetadataValue.float(round(dump.duration_seconds, 3)),
        "throughput_mb_per_s": dg.MetadataValue.float(round(manifest.raw_bytes / seconds / 1e6, 2)),
        "sha256": manifest.sha256,
        "destinations": dg.MetadataValue.json(manifest.locations),
        "verified_copies": dg.MetadataValue.json(manifest.verified_copies),
        "server_version": manifest.server_version,
        "pg_dump_version": manifest.pg_dump_version,
        "table_row_counts": dg.MetadataValue.json(manifest.table_row_counts),
        "verified": manifest.verified,
        "warnings": dg.MetadataValue.json(outcome.warnings),
    }


def _alert_failure(context: dg.AssetExecutionContext, slack: OpsSlackResource, environment: str, step: str,
                   message: str, backup_id: str | None = None) -> None:
    """Post the failure and mark the run, so the run-failure sensor does not post it again."""
    slack.notifier(context.log).post(messages.backup_failed(environment, step, message, backup_id,
                                                            run_url(context.run.run_id)))
    mark_alerted(context.instance, context.run.run_id)


def _fail(context: dg.AssetExecutionContext, slack: OpsSlackResource, environment: str, step: str,
          message: str) -> dg.Failure:
    _alert_failure(context, slack, environment, step, message)
    return dg.Failure(description=f"backup of {environment} failed at {step}: {message.splitlines()[0]}",
                      allow_retries=False)


def copy_places(backup_bucket: BackupBucketResource, log) -> tuple[S3Store | None, list[S3Store], dict[str, str]]:
    """Where a backup's copies go besides the local folder: the S3 store (None without a bucket or
    with a bad setting), the off-site destinations, and the places that should take a copy but
    cannot (a bad S3 setting, a wrong destinations file), each with its one-line reason, logged
    as a warning: they count as missing copies."""
    s3, unusable = None, {}
    try:
        s3 = backup_bucket.store()
    except ConfigError as error:
        unusable["s3"] = f"S3 is not used, its configuration is wrong: {error}; the backup is local only"
        log.warning(unusable["s3"])
    destinations = []
    try:
        destinations = destination_stores(read_timeout=backup_bucket.read_timeout_seconds)
    except ConfigError as error:
        problem = f"the off-site destinations are not used: {error}"
        log.warning(problem)
        if file_names_destinations():
            unusable["destinations"] = problem
    return s3, destinations, unusable


def check_evaluation(check: CheckOutcome, partition: str) -> dg.AssetCheckEvaluation:
    """A check of ``database_backup`` recorded by a step that is not the asset's (a fleet step)."""
    result = _check_result(check)
    return dg.AssetCheckEvaluation(asset_key=dg.AssetKey("database_backup"), check_name=check.name,
                                   passed=check.passed, metadata=result.metadata, severity=result.severity,
                                   description=check.description, partition=partition)


def _check_result(check: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=check.name, passed=check.passed, description=check.description,
        severity=dg.AssetCheckSeverity.WARN if check.severity == "warn" else dg.AssetCheckSeverity.ERROR,
        metadata={key: value for key, value in check.metadata.items() if value is not None},
    )


@dg.asset(
    partitions_def=environment_partitions,
    deps=[database_dep],
    group_name="backups",
    kinds={"postgres", "s3"} if S3_CHECKS else {"postgres"},
    check_specs=BACKUP_CHECKS + S3_CHECKS + COPY_CHECKS,
    pool=DUMP_POOL,
)
def database_backup(context: dg.AssetExecutionContext, slack: OpsSlackResource,
                    backup_storage: BackupStorageResource, backup_bucket: BackupBucketResource,
                    backup_settings: BackupSettings, retention_settings: RetentionSettings):
    """A custom-format `pg_dump` of the environment's database, compressed with zstd (or gzip),
    written to the local backup folder and, when a bucket is set, to S3 in the same pass.
    The artifact is decoded in full before its manifest (the commit marker) is written. Only a
    verified backup is a materialization: one that fails a blocking check fails the step."""
    environment_name = context.partition_key
    kind = context.run.tags.get(BACKUP_KIND, "manual")
    try:
        environment = get_environment(environment_name)
        compression = backup_storage.compression_settings()
        for settings_resource in (backup_settings, retention_settings):
            if settings_resource.invalid_settings:
                raise ConfigError(settings_resource.invalid_settings[0])
    except ConfigError as error:
        raise _fail(context, slack, environment_name, "configuration", str(error)) from None
    local = backup_storage.local_store()
    s3, destinations, unusable_places = copy_places(backup_bucket, context.log)
    s3_unusable = unusable_places.get("s3")
    private_backup_folder(context.log, local, environment_name)
    redactor = Redactor.from_environ()
    attempt = context.retry_number + 1
    try:
        with environment_guard(context, environment.database_url, environment_name,
                               backup_settings.lock_wait_seconds):
            settle_interrupted_swaps(context, slack, environment.database_url, local.root, environment_name)
            for cleared in clear_leftovers(local, s3, environment_name):
                context.log.warning(f"left by a backup that died: {cleared}")
            outcome = perform_backup(environment, local, s3, compression=compression, kind=kind,
                                     run_id=context.run.run_id, redactor=redactor,
                                     progress=_progress_reporter(context, environment_name),
                                     limits=backup_settings.limits(), destinations=destinations,
                                     unusable_places=unusable_places, min_copies=backup_settings.min_copies,
                                     count_copies=bool(COPY_CHECKS))
    except LockBusy as error:
        raise _fail(context, slack, environment_name, "environment lock", str(error)) from None
    except (BackupStepError, LockUnavailable) as error:
        step = error.step if isinstance(error, BackupStepError) else "connect"
        backup_settings.retry_if_transient(context, step, error)
        after = f" (after {attempt} attempts)" if attempt > 1 else ""
        raise _fail(context, slack, environment_name, step, f"{error}{after}") from None

    if S3_CHECKS and not any(check.name == "s3_copy_matches" for check in outcome.checks):
        outcome.checks.append(CheckOutcome("s3_copy_matches", False, False,
                                           s3_unusable or "no S3 bucket configured for this run: no off-site copy"))
    if s3_unusable:
        outcome.warnings.append(s3_unusable)
    if attempt > 1:
        outcome.warnings.append(f"succeeded on attempt {attempt} after a transient failure")
    for warning in outcome.warnings:
        context.log.warning(warning)
    manifest = outcome.manifest
    failed_blocking = [check for check in outcome.checks if check.blocking and not check.passed]
    if failed_blocking:
        for check in outcome.checks:
            yield _check_result(check)
        reasons = "; ".join(f"{check.name}: {check.description}" for check in failed_blocking)
        _alert_failure(context, slack, environment_name, "verification", reasons, manifest.id)
        raise dg.Failure(description=f"backup {manifest.id} of {environment_name} is not restorable: {reasons}",
                         metadata=backup_metadata(outcome), allow_retries=False)
    copies = next((check for check in outcome.checks if check.name == "enough_copies"), None)
    if copies is not None and not copies.passed:
        slack.notifier(context.log).post(messages.backup_copies_missing(
            environment_name, manifest.id, copies.description, manifest.locations, run_url(context.run.run_id)))
    else:
        slack.notifier(context.log).post(messages.backup_succeeded(
            environment_name, manifest.id, manifest.stored_bytes, manifest.raw_bytes,
            manifest.duration_seconds, manifest.locations, run_url(context.run.run_id), outcome.warnings))
    yield dg.MaterializeResult(metadata=backup_metadata(outcome),
                               check_results=[_check_result(check) for check in outcome.checks])


backup_job = dg.define_asset_job(
    "backup_job",
    selection=dg.AssetSelection.assets(database_backup, "backup_retention"),
    description="Back up one environment's database (the partition), verify the artifact, then run "
                "what follows a good backup (retention). Blocking checks stop the follow-ups.",
    tags={MAX_RUNTIME: str(settings.backup_max_runtime_seconds())},
)

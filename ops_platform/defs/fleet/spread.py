"""``fleet_backup_job``: many targets backed up in one run, one step per target, so the steps can
spread over machines.

With ``OPS_PLATFORM_EXECUTOR=celery`` the steps go to Celery workers (``ops_platform.celery_app``,
Dagster's Celery executor) through ``CELERY_BROKER_URL``, and the values passed between steps (a
target's name, a backup's summary) go through ``fleet_step_io_manager``: S3 (the backup bucket,
under ``ops-platform-steps/``), which every machine reaches. Without the setting the job runs in
the code location's process pool and nothing else changes; ``backup_job`` and its schedules do not
use this job."""

import os
import socket

import dagster as dg
from dagster_aws.s3 import S3PickleIOManager, S3Resource

from ops_platform.config import ConfigError, get_environment
from ops_platform.defs.alerts.marking import mark_alerted
from ops_platform.defs.backups.assets import backup_metadata, check_evaluation, copy_places, counts_copies
from ops_platform.defs.environments import ensure_partitions
from ops_platform.defs.private_folders import private_backup_folder
from ops_platform.defs.resources import BackupBucketResource, BackupStorageResource, OpsSlackResource, _bind
from ops_platform.defs.run_guards import FORKSERVER_POOL, beating, environment_guard
from ops_platform.defs.retention.assets import apply_retention
from ops_platform.defs.settings import BackupSettings, RetentionSettings
from ops_platform.lib import celery_settings, settings
from ops_platform.lib.backup import clear_leftovers, perform_backup
from ops_platform.lib.dump import BackupStepError
from ops_platform.lib.formatting import describe
from ops_platform.lib.retention.policy import resolve_as_of
from ops_platform.lib.locks import LockBusy, LockUnavailable
from ops_platform.lib.messages import backups as messages
from ops_platform.lib.messages.common import run_url
from ops_platform.lib.redact import Redactor
from ops_platform.lib.tags import BACKUP_KIND, MAX_RUNTIME
from ops_platform.lib.targets import discover_server, fleet_mapping_key, load_platform_config

STEP_IO = "fleet_step_io_manager"
STEP_IO_PREFIX = "ops-platform-steps"


class FleetBackupConfig(dg.Config):
    """Which targets: each name of ``targets`` (an environment, a file target or
    ``<server>.<database>``), and every database found now on each server of ``servers``."""

    targets: list[str] = []
    servers: list[str] = []


@dg.op(out=dg.DynamicOut(str, io_manager_key=STEP_IO))
def fleet_backup_targets(context: dg.OpExecutionContext, config: FleetBackupConfig):
    """Every target to back up in this run, once each, in the order given."""
    try:
        celery_settings.executor_name()
        celery_settings.queue_name()
    except ConfigError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
    names = list(dict.fromkeys(config.targets))
    if config.servers:
        try:
            platform = load_platform_config()
        except ConfigError as error:
            raise dg.Failure(description=f"ops_platform.yaml: {error}", allow_retries=False) from None
        for server_name in config.servers:
            if server_name not in platform.servers:
                raise dg.Failure(description=f"no server '{server_name}' in ops_platform.yaml", allow_retries=False)
            found, problems = discover_server(platform.servers[server_name])
            for problem in problems:
                context.log.warning(str(problem))
            names += [target.name for target in found if target.name not in names]
    if not names:
        raise dg.Failure(description="no target to back up: give targets or servers", allow_retries=False)
    context.log.info(f"{len(names)} targets to back up: {', '.join(names)}")
    ensure_partitions(context.instance, names)
    for name in names:
        yield dg.DynamicOutput(name, mapping_key=fleet_mapping_key(name))


@dg.op(out=dg.Out(dict, io_manager_key=STEP_IO), tags={"kind": "postgres"})
def backup_target(context: dg.OpExecutionContext, target: str, slack: OpsSlackResource,
                  backup_storage: BackupStorageResource, backup_bucket: BackupBucketResource,
                  backup_settings: BackupSettings, retention_settings: RetentionSettings) -> dict:
    """One target's backup, the same pipeline as ``database_backup`` (lib/backup.py: dump, decode,
    copies read back, manifest last), on whichever machine runs the step. A transient failure is
    retried (``BACKUP_RETRIES``), possibly on another worker; any other failure alerts once."""
    def fail(step: str, message: str) -> dg.Failure:
        slack.notifier(context.log).post(messages.backup_failed(target, step, message, None,
                                                                run_url(context.run.run_id)))
        mark_alerted(context.instance, context.run.run_id)
        return dg.Failure(description=f"backup of {target} failed at {step}: {message.splitlines()[0]}",
                          allow_retries=False)

    try:
        backup_settings.require_valid("backup settings")
        environment = get_environment(target)
        compression = backup_storage.compression_settings()
    except ConfigError as error:
        raise fail("configuration", str(error)) from None
    local = backup_storage.local_store()
    s3, destinations, unusable_places = copy_places(backup_bucket, context.log)
    keep_local = _keeps_local_copies(backup_storage)
    if not keep_local:
        context.log.info(f"{target}: no local copy is kept on {socket.gethostname()} (BACKUP_DIR is unset on this "
                         "worker): S3 and the destinations hold the backup")
    private_backup_folder(context.log, local, target)
    try:
        with environment_guard(context, environment.database_url, target, backup_settings.lock_wait_seconds):
            for cleared in clear_leftovers(local, s3, target):
                context.log.warning(f"left by a backup that died: {cleared}")
            outcome = perform_backup(environment, local, s3, compression=compression,
                                     kind=context.run.tags.get(BACKUP_KIND, "manual"), run_id=context.run.run_id,
                                     redactor=Redactor.from_environ(), limits=backup_settings.limits(),
                                     destinations=destinations, unusable_places=unusable_places,
                                     min_copies=backup_settings.min_copies, count_copies=counts_copies(),
                                     keep_local=keep_local)
    except LockBusy as error:
        raise fail("environment lock", str(error)) from None
    except (BackupStepError, LockUnavailable) as error:
        step = error.step if isinstance(error, BackupStepError) else "connect"
        backup_settings.retry_if_transient(context, step, error, who=f"{target}: ")
        raise fail(step, str(error)) from None
    for warning in outcome.warnings:
        context.log.warning(f"{target}: {warning}")
    manifest = outcome.manifest
    failed = [check for check in outcome.checks if check.blocking and not check.passed]
    if failed:
        raise fail("verification", "; ".join(f"{check.name}: {check.description}" for check in failed))
    context.log.info(f"{target}: backup {manifest.id} verified, stored in {', '.join(manifest.locations)}")
    context.log_event(dg.AssetMaterialization(asset_key="database_backup", partition=target,
                                              description=f"made by {context.job_name} on {socket.gethostname()}",
                                              metadata=backup_metadata(outcome)))
    for check in outcome.checks:
        context.log_event(check_evaluation(check, target))
    copies = next((check for check in outcome.checks if check.name == "enough_copies" and not check.passed), None)
    if copies is not None:
        context.log.warning(f"{target}: {copies.description}")
    retention_deleted = _retain(context, slack, target, environment.database_url, local, s3, destinations,
                                retention_settings, backup_settings)
    return {"target": target, "backup_id": manifest.id, "verified": manifest.verified,
            "stored_bytes": manifest.stored_bytes, "locations": list(manifest.locations),
            "host": socket.gethostname(), "retention_deleted": retention_deleted,
            "copies_missing": copies.description if copies is not None else None}


def _retain(context: dg.OpExecutionContext, slack: OpsSlackResource, target: str, database_url: str, local, s3,
            destinations, retention_settings: RetentionSettings, backup_settings: BackupSettings) -> int:
    """What follows a verified backup, as in backup_job: the target's retention now, recorded on
    ``backup_retention`` (so no retention run per database follows the night); how many backups it
    deleted (the run's one Slack message counts them). A failure here is a warning: the backup
    stands, and fleet_retention_schedule tries again in the morning."""
    try:
        if retention_settings.invalid_settings:
            raise ConfigError(retention_settings.invalid_settings[0])
        policy = retention_settings.policy(target)
        with environment_guard(context, database_url, target, backup_settings.lock_wait_seconds, required=False):
            result = apply_retention(context, slack, target, database_url, local, s3, policy,
                                     resolve_as_of(None), destinations, post_routine=False)
    except Exception as error:  # noqa: BLE001 - the backup is made; retention is tried again daily
        context.log.warning(f"{target}: retention after the backup failed: {describe(error)}")
        return 0
    context.log_event(dg.AssetMaterialization(asset_key="backup_retention", partition=target,
                                              description=f"after the backup, in {context.job_name}",
                                              metadata=result.metadata))
    return result.metadata["deleted"].value


def _keeps_local_copies(backup_storage: BackupStorageResource) -> bool:
    """A Celery worker without BACKUP_DIR keeps no local copy (the local default folder is for the
    machine that runs everything); anywhere else the local copy is kept as backup_job keeps it."""
    try:
        return backup_storage.backup_dir is not None or not celery_settings.uses_celery()
    except ConfigError:
        return True


@dg.op(out=dg.Out(dict, io_manager_key=STEP_IO))
def fleet_backup_summary(context: dg.OpExecutionContext, backups: list[dict], slack: OpsSlackResource) -> dict:
    """What the run backed up, and where each step ran: one Slack message for the whole run (a
    failed target has already posted its own alert, and then this step does not run)."""
    hosts = sorted({backup["host"] for backup in backups})
    context.log.info(f"{len(backups)} backups verified, made on {', '.join(hosts)}")
    slack.notifier(context.log).post(messages.fleet_backups_succeeded(backups, hosts, run_url(context.run.run_id)))
    context.add_output_metadata({"backups": len(backups), "hosts": dg.MetadataValue.json(hosts),
                                 "backup_ids": dg.MetadataValue.json(sorted(b["backup_id"] for b in backups))})
    return {"backups": len(backups), "hosts": hosts}


# The process pool of every job, with the run's heartbeat beaten by the process that runs it.
LOCAL_POOL = beating(dg.multiprocess_executor).configured(FORKSERVER_POOL, name="ops_platform_forkserver")


def _executor() -> dg.ExecutorDefinition:
    """Dagster's Celery executor when ``OPS_PLATFORM_EXECUTOR=celery``, configured with the names
    of the variables (resolved by each process), else the local process pool."""
    try:
        if not celery_settings.uses_celery():
            return LOCAL_POOL
        celery_settings.queue_name()
        backend = celery_settings.backend_variable()
    except ConfigError:
        return LOCAL_POOL  # fleet_backup_targets fails the run with the one-line error
    from dagster_celery import celery_executor

    return beating(celery_executor).configured(
        {"broker": {"env": celery_settings.BROKER_VARIABLE}, "backend": {"env": backend},
         "config_source": celery_settings.celery_app_settings()},
        name="ops_platform_celery")


@dg.job(executor_def=_executor(), tags={MAX_RUNTIME: str(settings.backup_max_runtime_seconds())})
def fleet_backup_job():
    """Back up many targets in one run, one step each (on Celery workers with
    OPS_PLATFORM_EXECUTOR=celery), each verified and committed by its manifest as backup_job's are."""
    fleet_backup_summary(fleet_backup_targets().map(backup_target).collect())


def step_io_manager(environ=None) -> dg.ConfigurableIOManager:
    """S3 when steps may run on other machines and a bucket is set; the instance's folder otherwise."""
    environ = os.environ if environ is None else environ
    try:
        spread = celery_settings.uses_celery(environ)
    except ConfigError:
        spread = False
    if spread and environ.get("AWS_S3_BUCKET", "").strip():
        s3 = S3Resource(**_bind(environ, {"region_name": "AWS_DEFAULT_REGION", "endpoint_url": "AWS_ENDPOINT_URL_S3"}))
        return S3PickleIOManager(s3_resource=s3, s3_bucket=dg.EnvVar("AWS_S3_BUCKET"), s3_prefix=STEP_IO_PREFIX)
    return dg.FilesystemIOManager()


@dg.definitions
def fleet_spread() -> dg.Definitions:
    return dg.Definitions(jobs=[fleet_backup_job], resources={STEP_IO: step_io_manager()})

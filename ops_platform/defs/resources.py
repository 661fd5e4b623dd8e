"""Resources shared by every domain, bound to the environment variables (docs/architecture.md, "Configuration").

Optional variables are bound with ``dg.EnvVar`` only when present, so a missing Slack or S3
setting means "not used", and secrets stay out of run config (EnvVar stores the name only).
"""


import contextlib
import logging
import os

import dagster as dg
from dagster_aws.s3 import S3Resource
from dagster_slack import SlackResource
from pydantic import Field, PrivateAttr
from slack_sdk import WebClient

from ops_platform.config import ConfigError, backup_root, configured_environment_names
from ops_platform.defs.settings import settings_resources
from ops_platform.lib import locks
from ops_platform.lib import settings as settings_lib
from ops_platform.lib.dump import ZSTD_DEFAULT_LEVEL, Compression
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore import databases
from ops_platform.lib.s3_encryption import ServerSideEncryption, from_settings
from ops_platform.lib.slack import SlackNotifier, make_web_client, make_webhook_client
from ops_platform.lib.stores import LocalStore, S3Store, make_s3_client


# What restore_job's steps hand each other is pickled through this filesystem IO manager however the
# run is started: execute_in_process (the CLI) swaps only the default "io_manager" for memory.
RESTORE_STATE_IO_MANAGER = "restore_state_io_manager"


class OpsSlackResource(SlackResource):
    """dagster-slack's resource with a configurable API base (for Slack-compatible servers),
    a default channel, and the seed's incoming webhook."""

    token: str | None = Field(default=None, description="Bot token (SLACK_BOT_TOKEN).")
    base_url: str | None = Field(default=None, description="API base, e.g. https://slack.com/api/ (SLACK_API_URL).")
    channel: str | None = Field(default=None, description="Channel for bot-token messages (SLACK_CHANNEL).")
    webhook_url: str | None = Field(default=None, description="Incoming webhook (SLACK_WEBHOOK_URL).")
    timeout_seconds: int = 10
    max_retries: int = 3

    def get_client(self) -> WebClient:
        if not self.token:
            raise ConfigError("SLACK_BOT_TOKEN is not set")
        return make_web_client(self.token, self.base_url, self.timeout_seconds, self.max_retries)

    def notifier(self, log: logging.Logger | None = None) -> SlackNotifier:
        """Without Slack on a development machine (no production or staging configured), each
        message is logged as information: ``make dev`` says once at start-up that Slack is not set."""
        web_client = self.get_client() if self.token and self.channel else None
        webhook = make_webhook_client(self.webhook_url, self.timeout_seconds, self.max_retries) if self.webhook_url else None
        development_only = set(configured_environment_names()) <= {"development"}
        return SlackNotifier(web_client=web_client, channel=self.channel, webhook_client=webhook,
                             redactor=Redactor.from_environ(), log=log, warn_when_unconfigured=not development_only)


class BackupStorageResource(dg.ConfigurableResource):
    """Where backups are written locally (always) and how they are compressed."""

    backup_dir: str | None = Field(default=None, description="Local root (BACKUP_DIR); default $DAGSTER_HOME/backups.")
    compression: str = Field(default="zstd", description="zstd or gzip (BACKUP_COMPRESSION).")
    compression_level: str | None = Field(default=None, description="BACKUP_COMPRESSION_LEVEL; zstd 2, gzip 6.")
    zstd_threads: int = 2

    def local_store(self) -> LocalStore:
        return LocalStore(self.backup_dir or backup_root())

    def compression_settings(self) -> Compression:
        default_level = ZSTD_DEFAULT_LEVEL if self.compression == "zstd" else 6
        try:
            level = int(self.compression_level) if self.compression_level else default_level
        except ValueError:
            raise ConfigError(f"BACKUP_COMPRESSION_LEVEL must be an integer, got '{self.compression_level}'") from None
        try:
            return Compression(self.compression, level, self.zstd_threads)
        except ValueError as error:
            raise ConfigError(f"BACKUP_COMPRESSION: {error}") from None


class BackupBucketResource(S3Resource):
    """The backup bucket, when AWS_S3_BUCKET is set: dagster-aws's S3 resource (region, endpoint,
    attempts; credentials come from the standard AWS variables, never from config) with the bucket,
    the key prefix, the server-side encryption of every object written and timeouts on every call.
    A bad setting (AWS_MAX_ATTEMPTS=x, AWS_S3_SSE=x) is listed in ``invalid_settings``; backups then
    go on locally and report the S3 copy as missing."""

    bucket: str | None = Field(default=None, description="AWS_S3_BUCKET; no bucket means local backups only.")
    prefix: str = Field(default="backups", description="Key prefix inside the bucket (AWS_S3_PREFIX).")
    server_side_encryption: str | None = Field(
        default=None,
        description="AWS_S3_SSE: AES256 or aws:kms for every object written; s3_copy_matches confirms it.")
    sse_kms_key_id: str | None = Field(
        default=None, description="AWS_S3_SSE_KMS_KEY_ID: the KMS key for aws:kms (id, ARN or alias).")
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    invalid_settings: list[str] = []

    def get_client(self, *, max_attempts: int | None = None, read_timeout_seconds: float | None = None):
        if self.invalid_settings:
            raise ConfigError(self.invalid_settings[0])
        return make_s3_client(
            max_attempts=max_attempts or self.max_attempts,
            connect_timeout=self.connect_timeout_seconds,
            read_timeout=read_timeout_seconds or self.read_timeout_seconds,
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
        )

    def encryption(self) -> ServerSideEncryption | None:
        """The server-side encryption every write asks for, or None. Raises ConfigError when an
        S3 setting is bad."""
        if self.invalid_settings:
            raise ConfigError(self.invalid_settings[0])
        return from_settings(
            settings_lib.S3_SSE.parse(self.server_side_encryption) if self.server_side_encryption else None,
            settings_lib.S3_SSE_KMS_KEY_ID.parse(self.sse_kms_key_id) if self.sse_kms_key_id else None)

    def get_object_to_set_on_execution_context(self):
        # dagster-aws puts a client on the context; steps here use the resource itself, and a bad
        # setting must reach them (to degrade to local) rather than fail every step's setup.
        return self

    def store(self, *, max_attempts: int | None = None, read_timeout_seconds: float | None = None) -> S3Store | None:
        """The bucket as a store, or None when no bucket is configured. Raises ConfigError when an
        S3 setting is bad."""
        if not self.bucket:
            return None
        return S3Store(self.get_client(max_attempts=max_attempts, read_timeout_seconds=read_timeout_seconds),
                       self.bucket, self.prefix, self.encryption())


class RestoreLockResource(dg.ConfigurableResource):
    """What a restore holds for its whole run: the environment's lock (no backup, retention or
    drill of the environment meanwhile), the restored database's lock (one restore of it at a
    time) and a heartbeat on the run. All end when the run ends, or when its process dies."""

    _stack: contextlib.ExitStack | None = PrivateAttr(default=None)
    _lock: databases.RestoreLock | None = PrivateAttr(default=None)

    def acquire(self, context, url: str, environment: str, database: str, wait_seconds: float = 0
                ) -> databases.RestoreLock:
        """Take both locks (once per run). Raises LockBusy/LockUnavailable or RestoreStepError."""
        from ops_platform.defs.run_guards import heartbeat, holder
        from ops_platform.lib.tags import LOCK_WAIT

        wait_seconds = float(context.run.tags.get(LOCK_WAIT, wait_seconds))
        if self._lock is None:
            stack = contextlib.ExitStack()
            try:
                stack.enter_context(heartbeat(context))
                stack.enter_context(locks.environment_lock(url, environment, holder=holder(context),
                                                           wait_seconds=wait_seconds))
                self._lock = stack.enter_context(databases.restore_lock(url, database, holder=holder(context)))
            except BaseException:
                stack.close()
                raise
            self._stack = stack
        self._lock.require(database)
        return self._lock

    @property
    def held(self) -> databases.RestoreLock | None:
        return self._lock

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = self._lock = None


def _bind(environ, mapping: dict[str, str]) -> dict:
    return {field: dg.EnvVar(variable) for field, variable in mapping.items() if environ.get(variable, "").strip()}


def build_resources(environ=None) -> dict:
    environ = os.environ if environ is None else environ
    slack = OpsSlackResource(**_bind(environ, {
        "token": "SLACK_BOT_TOKEN",
        "base_url": "SLACK_API_URL",
        "channel": "SLACK_CHANNEL",
        "webhook_url": "SLACK_WEBHOOK_URL",
    }))
    storage = BackupStorageResource(**_bind(environ, {
        "backup_dir": "BACKUP_DIR",
        "compression": "BACKUP_COMPRESSION",
        "compression_level": "BACKUP_COMPRESSION_LEVEL",
    }))
    bucket_settings = settings_lib.problems(settings_lib.S3, environ)
    attempts = ({"max_attempts": dg.EnvVar.int("AWS_MAX_ATTEMPTS")}
                if environ.get("AWS_MAX_ATTEMPTS", "").strip() else {})
    encryption = _bind(environ, {"server_side_encryption": "AWS_S3_SSE", "sse_kms_key_id": "AWS_S3_SSE_KMS_KEY_ID"})
    bucket = BackupBucketResource(
        **_bind(environ, {"bucket": "AWS_S3_BUCKET", "prefix": "AWS_S3_PREFIX", "region_name": "AWS_DEFAULT_REGION",
                          "endpoint_url": "AWS_ENDPOINT_URL_S3"}),
        **({"invalid_settings": bucket_settings} if bucket_settings else {**attempts, **encryption}),
    )
    return {"slack": slack, "backup_storage": storage, "backup_bucket": bucket, "restore_lock": RestoreLockResource(),
            RESTORE_STATE_IO_MANAGER: dg.FilesystemIOManager(), **settings_resources(environ)}


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources())

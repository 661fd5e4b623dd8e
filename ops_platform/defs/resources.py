"""Resources shared by every domain, bound to the environment variables in DESIGN.md.

Optional variables are bound with ``dg.EnvVar`` only when present, so a missing Slack or S3
setting means "not used", and secrets stay out of run config (EnvVar stores the name only).
"""


import logging
import os

import dagster as dg
from dagster_slack import SlackResource
from pydantic import Field
from slack_sdk import WebClient

from ops_platform.config import ConfigError, backup_root
from ops_platform.lib.dump import Compression
from ops_platform.lib.redact import Redactor
from ops_platform.lib.slack import SlackNotifier, make_web_client, make_webhook_client
from ops_platform.lib.stores import LocalStore, S3Store, make_s3_client


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
        web_client = self.get_client() if self.token and self.channel else None
        webhook = make_webhook_client(self.webhook_url, self.timeout_seconds, self.max_retries) if self.webhook_url else None
        return SlackNotifier(web_client=web_client, channel=self.channel, webhook_client=webhook,
                             redactor=Redactor.from_environ(), log=log)


class BackupStorageResource(dg.ConfigurableResource):
    """Where backups go and how they are compressed. The local folder is always written;
    S3 is added when a bucket is set. AWS credentials and AWS_ENDPOINT_URL_S3 come from the
    standard AWS variables through boto3."""

    backup_dir: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = "backups"
    compression: str = "zstd"
    compression_level: str | None = None
    zstd_threads: int = 2

    def local_store(self) -> LocalStore:
        return LocalStore(self.backup_dir or backup_root())

    def s3_store(self) -> S3Store | None:
        if not self.s3_bucket:
            return None
        return S3Store(make_s3_client(), self.s3_bucket, self.s3_prefix)

    def compression_settings(self) -> Compression:
        default_level = 3 if self.compression == "zstd" else 6
        try:
            level = int(self.compression_level) if self.compression_level else default_level
        except ValueError:
            raise ConfigError(f"BACKUP_COMPRESSION_LEVEL must be an integer, got '{self.compression_level}'") from None
        try:
            return Compression(self.compression, level, self.zstd_threads)
        except ValueError as error:
            raise ConfigError(f"BACKUP_COMPRESSION: {error}") from None


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
        "s3_bucket": "AWS_S3_BUCKET",
        "s3_prefix": "AWS_S3_PREFIX",
        "compression": "BACKUP_COMPRESSION",
        "compression_level": "BACKUP_COMPRESSION_LEVEL",
    }))
    return {"slack": slack, "backup_storage": storage}


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources())

"""Configuration errors and the redactor, without Dagster."""

from __future__ import annotations

import pytest

from ops_platform.config import ConfigError, get_environment, load_environments
from ops_platform.lib.artifacts import make_backup_id, parse_backup_id
from ops_platform.lib.redact import Redactor, secrets_from_environ

ENVIRON = {
    "PRODUCTION_DATABASE_URL": "postgresql://app:Pr0dPassw0rd@db:5432/app",
    "PRODUCTION_REDIS_URL": "redis://:R3disPassw0rd@cache:6379/0",
    "DATABASE_URL": "postgresql://postgres@127.0.0.1/dev",
    "SLACK_BOT_TOKEN": "xoxb-1111-2222-secret",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T1/B2/abcdefsecret",
    "AWS_SECRET_ACCESS_KEY": "awsSecretKey123",
}


def test_environments_exist_when_their_database_url_is_set():
    environments = load_environments(ENVIRON)
    assert list(environments) == ["production", "development"]
    assert environments["production"].redis_url.endswith("cache:6379/0")


@pytest.mark.parametrize("name,fragment", [
    ("prod", "unknown environment 'prod'; configured: production, development"),
    ("staging", "environment 'staging' is not configured (set STAGING_DATABASE_URL)"),
    ("../etc", "unknown environment '../etc'"),
    ("x" * 500, "..."),
])
def test_bad_environment_names_get_one_line_errors(name, fragment):
    with pytest.raises(ConfigError) as error:
        get_environment(name, ENVIRON)
    message = str(error.value)
    assert fragment in message and "\n" not in message and len(message) < 200


def test_with_no_database_url_at_all_development_is_the_demo_database():
    from ops_platform.config import DEFAULT_DATABASE_URL, DEMO_DATABASE

    environments = load_environments({"REDIS_URL": "redis://127.0.0.1:6379/0", "DATABASE_URL": "  "})
    assert list(environments) == ["development"]
    assert environments["development"].database_url == DEFAULT_DATABASE_URL
    assert DEFAULT_DATABASE_URL.endswith(f"/{DEMO_DATABASE}") and "@127.0.0.1:5432/" in DEFAULT_DATABASE_URL
    assert environments["development"].redis_url == "redis://127.0.0.1:6379/0"
    with pytest.raises(ConfigError) as error:
        get_environment("staging", {})
    assert "configured: development (no database URL is set, so development is the demo database" in str(error.value)


@pytest.mark.parametrize("variable", ["PRODUCTION_DATABASE_URL", "STAGING_DATABASE_URL"])
def test_the_default_never_applies_once_any_database_url_is_set(variable):
    """A production deployment does not grow a development environment pointing at localhost."""
    environments = load_environments({variable: "postgresql://app@db.example.com/app"})
    assert "development" not in environments and len(environments) == 1
    with pytest.raises(ConfigError, match="environment 'development' is not configured .set DATABASE_URL.; "
                                          "configured: (production|staging)$"):
        get_environment("development", {variable: "postgresql://app@db.example.com/app"})


@pytest.mark.parametrize("bad", ["../production-20260101T000000Z", "production-20260101T000000Z/../../x",
                                 "Prod-20260101T000000Z", "shop.orders.x-20260101T000000Z", "production-20261341T000000Z", "", "production-latest"])
def test_backup_ids_with_traversal_or_bad_shape_are_rejected(bad):
    with pytest.raises(ConfigError, match="invalid backup id"):
        parse_backup_id(bad)


def test_backup_id_round_trip():
    from datetime import datetime, timezone

    moment = datetime(2026, 1, 15, 7, 0, tzinfo=timezone.utc)
    assert make_backup_id("production", moment) == "production-20260115T070000Z"
    assert parse_backup_id("production-20260115T070000Z") == ("production", moment)


def test_redactor_masks_known_secrets_and_secret_shapes():
    redact = Redactor.from_environ(ENVIRON)
    text = ("connect failed for postgresql://app:Pr0dPassw0rd@db:5432/app; redis R3disPassw0rd; "
            "GET https://api/health?token=abc123&x=1; key=awsSecretKey123; xoxb-9999-unknown; "
            "https://hooks.slack.com/services/T9/B9/zzz; host=db password=hunter2 dbname=app; "
            "postgresql://u:unknownpw@h/db")
    cleaned = redact(text)
    for secret in ("Pr0dPassw0rd", "R3disPassw0rd", "abc123", "awsSecretKey123", "xoxb-9999", "zzz",
                   "hunter2", "unknownpw"):
        assert secret not in cleaned, secret
    assert "postgresql://app:***@db:5432/app" in cleaned
    assert "x=1" in cleaned


def test_secrets_from_environ_ignores_non_secrets():
    secrets = secrets_from_environ(ENVIRON)
    assert {"Pr0dPassw0rd", "R3disPassw0rd", "xoxb-1111-2222-secret", "awsSecretKey123"} <= secrets
    assert not any("postgres@127.0.0.1" in s for s in secrets)


def test_webhooks_and_the_platform_token_are_secrets_and_a_kms_key_id_is_not():
    environ = {"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T1/B2/abcdefsecret",
               "ROLLBACK_WEBHOOK_URL": "https://deploy.example.com/hooks/devRollback1",
               "STAGING_ROLLBACK_WEBHOOK_URL": "https://deploy.example.com/hooks/stagingRollback2",
               "PRODUCTION_ROLLBACK_WEBHOOK_URL": "https://deploy.example.com/hooks/prodRollback3",
               "OPS_PLATFORM_TOKEN": "ops-platform-token-4",
               "AWS_S3_SSE": "aws:kms",
               "AWS_S3_SSE_KMS_KEY_ID": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}
    secrets = secrets_from_environ(environ)
    assert secrets == {value for key, value in environ.items() if not key.startswith("AWS_S3_SSE")}
    line = Redactor.from_environ(environ)(" ".join(environ.values()))
    assert line == "*** *** *** *** *** aws:kms " + environ["AWS_S3_SSE_KMS_KEY_ID"]

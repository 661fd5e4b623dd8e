"""Migrate and rollback commands run with an allow-listed environment: their database's
``DATABASE_URL``, what any command needs and the names COMMAND_VARIABLES lists; never the
platform's secrets or another environment's URL."""

from __future__ import annotations

import pytest

from ops_platform.config import ConfigError, EnvironmentConfig
from ops_platform.lib import deploy, settings
from ops_platform.lib.restore.migrate import run_migrations
from ops_platform_tests.conftest import database_url

SHELL_OWN = {"PWD", "OLDPWD", "SHLVL", "_"}
BASE_VARIABLES = {"PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME"}
PLATFORM = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "aws-Secret-9", "SLACK_BOT_TOKEN": "xoxb-1-2",
            "OPS_PLATFORM_TOKEN": "ci-Token-9", "STAGING_DATABASE_URL": "postgresql://s:staging-Pw9@db/staging",
            "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x", "UNRELATED": "x"}


def names(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def test_rollback_and_migrate_commands_get_only_what_they_need(monkeypatch):
    for key, value in PLATFORM.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NODE_ENV", "production")
    monkeypatch.setenv("COMMAND_VARIABLES", "NODE_ENV")
    production = EnvironmentConfig("production", database_url("production"), rollback_command="env")
    rollback = deploy.run_rollback(production, "1.2.3", "1.2.2", "down", 10)
    assert rollback.ok, rollback.summary
    seen = names(rollback.output)
    assert set(seen) - SHELL_OWN - set(BASE_VARIABLES) == {
        "DATABASE_URL", "NODE_ENV", "OPS_ENVIRONMENT", "OPS_EXPECTED_VERSION", "OPS_OBSERVED_VERSION",
        "OPS_FAILURE_REASON"}
    assert seen["DATABASE_URL"].startswith("postgresql://ops_test:***@") and seen["OPS_ENVIRONMENT"] == "production"
    assert "PATH" in seen and "HOME" in seen

    migrate = run_migrations("env", database_url("production"), "scratch_copy", timeout=10)
    seen = names(migrate.output)
    assert set(seen) - SHELL_OWN - set(BASE_VARIABLES) == {"DATABASE_URL", "OPS_RESTORE_DATABASE", "NODE_ENV"}
    assert seen["DATABASE_URL"].endswith("/scratch_copy")


@pytest.mark.parametrize("listed", ["AWS_SECRET_ACCESS_KEY", "SLACK_BOT_TOKEN", "OPS_PLATFORM_TOKEN",
                                    "STAGING_DATABASE_URL", "NODE_ENV,PRODUCTION_REDIS_URL", "DATABASE_URL"])
def test_command_variables_may_not_name_the_platforms_own(listed, monkeypatch):
    with pytest.raises(ConfigError, match="belongs to the platform"):
        settings.value_of(settings.COMMAND_VARIABLES, {"COMMAND_VARIABLES": listed})
    monkeypatch.setenv("COMMAND_VARIABLES", listed)
    production = EnvironmentConfig("production", database_url("production"), rollback_command="env")
    outcome = deploy.run_rollback(production, "1.2.3", None, "down", 10)
    assert not outcome.ok and outcome.summary.startswith("rollback command not run: COMMAND_VARIABLES may not pass")

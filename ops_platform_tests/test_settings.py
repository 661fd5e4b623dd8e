"""Settings: one table (lib/settings.py), one-line errors, and resources the UI shows. A bad value
never stops the code location from loading (health checks and alerts keep running); it fails the
runs that use it at their first step, and the CLI before any work."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from ops_platform.config import ConfigError
from ops_platform.defs import settings as settings_defs
from ops_platform.defs.resources import BackupBucketResource, build_resources
from ops_platform.lib import settings


@pytest.mark.parametrize("variable,raw,fragment", [
    ("BACKUP_KEEP_MIN", "abc", "BACKUP_KEEP_MIN must be an integer, got 'abc'"),
    ("BACKUP_RETENTION_DAYS", "0", "BACKUP_RETENTION_DAYS must be >= 1, got 0"),
    ("BACKUP_KEEP_DAILY", "3.5", "must be an integer"),
    ("DEPLOY_ROLLBACK_TIMEOUT_SECONDS", "soon", "must be a number"),
    ("DEPLOY_ROLLBACK_TIMEOUT_SECONDS", "0", "must be > 0"),
    ("DEPLOY_POLL_INTERVAL_SECONDS", "-3", "must be > 0"),
    ("DEPLOY_POLL_INTERVAL_SECONDS", "nan", "must be a finite number"),
    ("HEALTH_CHECK_TIMEOUT_SECONDS", "ten", "HEALTH_CHECK_TIMEOUT_SECONDS must be an integer, got 'ten'"),
    ("AWS_MAX_ATTEMPTS", "-3", "AWS_MAX_ATTEMPTS must be >= 1, got -3"),
])
def test_bad_values_are_one_line_naming_the_variable(variable, raw, fragment):
    setting = next(s for s in settings.ALL if s.variable == variable)
    with pytest.raises(ConfigError) as error:
        settings.value_of(setting, {variable: raw})
    assert fragment in str(error.value) and "\n" not in str(error.value)
    assert settings.value_of(setting, {}) == setting.default


def test_per_environment_overrides_and_their_errors():
    keep_min = next(s for s in settings.RETENTION if s.field == "keep_min")
    environ = {"BACKUP_KEEP_MIN": "9", "PRODUCTION_BACKUP_KEEP_MIN": "14"}
    assert settings.value_of(keep_min, environ, "production") == 14
    assert settings.value_of(keep_min, environ, "staging") == 9
    assert settings.problems(settings.RETENTION, {"STAGING_BACKUP_KEEP_MIN": "x"}) == [
        "STAGING_BACKUP_KEEP_MIN must be an integer, got 'x'"]
    with pytest.raises(ConfigError, match=r"BACKUP_KEEP_MIN must be an integer, got 'a' \(and 1 more"):
        settings.check(settings.RETENTION, {"BACKUP_KEEP_MIN": "a", "BACKUP_KEEP_WEEKLY": "-1"})


def test_every_setting_is_a_field_of_its_resource_with_the_same_default():
    groups = {settings_defs.RetentionSettings: settings.RETENTION, settings_defs.BackupSettings: settings.BACKUP,
              settings_defs.HealthSettings: settings.HEALTH, settings_defs.DeploymentSettings: settings.DEPLOYMENT,
              settings_defs.RestoreSettings: settings.RESTORE,
              BackupBucketResource: settings.S3}
    for resource, group in groups.items():
        fields = resource.model_fields
        for setting in group:
            assert setting.field in fields, (resource.__name__, setting.field)
            assert fields[setting.field].default == setting.default, (resource.__name__, setting.field)
    assert {s.variable for s in settings.ALL} <= _example_variables(), "document every setting in .env.example"


def _example_variables() -> set[str]:
    text = open(os.path.join(os.path.dirname(__file__), "..", ".env.example")).read()
    return {line.split("=", 1)[0].strip() for line in text.splitlines() if "=" in line and not line.startswith("#")}


def test_resources_bind_variables_by_name_and_list_bad_values_without_failing_to_load():
    environ = {"BACKUP_KEEP_MIN": "10", "PRODUCTION_BACKUP_RETENTION_DAYS": "60", "HEALTH_FLAP_CHANGES": "lots",
               "DEPLOY_POLL_INTERVAL_SECONDS": "0.5", "AWS_S3_BUCKET": "b", "AWS_MAX_ATTEMPTS": "x"}
    resources = build_resources(environ)
    retention = resources["retention_settings"]
    assert retention.keep_min == dg.EnvVar.int("BACKUP_KEEP_MIN") and retention.invalid_settings == []
    assert retention.environment_overrides == {"production": {"retention_days": 60}}
    health = resources["health_settings"]
    assert health.flap_changes == 4 and health.invalid_settings == ["HEALTH_FLAP_CHANGES must be an integer, got 'lots'"]
    assert resources["deployment_settings"].poll_interval_seconds == 0.5
    bucket = resources["backup_bucket"]
    assert bucket.invalid_settings == ["AWS_MAX_ATTEMPTS must be an integer, got 'x'"]
    with pytest.raises(ConfigError, match="AWS_MAX_ATTEMPTS"):
        bucket.store()
    with pytest.raises(dg.Failure, match="^health sweep: HEALTH_FLAP_CHANGES must be an integer"):
        health.require_valid("health sweep")


def test_policy_from_the_resource_matches_the_cli_policy():
    environ = {"BACKUP_KEEP_MIN": "10", "STAGING_BACKUP_KEEP_MIN": "3", "BACKUP_KEEP_WEEKLY": "4"}
    from ops_platform.lib.retention.policy import policy_from_environ

    os_environ = dict(os.environ)
    try:
        os.environ.update(environ)
        resource = build_resources(os.environ)["retention_settings"]
        with dg.build_resources({"r": resource}) as built:
            for environment in ("production", "staging"):
                assert built.r.policy(environment) == policy_from_environ(environment, environ)
    finally:
        os.environ.clear()
        os.environ.update(os_environ)


def test_code_location_loads_with_a_bad_setting():
    env = dict(os.environ, BACKUP_KEEP_MIN="abc", HEALTH_CHECK_TIMEOUT_SECONDS="ten")
    code = ("from ops_platform.definitions import defs; d = defs(); "
            "print(sorted(j.name for j in d.jobs if not j.name.startswith('__')))")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "backup_job" in result.stdout and "health_check_job" in result.stdout


@pytest.mark.parametrize("argv,variable", [
    (["backup", "staging"], "BACKUP_KEEP_MIN"),
    (["retention", "staging"], "BACKUP_KEEP_MIN"),
    (["health", "staging"], "HEALTH_FAILURE_THRESHOLD"),
    (["verify-deployment", "staging", "--expected-version", "1"], "DEPLOY_POLL_INTERVAL_SECONDS"),
])
def test_cli_refuses_a_bad_setting_before_any_work(argv, variable, tmp_path):
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "home"), BACKUP_DIR=str(tmp_path / "backups"),
               **{variable: "abc"})
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ops-platform"), *argv], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"ops-platform: error: {variable} must be {'a number' if 'SECONDS' in variable else 'an integer'}, got 'abc'"
    assert not (tmp_path / "backups").exists() and not (tmp_path / "home").exists()

"""``ops-platform health`` as a user runs it: one sweep as a Dagster run on $DAGSTER_HOME."""

from __future__ import annotations

import json

import dagster as dg
import pytest

from ops_platform import cli
from ops_platform_tests.conftest import DB_PASSWORD, DB_USER

MAINTENANCE_DB_URL = f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:5432/postgres"


@pytest.fixture
def app(monkeypatch, health_server, s3_bucket):
    for variable in ("PRODUCTION_DATABASE_URL", "STAGING_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.setenv(variable, MAINTENANCE_DB_URL)
    monkeypatch.setenv("PRODUCTION_API_URL", health_server.url)
    monkeypatch.setenv("PRODUCTION_FRONTEND_URL", health_server.url)
    monkeypatch.setenv("STAGING_API_URL", health_server.url)
    monkeypatch.setenv("HEALTH_DEGRADED_LATENCY_MS", "10000")
    return health_server


def test_json_for_one_environment_has_the_seed_shape(app, capsys):
    assert cli.main(["health", "production", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "healthy" and report["version"] == "1.2.3"
    assert report["services"] == {"api": "connected", "api_database": "connected", "api_redis": "connected",
                                  "api_storage": "connected", "bucket": "connected", "frontend": "connected",
                                  "postgres": "connected", "redis": "connected"}
    assert all("latency_ms" in check for check in report["checks"])


def test_table_for_every_environment_and_exit_1_when_unhealthy(app, capsys):
    app.mode = "degraded"
    assert cli.main(["health"]) == 1
    out, err = capsys.readouterr()
    assert "production   api_redis      unhealthy" in out
    assert "the app reports redis: disconnected" in out
    assert "development: healthy" in out and "production: unhealthy, version 1.2.3" in out
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs(filters=dg.RunsFilter(job_name="health_check_job"), limit=1)
        assert run.tags["ops_platform/launched_by"] == "cli"
    # Results on stdout, as backup and restore print theirs; nothing but warnings on stderr.
    assert out.splitlines()[-1] == f"run {run.run_id}" and err == ""


def test_unknown_environment_is_exit_2(capsys):
    assert cli.main(["health", "nowhere"]) == 2
    assert capsys.readouterr().err.strip() == ("ops-platform: error: unknown environment 'nowhere'; configured: "
                                               "production, staging, development")


def test_bad_setting_is_one_line(app, capsys, monkeypatch):
    monkeypatch.setenv("HEALTH_CHECK_TIMEOUT_SECONDS", "ten")
    assert cli.main(["health", "staging"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "HEALTH_CHECK_TIMEOUT_SECONDS must be an integer, got 'ten'" in error

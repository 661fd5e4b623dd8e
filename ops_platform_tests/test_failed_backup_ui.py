"""A backup that fails verification is red everywhere a person looks. ``make dev`` with
DATABASE_URL at a deliberately empty database; Materialize ``database_backup`` on the asset page
in Chromium: the run fails, the asset page says "Failed", the partition view counts it failed,
the check ``not_empty`` failed, ``backups list`` says it is not verified, and retention does not
follow. Then the dangerous case: a good backup, the tables dropped, a second backup from the
asset page: the older green materialization must not make the new failure look green."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from ops_platform_tests.conftest import psql
from ops_platform_tests.dev_server import (
    CLI,
    copy_checkout,
    latest_check,
    materializations,
    materialize_from_the_asset_page,
    open_browser,
    partition_statuses,
    run_status,
    runs,
    screenshot_dir,
    sensor_ticks,
    shell_without_settings,
    start_make_dev,
)
from ops_platform_tests.waiting import wait_for
from ops_platform_tests.webserver import LAUNCH_RUN

# make dev backs up the one demo database: never beside another make dev test session.
pytestmark = pytest.mark.xdist_group("make_dev")

EMPTY = f"ops_test_empty_{os.getpid()}"


@pytest.fixture(scope="module")
def empty_database_platform(tmp_path_factory):
    psql(f'DROP DATABASE IF EXISTS "{EMPTY}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{EMPTY}"')
    root = tmp_path_factory.mktemp("failed_backup")
    checkout = copy_checkout(root / "ops-checkout")
    env = shell_without_settings(DATABASE_URL=f"postgresql://postgres@127.0.0.1:5432/{EMPTY}")
    server = start_make_dev(checkout, env, root / "make-dev.log")
    try:
        yield server
    finally:
        server.stop()
        psql(f'DROP DATABASE IF EXISTS "{EMPTY}" WITH (FORCE)')


def finished(server, run_id: str, timeout: float = 240) -> str:
    wait_for(lambda: run_status(server, run_id) in ("SUCCESS", "FAILURE", "CANCELED"), timeout,
             f"run {run_id} did not finish", interval=1)
    return run_status(server, run_id)


def backup_from_the_asset_page(server, page) -> dict:
    short_id = materialize_from_the_asset_page(page, server.url)
    return wait_for(lambda: next((r for r in runs(server) if r["runId"].startswith(short_id)), None), 30,
                    "the launched run is not in the run list", interval=1)


def shows_failed(server, page, run: dict, shots, name: str) -> dict[str, str]:
    """The run page, the asset page, the partition view and the checks tab, as a person reads them."""
    seen = {}
    page.goto(f"{server.url}/runs/{run['runId']}")
    page.get_by_text("Failure").first.wait_for(timeout=60_000)
    page.get_by_text("Errored (1)").first.wait_for(timeout=60_000)
    page.get_by_text("not_empty").first.wait_for(timeout=60_000)
    page.screenshot(path=str(shots / f"{name}_run.png"))
    seen["run"] = page.inner_text("body")
    page.goto(f"{server.url}/assets/database_backup")
    page.get_by_text("Failed in").first.wait_for(timeout=60_000)
    page.screenshot(path=str(shots / f"{name}_asset_page.png"))
    seen["asset"] = page.inner_text("body")
    assert re.search(rf"Latest materialization\s+Failed in\s+{run['runId'][:8]}", seen["asset"]), seen["asset"]
    page.goto(f"{server.url}/assets/database_backup?view=partitions&partition=development")
    page.get_by_text("Failed (1)").first.wait_for(timeout=60_000)
    page.get_by_text(re.compile(r"Run \w{8} failed, and did not materialize this asset")).first.wait_for(
        timeout=60_000)
    page.screenshot(path=str(shots / f"{name}_partitions.png"))
    seen["partitions"] = page.inner_text("body")
    page.goto(f"{server.url}/assets/database_backup?view=checks")
    page.get_by_text("not_empty").first.wait_for(timeout=60_000)
    page.screenshot(path=str(shots / f"{name}_checks.png"))
    seen["checks"] = page.inner_text("body")
    return seen


def test_an_empty_database_backup_is_failed_everywhere(empty_database_platform, tmp_path):
    from playwright.sync_api import sync_playwright

    server = empty_database_platform
    shots = screenshot_dir(tmp_path)
    with sync_playwright() as playwright:
        browser, page = open_browser(playwright)
        run = backup_from_the_asset_page(server, page)
        assert finished(server, run["runId"]) == "FAILURE"
        seen = shows_failed(server, page, run, shots, "empty_database_backup")
        browser.close()

    assert re.search(r"not_empty\s+not_empty\s+Failed", seen["checks"]), seen["checks"]
    assert "Materialized (0)" in seen["partitions"] and "Failed (1)" in seen["partitions"]
    statuses = partition_statuses(server, "database_backup")
    assert statuses["failedPartitions"] == ["development"] and statuses["materializedPartitions"] == []
    assert materializations(server, "database_backup") == []
    assert latest_check(server, "not_empty") == {"runId": run["runId"], "status": "FAILED"}

    listing = subprocess.run([CLI, "backups", "list", "development", "--json"], check=False, cwd=server.checkout,
                             env=server.env, capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    [entry] = json.loads(listing.stdout)
    assert entry["verified"] is False

    failed_at = time.time()
    wait_for(lambda: any(t > failed_at for t in sensor_ticks(server, "retention_automation_sensor")),
             120, "retention_automation_sensor did not tick after the failed backup", interval=3)
    assert not [r for r in runs(server) if "backup_retention" in r["assets"]]


def test_a_failure_after_a_good_backup_is_not_green(empty_database_platform, tmp_path):
    from playwright.sync_api import sync_playwright

    server = empty_database_platform
    shots = screenshot_dir(tmp_path)
    psql("CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 100)", database=EMPTY)
    params = {"selector": {"repositoryLocationName": "ops_platform", "repositoryName": "__repository__",
                           "jobName": "__ASSET_JOB", "assetSelection": [{"path": ["database_backup"]}]},
              "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "development"}]}}
    launched = server.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    assert finished(server, launched["run"]["runId"]) == "SUCCESS"
    assert partition_statuses(server, "database_backup")["materializedPartitions"] == ["development"]

    psql("DROP TABLE orders", database=EMPTY)
    with sync_playwright() as playwright:
        browser, page = open_browser(playwright)
        run = backup_from_the_asset_page(server, page)
        assert finished(server, run["runId"]) == "FAILURE"
        seen = shows_failed(server, page, run, shots, "failure_after_a_good_backup")
        browser.close()

    assert "Failed (1)" in seen["partitions"] and "Materialized (0)" in seen["partitions"]
    statuses = partition_statuses(server, "database_backup")
    assert statuses["failedPartitions"] == ["development"] and statuses["materializedPartitions"] == []
    assert latest_check(server, "not_empty") == {"runId": run["runId"], "status": "FAILED"}

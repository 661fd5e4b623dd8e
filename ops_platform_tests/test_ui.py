"""The real dagster-webserver: lineage (database -> database_backup -> checks) and a CLI-run
backup in the run history, over /graphql and in a real Chromium."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from ops_platform_tests.webserver import BIN, CHROMIUM, CHROMIUM_FLAGS, graphql, serve


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    """A DAGSTER_HOME with one backup and one health sweep made from the CLI, and a backup queued
    behind a database_stats run (records no process runs, explained by queued_run_sensor), served
    by dagster-webserver."""
    from ops_platform_tests.conftest import reset_database

    reset_database("development")
    home = tmp_path_factory.mktemp("ui_home")
    env = dict(os.environ, DAGSTER_HOME=str(home), BACKUP_DIR=str(home / "backups"))
    env.pop("AWS_S3_BUCKET", None)
    backup = subprocess.run([str(BIN / "ops-platform"), "backup", "development"], env=env,
                            capture_output=True, text=True, timeout=180)
    assert backup.returncode == 0, backup.stderr
    run_id = backup.stdout.strip().splitlines()[-1].split()[-1]
    health = subprocess.run([str(BIN / "ops-platform"), "health", "development"], env=env,
                            capture_output=True, text=True, timeout=180)
    assert health.returncode == 0, health.stderr
    queued = _queue_a_backup_behind_a_snapshot(home)
    for url in serve(env):
        yield url, run_id, queued


def _queue_a_backup_behind_a_snapshot(home: Path) -> dict[str, str]:
    import dagster as dg

    from ops_platform.defs.run_queue import queued_run_sensor
    from ops_platform_tests.test_run_queue import add_run

    with dg.DagsterInstance.local_temp(tempdir=str(home)) as instance:
        snapshot = add_run(instance, "database_stats_job", dg.DagsterRunStatus.STARTED, "development")
        backup = add_run(instance, "__ASSET_JOB", dg.DagsterRunStatus.QUEUED, "development")
        queued_run_sensor(dg.build_sensor_context(instance=instance))
    return {"snapshot": snapshot, "backup": backup}


def test_lineage_and_checks_over_graphql(webserver):
    url, _, _ = webserver
    data = graphql(url, """{ assetNodes { assetKey { path } groupName isExecutable
        dependencyKeys { path } assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }""")
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert nodes["database"]["isExecutable"] is False
    backup = nodes["database_backup"]
    assert {"/".join(d["path"]) for d in backup["dependencyKeys"]} == {"database"}
    checks = {c["name"]: c["blocking"] for c in backup["assetChecksOrError"]["checks"]}
    assert checks["decodes_completely"] is True and checks["not_empty"] is True
    assert "size_not_dropped" in checks


def test_cli_backup_is_in_the_run_history(webserver):
    url, run_id, _ = webserver
    data = graphql(url, "{ runsOrError { ... on Runs { results { runId jobName status } } } }")
    runs = {r["runId"]: r for r in data["runsOrError"]["results"]}
    assert runs[run_id]["jobName"] == "backup_job" and runs[run_id]["status"] == "SUCCESS"


def test_lineage_renders_in_chromium(webserver, tmp_path):
    from playwright.sync_api import sync_playwright

    url, run_id, _ = webserver
    screenshot = Path(os.environ.get("OPS_UI_SCREENSHOT_DIR", tmp_path)) / "database_backup_lineage.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/assets/database_backup?view=lineage&lineageScope=neighbors")
        skip = page.get_by_role("button", name="Skip")
        skip.click(timeout=30_000)
        page.get_by_text("database_backup").first.wait_for(timeout=30_000)
        page.screenshot(path=str(screenshot))
        text = page.inner_text("body")
        page.goto(f"{url}/assets/database_backup?view=checks")
        page.get_by_text("decodes_completely").first.wait_for(timeout=30_000)
        checks = page.inner_text("body")
        page.goto(f"{url}/runs/{run_id}")
        page.get_by_text("backup_job").first.wait_for(timeout=30_000)
        browser.close()
    assert "database_backup" in text and "database" in text and "backup_retention" in text
    assert "Passed" in checks
    assert screenshot.stat().st_size > 10_000


def test_health_status_sizes_and_a_queued_run_read_well_in_chromium(webserver, tmp_path):
    """The Catalog shows a health component's state (not "–"), its page the status and reason; the
    backup's size reads as a size beside the raw number; a queued run says in the Runs list what it
    waits for."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    url, _, queued = webserver
    folder = Path(os.environ.get("OPS_UI_SCREENSHOT_DIR", tmp_path))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(f"{url}/assets?asset-selection=key:development_postgres")
        page.locator("a", has_text="development_postgres").first.wait_for(timeout=60_000)
        with contextlib.suppress(PlaywrightTimeout):  # the first visit's welcome dialog, if this browser gets it
            page.get_by_role("button", name="Skip").click(timeout=5000)
        page.get_by_text("Materialized", exact=True).first.wait_for(timeout=30_000)
        catalog = page.inner_text("body")
        page.screenshot(path=str(folder / "catalog_health_status.png"))

        page.goto(f"{url}/assets/development_postgres")
        page.get_by_text("SELECT 1 succeeded").first.wait_for(timeout=60_000)
        component = page.inner_text("body")

        page.goto(f"{url}/assets/database_backup?partition=development")
        page.get_by_text("stored_bytes").first.wait_for(timeout=60_000)
        backup = page.inner_text("body")

        page.goto(f"{url}/runs")
        page.get_by_text(f"waiting_for: database_stats_job run {queued['snapshot'][:8]}").first.wait_for(
            timeout=60_000)
        page.screenshot(path=str(folder / "queued_run_says_why.png"))
        page.get_by_text("waiting_for: database_stats_job").first.hover()
        page.get_by_text("(one run per environment at a time)").last.wait_for(timeout=30_000)  # the tooltip
        browser.close()
    assert "development_postgres" in catalog and "Materialized" in catalog
    assert "healthy" in component and "latency_ms" in component
    rows = [line.strip() for line in backup.splitlines() if line.strip()]  # label, time, value
    for label in ("stored", "raw"):
        assert re.fullmatch(r"\d+(\.\d)? KB", rows[rows.index(label) + 2]), rows[rows.index(label):][:3]
    assert rows[rows.index("stored_bytes") + 2].isdigit()

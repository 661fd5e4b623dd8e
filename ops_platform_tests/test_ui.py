"""The real dagster-webserver: lineage (database -> database_backup -> checks) and a CLI-run
backup in the run history, over /graphql and in a real Chromium."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ops_platform_tests.webserver import BIN, CHROMIUM, CHROMIUM_FLAGS, graphql, serve


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    """A DAGSTER_HOME with one backup made from the CLI, served by dagster-webserver."""
    from ops_platform_tests.conftest import reset_database

    reset_database("development")
    home = tmp_path_factory.mktemp("ui_home")
    env = dict(os.environ, DAGSTER_HOME=str(home), BACKUP_DIR=str(home / "backups"))
    env.pop("AWS_S3_BUCKET", None)
    backup = subprocess.run([str(BIN / "ops-platform"), "backup", "development"], env=env,
                            capture_output=True, text=True, timeout=180)
    assert backup.returncode == 0, backup.stderr
    run_id = backup.stdout.strip().splitlines()[-1].split()[-1]
    for url in serve(env):
        yield url, run_id


def test_lineage_and_checks_over_graphql(webserver):
    url, _ = webserver
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
    url, run_id = webserver
    data = graphql(url, "{ runsOrError { ... on Runs { results { runId jobName status } } } }")
    runs = {r["runId"]: r for r in data["runsOrError"]["results"]}
    assert runs[run_id]["jobName"] == "backup_job" and runs[run_id]["status"] == "SUCCESS"


def test_lineage_renders_in_chromium(webserver, tmp_path):
    from playwright.sync_api import sync_playwright

    url, run_id = webserver
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

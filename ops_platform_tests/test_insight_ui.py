"""The insight assets in a real dagster-webserver: lineage over /graphql, and in Chromium the
database_stats plots (over several materializations) and the weekly report's Markdown.
Screenshots go to OPS_UI_SCREENSHOT_DIR when it is set."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import httpx
import pytest

from ops_platform.defs.resources import OpsSlackResource
from ops_platform_tests.conftest import TEST_DATABASES, psql, reset_database
from ops_platform_tests.insight_helpers import run_job, run_report, run_stats
from ops_platform_tests.webserver import CHROMIUM, CHROMIUM_FLAGS, serve

@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    """A DAGSTER_HOME with three database_stats snapshots of a growing database and one weekly
    report, served by dagster-webserver."""
    reset_database("production")
    home = tmp_path_factory.mktemp("insight_ui_home")
    with dg.DagsterInstance.local_temp(tempdir=str(home)) as instance:
        for _ in range(3):
            assert run_stats(instance).success
            psql("INSERT INTO orders (customer_id, total, note) SELECT 1, 1, repeat(md5(g::text), 10) "
                 "FROM generate_series(1, 3000) g", database=TEST_DATABASES["production"])
        assert run_job(instance, "insight_history_job", "production").success
        assert run_report(instance, "weekly", slack=OpsSlackResource()).success
    yield from serve(dict(os.environ, DAGSTER_HOME=str(home)))


def test_insight_lineage_over_graphql(webserver):
    response = httpx.post(f"{webserver}/graphql", timeout=60, json={"query": """{ assetNodes {
        assetKey { path } groupName dependencyKeys { path } } }"""})
    nodes = {"/".join(n["assetKey"]["path"]): n for n in response.json()["data"]["assetNodes"]}
    deps = {key: {"/".join(d["path"]) for d in node["dependencyKeys"]} for key, node in nodes.items()}
    assert deps["database_stats"] == {"database"}
    assert deps["backup_history"] == {"database_backup"}
    assert {"production_api", "production_postgres", "staging_api"} <= deps["uptime"]
    # The report reads its sources (and brings stale inputs up to date itself), so the UI does not
    # ask "Are you sure?" below insight assets not materialized yet.
    assert {"database", "production_api", "production_postgres"} <= deps["ops_report"]
    assert not deps["ops_report"] & {"database_stats", "uptime", "backup_history", "database_backup"}
    assert {nodes[key]["groupName"] for key in ("database_stats", "uptime", "backup_history", "ops_report")} == {
        "insight"}


def _screenshot_dir(tmp_path) -> Path:
    folder = Path(os.environ.get("OPS_UI_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_database_stats_plots_and_the_report_markdown_in_chromium(webserver, tmp_path):
    from playwright.sync_api import sync_playwright

    folder = _screenshot_dir(tmp_path)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(f"{webserver}/assets/database_stats")
        page.get_by_role("button", name="Skip").click(timeout=30_000)  # the first visit's welcome dialog
        page.get_by_text("Latest materialization").first.wait_for(timeout=60_000)
        page.get_by_role("button", name="Plots").click(timeout=30_000)
        page.get_by_role("button", name="Events").last.click(timeout=30_000)  # over time, not by partition
        page.get_by_text("database_size_bytes", exact=True).first.wait_for(timeout=30_000)
        page.wait_for_timeout(1500)
        plots = folder / "database_stats_plots.png"
        page.screenshot(path=str(plots), full_page=True)
        body = page.inner_text("body")
        charts = page.locator("canvas").count()

        page.goto(f"{webserver}/assets/ops_report?view=events")
        page.get_by_text("[Show Markdown]").first.click(timeout=60_000)
        dialog = page.get_by_role("dialog")
        dialog.get_by_role("heading", name="Weekly operations report", exact=False).wait_for(timeout=30_000)
        headings = [heading.inner_text() for heading in dialog.locator("h1, h2, h3").all()]
        tables = dialog.locator("table").count()
        markdown = folder / "ops_report_markdown.png"
        page.screenshot(path=str(markdown))
        browser.close()
    for metric in ("database_size_bytes", "connections_percent", "xid_age", "cache_hit_percent"):
        assert metric in body, metric
    assert charts >= 10
    assert headings[0].startswith("Weekly operations report, ")
    assert {"production", "Uptime and incidents", "Backups and drills", "Database", "Slowest statements"} <= set(
        headings)
    assert tables >= 1  # the biggest tables, rendered as a table
    assert plots.stat().st_size > 20_000 and markdown.stat().st_size > 20_000

"""The first hour, as a newcomer lives it: the project in a folder of another name, ``make dev``
with no settings at all (the demo database, dagster-webserver and dagster-daemon on a free port),
then Materialize ``database_backup`` for development on the asset page in Chromium. It ends green
with its checks passed and retention runs after it; the CLI, run from the checkout with no
settings, lists the same backup; ``backup_job`` (retention included) does not get a second
retention; ``ops_report`` materializes without asking and has the backup and the sweep; and after
two minutes ``make dev``'s log has no repeated warning, no routine lines and one line per run
started and finished."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter

import pytest

from ops_platform_tests.dev_server import (
    CLI,
    code_location_status,
    copy_checkout,
    dismiss_welcome,
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

LOG_SECONDS = 120
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} - ")


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory):
    root = tmp_path_factory.mktemp("first_hour")
    checkout = copy_checkout(root / "newcomer-shop-ops")
    server = start_make_dev(checkout, shell_without_settings(), root / "make-dev.log")
    try:
        yield server
    finally:
        server.stop()


def retention_runs(server) -> list[dict]:
    """Runs launched for retention by asset selection (the automation sensor's); a backup_job run
    has no asset selection and is found by its materializations instead."""
    return [run for run in runs(server) if "backup_retention" in run["assets"]]


def test_materialize_from_the_asset_page_ends_green_and_retention_follows(newcomer, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = screenshot_dir(tmp_path)
    assert "development is the demo database ops_platform_demo" in newcomer.log_text()
    assert code_location_status(newcomer) == ("LOADED", "RepositoryLocation"), newcomer.log_text()[-4000:]
    with sync_playwright() as playwright:
        browser, page = open_browser(playwright)
        short_id = materialize_from_the_asset_page(page, newcomer.url)
        run = wait_for(lambda: next((r for r in runs(newcomer) if r["runId"].startswith(short_id)), None), 30,
                       "the launched run is not in the run list", interval=1)
        assert run["assets"] == ["database_backup"] and run["jobName"] == "__ASSET_JOB"
        wait_for(lambda: run_status(newcomer, run["runId"]) in ("SUCCESS", "FAILURE", "CANCELED"), 240,
                 "the backup run did not finish", interval=1)
        assert run_status(newcomer, run["runId"]) == "SUCCESS", newcomer.log_text()[-4000:]

        page.goto(f"{newcomer.url}/runs/{run['runId']}")
        page.get_by_text("Success").first.wait_for(timeout=60_000)
        page.get_by_text("Succeeded (1)").first.wait_for(timeout=60_000)
        page.screenshot(path=str(shots / "first_hour_backup_run.png"))

        backup_id = next(entry["text"] for entry in materializations(newcomer, "database_backup")[0]["metadataEntries"]
                         if entry["label"] == "backup_id")
        page.goto(f"{newcomer.url}/assets/database_backup")
        page.get_by_text(backup_id).first.wait_for(timeout=60_000)
        page.get_by_text("Latest check results").wait_for(timeout=30_000)
        overview = page.inner_text("body")
        page.screenshot(path=str(shots / "first_hour_database_backup.png"))

        page.goto(f"{newcomer.url}/assets/database_backup?view=checks")
        page.get_by_text("not_empty").first.wait_for(timeout=30_000)
        checks_text = page.inner_text("body")
        page.screenshot(path=str(shots / "first_hour_database_backup_checks.png"))

        # Retention follows the backup launched on its own: retention_automation_sensor requests it.
        retention = wait_for(lambda: retention_runs(newcomer), 240, "no retention run followed the backup launched from the asset page", interval=1)
        wait_for(lambda: run_status(newcomer, retention[0]["runId"]) == "SUCCESS", 180,
                 "the retention run after the backup did not succeed", interval=1)
        page.goto(f"{newcomer.url}/assets/backup_retention?view=partitions&partition=development")
        page.get_by_text("oldest_kept").first.wait_for(timeout=60_000)
        retention_text = page.inner_text("body")
        page.screenshot(path=str(shots / "first_hour_backup_retention.png"))
        browser.close()

    assert "Failed" not in overview
    assert "Failed" not in checks_text and checks_text.count("Succeeded") >= 3
    for check in ("decodes_completely", "not_empty", "size_not_dropped"):
        assert latest_check(newcomer, check) == {"runId": run["runId"], "status": "SUCCEEDED"}
    assert partition_statuses(newcomer, "database_backup")["materializedPartitions"] == ["development"]
    assert partition_statuses(newcomer, "backup_retention")["materializedPartitions"] == ["development"]
    assert retention[0]["tags"].get("dagster/sensor_name") == "retention_automation_sensor"
    assert retention[0]["assets"] == ["backup_retention"]
    assert "dagster/max_runtime_seconds" in retention[0]["tags"]
    assert re.search(rf"oldest_kept\s+{backup_id}", retention_text), retention_text


def test_the_cli_in_the_checkout_sees_the_backup_the_ui_made(newcomer):
    """No settings, no DAGSTER_HOME: the CLI's defaults are make dev's (README: Commands)."""
    listing = subprocess.run([CLI, "backups", "list", "development", "--json"], check=False, cwd=newcomer.checkout,
                             env=shell_without_settings(), capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    made = {entry["text"] for m in materializations(newcomer, "database_backup")
            for entry in m["metadataEntries"] if entry["label"] == "backup_id"}
    entries = json.loads(listing.stdout)
    assert {entry["id"] for entry in entries} == made and all(entry["verified"] for entry in entries)


def test_backup_job_runs_retention_once(newcomer):
    """backup_job includes retention; the automation sensor must not add a second run of it."""
    before = {run["runId"] for run in retention_runs(newcomer)}
    params = {"selector": {"repositoryLocationName": "ops_platform", "repositoryName": "__repository__",
                           "jobName": "backup_job"},
              "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "development"}]}}
    launched = newcomer.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    wait_for(lambda: run_status(newcomer, run_id) in ("SUCCESS", "FAILURE", "CANCELED"), 240,
             "backup_job did not finish", interval=1)
    assert run_status(newcomer, run_id) == "SUCCESS"
    finished = time.time()
    wait_for(lambda: any(t > finished for t in sensor_ticks(newcomer, "retention_automation_sensor")),
             120, "retention_automation_sensor did not tick after backup_job", interval=3)
    assert [m["runId"] for m in materializations(newcomer, "backup_retention")].count(run_id) == 1
    assert [run for run in retention_runs(newcomer) if run["runId"] not in before] == []


REPORT = """query { assetOrError(assetKey: {path: ["ops_report"]}) { ... on Asset {
    assetMaterializations(limit: 1) { runId metadataEntries { label ... on MarkdownMetadataEntry { mdStr } } } } } }"""


def test_the_report_on_day_one_has_the_backup_and_the_sweep_and_asks_nothing(newcomer, tmp_path):
    """Hours before insight_history_job first runs: Materialize on ops_report launches at once (no
    "Are you sure? ... have not been materialized") and the report has the backup and the sweep."""
    from playwright.sync_api import sync_playwright

    sweep = subprocess.run([CLI, "health", "development"], check=False, cwd=newcomer.checkout,
                           env=shell_without_settings(), capture_output=True, text=True, timeout=180)
    assert sweep.returncode == 0, sweep.stderr
    with sync_playwright() as playwright:
        browser, page = open_browser(playwright)
        page.goto(f"{newcomer.url}/assets/ops_report")
        dismiss_welcome(page)
        page.locator("button", has_text=re.compile(r"^Materialize$")).first.click(timeout=60_000)
        launched = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}")).or_(page.get_by_text("Are you sure?"))
        launched.first.wait_for(timeout=60_000)
        shown = launched.first.inner_text()
        page.screenshot(path=str(screenshot_dir(tmp_path) / "first_hour_ops_report_launch.png"))
        browser.close()
    assert "Are you sure?" not in shown, "the UI asked before materializing ops_report"
    short_id = re.search(r"Launched run ([0-9a-f]{8})", shown).group(1)
    run = wait_for(lambda: next((r for r in all_runs(newcomer) if r["runId"].startswith(short_id)), None), 30,
                   "the report run is not in the run list", interval=1)
    wait_for(lambda: run_status(newcomer, run["runId"]) in ("SUCCESS", "FAILURE", "CANCELED"), 240,
             "the report run did not finish", interval=1)
    assert run_status(newcomer, run["runId"]) == "SUCCESS", newcomer.log_text()[-4000:]
    [materialization] = newcomer.graphql(REPORT)["assetOrError"]["assetMaterializations"]
    markdown = next(entry["mdStr"] for entry in materialization["metadataEntries"] if entry["label"] == "report")
    backup_id = next(entry["text"] for entry in materializations(newcomer, "database_backup")[0]["metadataEntries"]
                     if entry["label"] == "backup_id")
    assert "No backup history." not in markdown and "No health-check history." not in markdown, markdown
    assert "| postgres |" in markdown and f"Newest verified backup: `{backup_id}`" in markdown, markdown
    assert "never been computed" not in markdown and "never been taken" not in markdown


def all_runs(server) -> list[dict]:
    return server.graphql("""{ runsOrError { ... on Runs { results { runId jobName status
        tags { key value } } } } }""")["runsOrError"]["results"]


def test_make_dev_log_has_no_repeated_warning(newcomer):
    remaining = LOG_SECONDS - (time.monotonic() - newcomer.started)
    if remaining > 0:
        time.sleep(remaining)
    text = newcomer.log_text()
    lines = text.splitlines()
    assert "does not match the name" not in text
    assert "will not be used" not in text
    assert "dg dev" not in text and "superseded" not in text.lower()
    assert "Traceback" not in text
    assert text.count("No heartbeat received") <= 1  # the daemon must not run a code server of its own
    warnings = Counter(TIMESTAMP.sub("", line) for line in lines if "WARNING" in line or "Warning:" in line)
    repeated = {line: count for line, count in warnings.items() if count > 1}
    assert not repeated, repeated
    assert "ops_platform dev: the UI is at http://127.0.0.1:" in text


def test_make_dev_log_is_what_a_person_must_read(newcomer):
    """No routine daemon lines and no run events; one line per run started and one per run finished
    (the daemon's runs: the CLI's run in its own process); Slack's absence said once, at start-up."""
    text = newcomer.log_text()
    assert "Checking for new runs for sensor" not in text
    assert not re.search(r" - (INFO|DEBUG) - ", text), [line for line in text.splitlines()
                                                         if re.search(r" - (INFO|DEBUG) - ", line)][:10]
    finished = [run for run in all_runs(newcomer) if run["status"] in ("SUCCESS", "FAILURE", "CANCELED")
                and {"key": "ops_platform/launched_by", "value": "cli"} not in run["tags"]]
    assert len(finished) >= 3  # the backup, its retention, backup_job (and the report)
    for run in finished:
        label = f"run {run['runId'][:8]} {run['jobName']}"
        assert text.count(f"{label} started") == 1, label
        assert len(re.findall(rf"{label} (succeeded|failed|was canceled)", text)) == 1, label
    assert text.count("Slack is not configured") == 1
    assert len(text.splitlines()) < 60, text

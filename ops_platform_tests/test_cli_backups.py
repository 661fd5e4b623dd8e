"""`ops-platform backup` and `ops-platform backups list`, run as the operator would."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ops_platform.lib.formatting import human_bytes
from ops_platform_tests.conftest import DB_PASSWORD

CLI = str(Path(sys.executable).parent / "ops-platform")


@pytest.fixture
def cli_env(tmp_path, moto_server, s3_bucket):
    env = dict(os.environ)
    env.update({"DAGSTER_HOME": str(tmp_path / "home"), "BACKUP_DIR": str(tmp_path / "backups"),
                "AWS_ENDPOINT_URL_S3": moto_server})
    return env


def run_cli(env, *args, timeout=180):
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, code, *fragments):
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ops-platform: error:")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_backup_then_list_records_the_run_on_the_instance(databases, cli_env):
    first = run_cli(cli_env, "backup", "development")
    assert first.returncode == 0, first.stderr
    assert "verified" in first.stdout and "development-" in first.stdout
    listing = run_cli(cli_env, "backups", "list", "development", "--json")
    assert listing.returncode == 0, listing.stderr
    entries = json.loads(listing.stdout)
    assert len(entries) == 1
    entry = entries[0]
    for field in ("id", "environment", "created_at", "size_bytes", "sha256", "verified", "locations"):
        assert field in entry
    assert entry["verified"] is True and entry["environment"] == "development"
    assert entry["created_at"].endswith("Z")
    assert any(loc.startswith("s3://") for loc in entry["locations"])
    assert entry["id"] in first.stdout

    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
    assert [run.job_name for run in runs] == ["backup_job"]
    assert runs[0].tags["dagster/partition"] == "development"
    assert runs[0].tags["ops_platform/launched_by"] == "cli"
    assert runs[0].is_success

    table = run_cli(cli_env, "backups", "list", "development")
    size = human_bytes(entry["size_bytes"])
    assert table.returncode == 0 and entry["id"] in table.stdout and f"local {size}, s3 {size}" in table.stdout


def test_list_is_newest_first(databases, cli_env):
    import time

    assert run_cli(cli_env, "backup", "development").returncode == 0
    time.sleep(1.1)
    assert run_cli(cli_env, "backup", "development").returncode == 0
    entries = json.loads(run_cli(cli_env, "backups", "list", "development", "--json").stdout)
    assert len(entries) == 2 and entries[0]["created_at"] > entries[1]["created_at"]


def test_list_shows_real_sizes_and_verify_finds_the_corrupt_copies(databases, cli_env):
    """The issue's case: the newest artifact byte-flipped, the second truncated to half."""
    import time

    assert run_cli(cli_env, "backup", "development").returncode == 0
    time.sleep(1.1)
    assert run_cli(cli_env, "backup", "development").returncode == 0
    newest, second = json.loads(run_cli(cli_env, "backups", "list", "development", "--json").stdout)
    folder = Path(cli_env["BACKUP_DIR"]) / "development"
    flipped = folder / f"{newest['id']}.dump.zst"
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    truncated = folder / f"{second['id']}.dump.zst"
    half = second["size_bytes"] // 2
    truncated.write_bytes(truncated.read_bytes()[:half])

    table = run_cli(cli_env, "backups", "list", "development")
    assert table.returncode == 0, table.stderr
    header, newest_line, second_line = table.stdout.splitlines()
    assert "SIZE OF THE ARTIFACT IN EACH LOCATION (manifest not included)" in header
    size = human_bytes(second["size_bytes"])
    assert f"local {human_bytes(half)} SIZE MISMATCH (manifest: {size}), s3 {size}" in second_line
    assert " BAD COPY " in second_line and " yes " in newest_line  # a flipped byte needs --verify
    assert f"size {half} bytes differs from the manifest's {second['size_bytes']}" in table.stderr

    verify = run_cli(cli_env, "backups", "list", "development", "--verify")
    assert verify.returncode == 1
    _, newest_line, second_line = verify.stdout.splitlines()
    size = human_bytes(newest["size_bytes"])
    assert f"local {size} CORRUPT, s3 {size} ok" in newest_line and " BAD COPY " in newest_line
    assert "SIZE MISMATCH" in second_line and second_line.endswith(" ok")
    assert verify.stderr.strip().splitlines()[-1] == (
        f"ops-platform: error: 2 copies did not pass the check against their manifest: "
        f"{newest['id']} (local), {second['id']} (local)")
    assert "Traceback" not in verify.stderr

    as_json = run_cli(cli_env, "backups", "list", "development", "--verify", "--json")
    assert as_json.returncode == 1
    entries = json.loads(as_json.stdout)
    assert [[(c["store"], c["check"], c["size_bytes"]) for c in e["copies"]] for e in entries] == [
        [("local", "corrupt", newest["size_bytes"]), ("s3", "ok", newest["size_bytes"])],
        [("local", "corrupt", half), ("s3", "ok", second["size_bytes"])]]
    assert [e["intact"] for e in entries] == [False, False]
    for field in ("id", "environment", "created_at", "size_bytes", "sha256", "verified", "locations"):
        assert all(field in e for e in entries)


def test_verify_exits_1_when_an_s3_copy_cannot_be_checked_and_keeps_its_location(databases, cli_env, silent_listener):
    """S3 refusing connections, S3 that accepts and never answers, and an S3 object deleted: the
    copy is shown as not checked (or missing) with the reason, its s3:// location stays, and
    --verify exits 1."""
    import time

    assert run_cli(cli_env, "backup", "development").returncode == 0
    (entry,) = json.loads(run_cli(cli_env, "backups", "list", "development", "--json").stdout)
    (s3_location,) = [location for location in entry["locations"] if location.startswith("s3://")]
    from ops_platform_tests.conftest import free_port

    for endpoint in (f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{silent_listener.port}"):  # refusing, silent
        started = time.monotonic()
        down = {**cli_env, "AWS_ENDPOINT_URL_S3": endpoint}
        listed = run_cli(down, "backups", "list", "development", "--json", "--verify")
        assert listed.returncode == 1 and time.monotonic() - started < 90, listed.stderr
        (entry,) = json.loads(listed.stdout)
        assert s3_location in entry["locations"]
        assert [(copy["store"], copy["check"]) for copy in entry["copies"]] == [("local", "ok"), ("s3", "error")]
        assert "not checked: could not list S3" in entry["copies"][1]["detail"]
        assert listed.stderr.strip().splitlines()[-1] == (
            f"ops-platform: error: 1 copy could not be checked: {entry['id']} (s3)")
        if endpoint.endswith(f":{silent_listener.port}"):
            continue  # the table says the same (checked once, with the refusing endpoint)
        table = run_cli(down, "backups", "list", "development")
        assert table.returncode == 0 and "s3 NOT CHECKED" in table.stdout, table.stdout

    key = s3_location.split("/", 3)[3]
    s3_bucket = __import__("ops_platform.lib.stores", fromlist=["make_s3_client"]).make_s3_client()
    s3_bucket.delete_object(Bucket=s3_location.split("/")[2], Key=key)
    missing = run_cli(cli_env, "backups", "list", "development", "--verify")
    assert missing.returncode == 1 and "s3 MISSING" in missing.stdout, missing.stdout
    assert "did not pass the check against its manifest" in missing.stderr


def test_unknown_environment_names_the_configured_ones(cli_env):
    result = run_cli(cli_env, "backup", "prod")
    assert_one_line_error(result, 2, "unknown environment 'prod'", "production, staging, development")


def test_unconfigured_environment_says_which_variable_to_set(cli_env):
    env = {k: v for k, v in cli_env.items() if k != "STAGING_DATABASE_URL"}
    result = run_cli(env, "backups", "list", "staging")
    assert_one_line_error(result, 2, "STAGING_DATABASE_URL", "configured: production, development")


def test_with_only_dagster_home_set_the_cli_sees_the_demo_development(tmp_path):
    """The CLI and `make dev` share one default (ops_platform/config.py): with no database URL set,
    development is the demo database, never "configured: none"."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL") and k != "BACKUP_DIR"}
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    listing = run_cli(env, "backups", "list", "development")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.strip() == "no backups for development"
    assert_one_line_error(run_cli(env, "backups", "list", "staging"), 2, "set STAGING_DATABASE_URL",
                          "configured: development (no database URL is set, so development is the demo database "
                          "ops_platform_demo)")


def test_missing_argument_is_a_one_line_usage_error(cli_env):
    assert_one_line_error(run_cli(cli_env, "backups", "list"), 2, "environment")


def test_unreachable_database_exits_non_zero_with_one_line(cli_env):
    env = dict(cli_env, DATABASE_URL=f"postgresql://ops_test:{DB_PASSWORD}@127.0.0.1:1/app")
    result = run_cli(env, "backup", "development")
    assert_one_line_error(result, 1, "backup of development failed at connect")
    assert DB_PASSWORD not in result.stderr + result.stdout


def test_list_with_no_backups_and_unreadable_manifest(cli_env, tmp_path):
    folder = Path(cli_env["BACKUP_DIR"]) / "development"
    folder.mkdir(parents=True)
    (folder / "development-20260101T000000Z.manifest.json").write_text("{not json")
    result = run_cli(cli_env, "backups", "list", "development", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == []
    assert "skipped unreadable manifest" in result.stderr


def test_progress_shows_on_a_terminal(databases, cli_env):
    from ops_platform_tests.backup_helpers import fill_big_table

    fill_big_table(databases["development"], rows=300_000)
    primary, secondary = pty.openpty()
    process = subprocess.Popen([CLI, "backup", "development"], env=cli_env, stdout=subprocess.PIPE,
                               stderr=secondary, text=True)
    os.close(secondary)
    terminal = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        terminal += chunk
    process.wait(timeout=180)
    os.close(primary)
    assert process.returncode == 0
    assert b"dumped" in terminal and b"MB/s" in terminal


def test_backup_refuses_while_another_backup_of_the_environment_runs(cli_env):
    import uuid

    from ops_platform_tests.dagster_private import DagsterRun, DagsterRunStatus

    home = Path(cli_env["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True, mode=0o700)  # private, as the CLI makes it (else it says it tightened it)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    run_id = str(uuid.uuid4())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_run(DagsterRun(job_name="backup_job", run_id=run_id, status=DagsterRunStatus.STARTED,
                                    tags={"dagster/partition": "development"}))
    result = run_cli(cli_env, "backup", "development")
    assert_one_line_error(result, 1, "a backup or restore of development is already running", run_id)
    assert not Path(cli_env["BACKUP_DIR"]).exists()


def test_unexpected_errors_are_one_line_without_traceback(cli_env):
    env = dict(cli_env, AWS_ENDPOINT_URL_S3="not a url")
    result = run_cli(env, "backups", "list", "development")
    assert_one_line_error(result, 1, "ValueError", "OPS_PLATFORM_DEBUG=1")

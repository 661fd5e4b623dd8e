"""`ops-platform restore` end to end, run as the operator runs it: the real console script in a
subprocess with its own DAGSTER_HOME and BACKUP_DIR, the local PostgreSQL, moto S3 and the Slack
test server. Nothing of the project is mocked.

The module makes one development and one staging backup; each test gets a fresh live database
with the backup's content plus one row written after the backup, a private copy of the backup
folder, its own S3 prefix holding the same objects, and a fresh instance."""

from __future__ import annotations

import itertools
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from ops_platform_tests.backup_helpers import fill_big_table, watch_argv
from ops_platform_tests.conftest import DB_PASSWORD, DB_USER, free_port, psql
from ops_platform_tests.restore_e2e_helpers import (
    BUCKET,
    CLI,
    PREFIX,
    ROLE_PREFIX,
    ROOT,
    ROWS,
    STEP_PREFIXES,
    Site,
    alive,
    assert_one_line_error,
    content,
    copy_s3_prefix,
    copy_tree,
    create_live,
    database_names,
    database_oid,
    descendants,
    drop_database,
    drop_databases,
    drop_roles,
    empty_bucket,
    fingerprint,
    flip_byte,
    kill_pids,
    make_env,
    quoted,
    run_sql_as,
    s3_client,
    step_lines,
    url_for,
)
from ops_platform_tests.waiting import wait_for

DEV, STAGING, PRODUCTION = PREFIX + "dev", PREFIX + "stg", PREFIX + "prod"
TARGETS = PREFIX + "target_"  # databases the tests restore into
LIVE_DATABASES = {"development": DEV, "staging": STAGING, "production": PRODUCTION}
AFTER_BACKUP = "INSERT INTO customers (email) VALUES ('written-after-the-backup@example.com');"
_prefixes = itertools.count(1)


@dataclass
class Base:
    root: Path
    dev_id: str
    staging_id: str
    dev_content: dict
    staging_content: dict


@pytest.fixture(scope="module")
def base(moto_server, tmp_path_factory):
    """Development and staging backups made once, through the CLI, locally and in S3 (prefix
    ``base``); production is configured and never backed up."""
    drop_databases()
    drop_roles()
    client = s3_client()
    client.create_bucket(Bucket=BUCKET)
    root = tmp_path_factory.mktemp("restore_cli_base")
    create_live(DEV)
    create_live(STAGING, customers=50, orders=120)
    create_live(PRODUCTION, customers=5, orders=5)
    site = Site(root / "home", root / "backups", make_env(root / "home", root / "backups", LIVE_DATABASES,
                                                           s3_prefix="base"), DEV)
    dev_id, staging_id = site.backup("development"), site.backup("staging")
    yield Base(root, dev_id, staging_id, content(DEV), content(STAGING))
    drop_databases()
    drop_roles()
    empty_bucket(client)
    client.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def site(base, tmp_path, slack_server):
    """A fresh operator's setup over the module's backups; the live development database holds
    the backup's content plus one row written after it."""
    prefix = f"t{next(_prefixes)}"
    copy_s3_prefix(s3_client(), "base", prefix)
    backup_dir = copy_tree(base.root / "backups", tmp_path / "backups")
    create_live(DEV)
    run_sql_as(DEV, AFTER_BACKUP)
    env = make_env(tmp_path / "home", backup_dir, LIVE_DATABASES, s3_prefix=prefix,
                   slack_webhook=slack_server.webhook_url)
    yield Site(tmp_path / "home", backup_dir, env, DEV)
    for name in database_names(DEV + "__") + database_names(TARGETS):
        drop_database(name)


def pre_restore_backups(site: Site) -> list[dict]:
    return [entry for entry in site.backups() if entry["kind"] == "pre-restore"]


def untouched(site: Site, before, names: list[str]) -> None:
    """The live database is the same database with the same content, and no database appeared."""
    assert fingerprint(site.live) == before
    assert database_names() == names


def work_files(site: Site) -> list[str]:
    """Files the restores left in their work folder (the decompressed archives)."""
    return sorted(str(path) for path in (site.backup_dir / ".restore").rglob("*") if path.is_file())


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert DB_PASSWORD not in text


MIGRATION = """
import os, sys
import psycopg

url = os.environ["DATABASE_URL"]
with psycopg.connect(url, autocommit=True) as connection:
    connection.execute("CREATE TABLE migrated (db text DEFAULT current_database(), url_db text)")
    connection.execute("INSERT INTO migrated (url_db) VALUES (%s)", (url.rsplit("/", 1)[1],))
with open(sys.argv[1], "a") as record:
    record.write(url.rsplit("/", 1)[1] + " " + os.environ["OPS_RESTORE_DATABASE"] + "\\n")
print("applied migration 0001_add_migrated to", url.rsplit("/", 1)[1])
"""


# ---------------------------------------------------------------- 1. over the live database


def test_restore_latest_over_the_live_database(base, site, slack_server, tmp_path):
    before = fingerprint(DEV)
    script, record = tmp_path / "migrate.py", tmp_path / "migrated.txt"
    script.write_text(MIGRATION)
    application = psycopg.connect(url_for(DEV))  # idle in a transaction, as an app's pool might be
    application.execute("SELECT count(*) FROM customers").fetchone()
    try:
        result = site.cli("restore", "latest", "development", "--yes",
                          env={"MIGRATE_COMMAND": f"{sys.executable} {script} {record}"})
        assert result.returncode == 0, result.stderr
        # The swap ended the application's session on the old database.
        with pytest.raises(psycopg.OperationalError):
            application.execute("SELECT 1")
    finally:
        application.close()

    # The migrate command ran once, against the scratch copy, with DATABASE_URL pointed there.
    url_db, restore_db = record.read_text().split()
    assert url_db == restore_db and url_db.startswith(f"{DEV}__restore_")
    stamp = url_db.rsplit("_", 1)[1]
    kept = f"{DEV}__pre_restore_{stamp}"
    # The swap: the live name holds the backup plus the migration; the old database itself
    # (same oid, the row written after the backup) is kept; no scratch database is left.
    assert database_names(DEV) == [DEV, kept]
    restored = content(DEV)
    assert restored.pop("public.migrated").startswith("1:")
    assert restored == base.dev_content
    assert psql("SELECT db || ' ' || url_db FROM migrated", database=DEV) == f"{url_db} {url_db}"
    assert fingerprint(kept) == before

    # The safety backup: a verified pre-restore backup of what was replaced, newest in the list.
    entries = site.backups()
    safety = [entry for entry in entries if entry["kind"] == "pre-restore"]
    assert len(safety) == 1 and safety[0] == entries[0] and safety[0]["verified"] is True
    manifest = json.loads((site.backup_dir / "development" / f"{safety[0]['id']}.manifest.json").read_text())
    assert manifest["table_row_counts"] == {"public.customers": 201, "public.orders": 800}
    assert f"restored {base.dev_id} into {DEV}" in result.stdout
    assert f"safety backup of the previous data: {safety[0]['id']}" in result.stdout
    assert f"kept as {kept}" in result.stdout

    # One line per step on stderr (not a terminal), in order, and nothing else.
    lines = result.stderr.strip().splitlines()
    assert [line.split(":")[0] + ":" for line in lines] == STEP_PREFIXES, result.stderr
    assert "migrate: migrate command succeeded" in result.stderr
    assert "(1 session(s) ended)" in lines[-1]
    assert work_files(site) == []

    texts = slack_server.texts()
    assert len(texts) == 2, texts
    assert "Restore started" in texts[0] and base.dev_id in texts[0]
    assert "Restore succeeded" in texts[1] and base.dev_id in texts[1] and f"{ROWS} rows" in texts[1]
    assert "steps:" in texts[1] and safety[0]["id"] in texts[1] and kept in texts[1]

    # The run on the instance, and the database asset's materialization with the restore's facts.
    runs = site.runs("restore_job")
    assert len(runs) == 1 and runs[0].is_success and runs[0].tags["dagster/partition"] == "development"
    with site.instance() as instance:
        records = instance.fetch_materializations(dg.AssetKey("database"), limit=10).records
        observations = instance.fetch_observations(dg.AssetKey("database"), limit=10).records
    assert len(records) == 1 and not observations
    materialization = records[0].asset_materialization
    assert materialization.partition == "development"
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["backup_id"] == base.dev_id and metadata["rows_verified"] == ROWS
    assert metadata["duration_seconds"] > 0 and metadata["kept_database"] == kept
    assert set(metadata["step_seconds"]) == {"resolve", "fetch", "safety_backup", "pg_restore", "migrate",
                                             "verify", "swap"}

    assert_no_secret(result.stdout, result.stderr, slack_server.all_bodies(), site.run_texts())


# ---------------------------------------------------------------- 2. into another database


def database_asset_events(site: Site) -> tuple[list, list]:
    with site.instance() as instance:
        materializations = instance.fetch_materializations(dg.AssetKey("database"), limit=10).records
        observations = instance.fetch_observations(dg.AssetKey("database"), limit=10).records
    return materializations, observations


def test_target_database_is_created_then_refused_then_replaced(base, site, slack_server):
    before, copy = fingerprint(DEV), TARGETS + "copy"
    first = site.cli("restore", base.dev_id, "development", "--target-database", copy)
    assert first.returncode == 0, first.stderr
    assert fingerprint(DEV) == before
    assert content(copy) == base.dev_content
    assert f"safety backup: skipped, {copy} does not exist yet" in first.stderr
    assert "safety backup" not in first.stdout and pre_restore_backups(site) == []
    materializations, observations = database_asset_events(site)
    assert materializations == [] and len(observations) == 1
    observed = observations[0].asset_observation
    assert observed.partition == "development" and observed.metadata["target_database"].value == copy
    assert observed.metadata["rows_verified"].value == ROWS
    assert len(slack_server.texts()) == 2

    copy_oid = database_oid(copy)
    again = site.cli("restore", base.dev_id, "development", "--target-database", copy)
    assert_one_line_error(again, 2, f"database {copy} already exists", "--replace-target")
    assert database_oid(copy) == copy_oid and len(slack_server.texts()) == 2

    run_sql_as(copy, "DELETE FROM orders WHERE id <= 10;")
    old_copy = fingerprint(copy)
    replace = ["restore", base.dev_id, "development", "--target-database", copy, "--replace-target"]
    not_allowed = site.cli(*replace, "--yes")
    assert_one_line_error(not_allowed, 2, f"refusing to replace the existing database {copy}",
                          "RESTORE_REPLACEABLE_DATABASES (none set)")
    allowed = {"RESTORE_REPLACEABLE_DATABASES": f"unrelated_*, {TARGETS}*"}
    unconfirmed = site.cli(*replace, env=allowed)
    assert_one_line_error(unconfirmed, 2, f"replacing database {copy} needs confirmation", f"to type {copy}",
                          "--yes")
    assert fingerprint(copy) == old_copy
    replaced = site.cli(*replace, "--yes", env=allowed)
    assert replaced.returncode == 0, replaced.stderr
    kept = [name for name in database_names() if name.startswith(f"{copy}__pre_restore_")]
    assert len(kept) == 1 and fingerprint(kept[0]) == old_copy
    assert f"kept as {kept[0]}" in replaced.stdout
    assert content(copy) == base.dev_content
    assert fingerprint(DEV) == before
    assert pre_restore_backups(site) == []
    materializations, observations = database_asset_events(site)
    assert materializations == [] and len(observations) == 2
    assert not [name for name in database_names(TARGETS) if "__restore_" in name]


def test_another_environments_backup_must_be_allowed_and_is_named(base, site, slack_server):
    before, names = fingerprint(DEV), database_names()
    refused = site.cli("restore", base.staging_id, "development", "--yes")
    assert_one_line_error(refused, 2, "belongs to staging", "--allow-other-environment")
    untouched(site, before, names)
    assert slack_server.texts() == [] and site.runs() == []

    target = TARGETS + "from_staging"
    allowed = site.cli("restore", base.staging_id, "development", "--allow-other-environment",
                       "--target-database", target, "--skip-migrations", env={"MIGRATE_COMMAND": "exit 3"})
    assert allowed.returncode == 0, allowed.stderr
    assert "migrate: skipped, skip_migrations was set" in allowed.stderr
    assert "the data comes from staging's backup" in allowed.stdout
    assert content(target) == base.staging_content
    assert fingerprint(DEV) == before
    started, succeeded = slack_server.texts()
    assert "from *staging*'s backup" in started and "from *staging*'s backup" in succeeded


# ---------------------------------------------------------------- 3. S3


def test_s3_unreachable_when_the_backup_is_only_there(base, site, slack_server):
    shutil.rmtree(site.backup_dir / "development")
    before, names = fingerprint(DEV), database_names()
    closed = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}"}
    for selector in ("latest", base.dev_id):
        started = time.monotonic()
        result = site.cli("restore", selector, "development", "--yes", env=closed)
        assert_one_line_error(result, 1, "S3 is unreachable", f"s3://{BUCKET}/")
        assert time.monotonic() - started < 60
    untouched(site, before, names)
    assert slack_server.texts() == [] and site.runs() == []


def test_a_restore_of_a_local_backup_while_s3_is_unreachable_says_so_on_the_terminal(base, site):
    """The local copy is enough, so the restore goes on; the operator still reads that S3 was not
    considered, on stderr, not only in the run log."""
    target = TARGETS + "s3down"
    closed = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "1"}
    result = site.cli("restore", base.dev_id, "development", "--target-database", target, env=closed)
    assert result.returncode == 0, result.stderr
    assert "warning: S3 is unreachable, only the local copy is considered" in result.stderr, result.stderr
    assert content(target) == base.dev_content


def test_latest_never_quietly_restores_an_older_backup(base, site, slack_server, moto_server):
    """A newer staging backup exists. S3 that cannot be listed, or that hangs while the newest
    backup (only there) downloads, stops the restore with exit 1 naming the newest and how to
    restore an older one on purpose; only a newest proven bad brings back the older one, and then
    the last line says so."""
    from ops_platform_testkit.s3_fault_proxy import S3FaultProxy

    newest = site.backup("staging")
    target = TARGETS + "latest"
    names = database_names()
    closed = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "1"}
    unlisted = site.cli("restore", "latest", "staging", "--target-database", target, env=closed)
    assert_one_line_error(unlisted, 1, "cannot tell which backup of staging is the newest",
                          f"ops-platform restore {newest} staging", "nothing was touched")
    assert database_names() == names and site.runs("restore_job") == []

    for name in (f"{newest}.dump.zst", f"{newest}.manifest.json"):
        (site.backup_dir / "staging" / name).unlink()
    proxy = S3FaultProxy(moto_server)
    proxy.stall_downloads = True
    try:
        stalled = site.cli("restore", "latest", "staging", "--target-database", target,
                           env={"AWS_ENDPOINT_URL_S3": proxy.url, "RESTORE_S3_STALL_SECONDS": "2"})
    finally:
        proxy.close()
    line = assert_one_line_error(stalled, 1, f"{newest} could not be fetched, so nothing was restored",
                                 "S3 sent no data for 2s", f"ops-platform restore {base.staging_id} staging")
    assert "OLDER" not in stalled.stdout + stalled.stderr and database_names() == names, line

    artifact = f"{site.env['AWS_S3_PREFIX']}/staging/{newest}.dump.zst"
    s3_client().put_object(Bucket=BUCKET, Key=artifact, Body=b"not the dump it was")
    older = site.cli("restore", "latest", "staging", "--target-database", target)
    assert older.returncode == 0, older.stderr
    assert content(target) == base.staging_content
    last = older.stdout.strip().splitlines()[-1]
    assert last == (f"WARNING: restored OLDER backup {base.staging_id}: newest {newest} does not match its "
                    "manifest"), older.stdout
    assert any(line.startswith("warning: ") and "restoring the OLDER backup" in line
               for line in older.stderr.splitlines()), older.stderr
    assert "restored OLDER backup" in slack_server.texts()[-1]


# ---------------------------------------------------------------- 4. faults


def run_failure_sensor(site: Site, run_id: str, slack_webhook: str) -> None:
    from ops_platform.defs.alerts import sensors as alert_sensors
    from ops_platform.defs.resources import OpsSlackResource

    with site.instance() as instance:
        run = instance.get_run_by_id(run_id)
        failure = next(entry for entry in instance.all_logs(run_id) if entry.dagster_event
                       and entry.dagster_event.event_type_value == "PIPELINE_FAILURE")
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_slack_sensor", dagster_instance=instance, dagster_run=run,
            dagster_event=failure.dagster_event,
            resources={"slack": OpsSlackResource(webhook_url=slack_webhook, max_retries=0)}).for_run_failure()
        alert_sensors.run_failure_slack_sensor(context)


def test_failing_migrate_command_leaves_the_live_database_untouched(base, site, slack_server):
    before, names = fingerprint(DEV), database_names()
    result = site.cli("restore", base.dev_id, "development", "--yes",
                      env={"MIGRATE_COMMAND": "echo \"migration 0042 failed: column already exists in $DATABASE_URL\" >&2; "
                                              "exit 3"})
    line = assert_one_line_error(result, 1, "failed at migrate", "exited with code 3",
                                 "migration 0042 failed", f"{DEV} was left untouched")
    assert "__restore_" in line  # it names the copy the command ran against
    untouched(site, before, names)
    assert work_files(site) == []
    assert [entry.split(":")[0] + ":" for entry in step_lines(result.stderr)] == STEP_PREFIXES[:4]

    texts = slack_server.texts()
    assert len(texts) == 2 and "Restore started" in texts[0]
    assert "Restore failed" in texts[1] and "at migrations" in texts[1] and "left untouched" in texts[1]
    assert "migration 0042 failed" in texts[1]
    (run,) = site.runs("restore_job")
    assert run.is_failure and run.tags.get("ops_platform/alerted") == "true"
    run_failure_sensor(site, run.run_id, slack_server.webhook_url)
    assert len(slack_server.texts()) == 2  # the run-failure sensor does not post it again
    assert_no_secret(result.stderr, slack_server.all_bodies(), site.run_texts())


def test_a_wiped_database_can_be_restored(base, site, slack_server):
    """The disaster a restore is for: every table dropped. The safety backup of what is there
    (nothing) must not stop the restore."""
    run_sql_as(DEV, "DROP TABLE orders; DROP TABLE customers;")
    result = site.cli("restore", "latest", "development", "--yes")
    assert result.returncode == 0, result.stderr
    assert content(DEV) == base.dev_content


@pytest.fixture
def limited_site(base, tmp_path, slack_server):
    """An environment whose role cannot create databases and owns its database."""
    role, database = ROLE_PREFIX + "nocreate", PREFIX + "limited"
    psql(f"DROP ROLE IF EXISTS {quoted(role)}")
    psql(f"CREATE ROLE {quoted(role)} LOGIN NOCREATEDB PASSWORD '{DB_PASSWORD}'")
    create_live(database, owner=role)
    env = make_env(tmp_path / "home", tmp_path / "limited_backups", {"development": database},
                   slack_webhook=slack_server.webhook_url, url=lambda name: url_for(name, user=role))
    yield Site(tmp_path / "home", tmp_path / "limited_backups", env, database, extra={"role": role})
    drop_database(database)
    for name in database_names(database):
        drop_database(name)
    psql(f"DROP ROLE IF EXISTS {quoted(role)}")


def test_role_without_createdb_falls_back_to_restoring_in_place(limited_site, slack_server):
    site = limited_site
    backup_id = site.backup()
    expected = content(site.live)
    run_sql_as(site.live, AFTER_BACKUP, user=site.extra["role"])
    oid = database_oid(site.live)
    slack_server.reset()
    result = site.cli("restore", backup_id, "development", "--yes")
    assert result.returncode == 0, result.stderr
    resolve = next(line for line in result.stderr.splitlines() if line.startswith("resolve:"))
    assert "in place (the role cannot create databases)" in resolve
    assert f"swap: nothing to swap, {site.live} was restored in place" in result.stderr
    assert content(site.live) == expected and database_oid(site.live) == oid
    assert database_names(site.live) == [site.live]
    started, succeeded = slack_server.texts()
    assert "in place" in started and "Restore succeeded" in succeeded
    assert [entry["kind"] for entry in site.backups()] == ["pre-restore", "manual"]
    assert_no_secret(result.stdout, result.stderr, slack_server.all_bodies(), site.run_texts())


def test_a_restore_in_place_waits_for_a_lock_only_so_long_and_names_who_holds_it(limited_site, slack_server):
    """A client holds a table of the live database open in a transaction (a long report, a stuck
    worker): the in-place restore gives up after RESTORE_LOCK_TIMEOUT_SECONDS, names that session,
    and leaves the database as it was."""
    site = limited_site
    backup_id = site.backup()
    run_sql_as(site.live, AFTER_BACKUP, user=site.extra["role"])
    before = fingerprint(site.live)
    reader = psycopg.connect(url_for(site.live, user=site.extra["role"]), autocommit=False,
                             application_name="nightly-report")
    try:
        reader.execute("SELECT count(*) FROM customers WHERE email <> 'hunter2-secret-literal'").fetchone()
        started = time.monotonic()
        result = site.cli("restore", backup_id, "development", "--yes", env={"RESTORE_LOCK_TIMEOUT_SECONDS": "2"})
        elapsed = time.monotonic() - started
    finally:
        reader.close()
    line = assert_one_line_error(result, 1, "failed at pg_restore", "waited 2s (RESTORE_LOCK_TIMEOUT_SECONDS)", "was stopped",
                                 f"{site.live} is as it was", f"nightly-report", "idle in transaction")
    assert "hunter2-secret-literal" not in line and elapsed < 120
    assert fingerprint(site.live) == before


def test_corrupt_local_artifact_falls_back_to_s3_else_is_refused_before_any_database(base, site, slack_server):
    artifact = site.backup_dir / "development" / f"{base.dev_id}.dump.zst"
    flip_byte(artifact)
    before = fingerprint(DEV)
    target = TARGETS + "from_s3_copy"
    fallback = site.cli("restore", base.dev_id, "development", "--target-database", target)
    assert fallback.returncode == 0, fallback.stderr
    fetch = next(line for line in fallback.stderr.splitlines() if line.startswith("fetch:"))
    assert "from s3://" in fetch
    assert content(target) == base.dev_content and fingerprint(DEV) == before
    succeeded = slack_server.texts()[-1]
    assert "Restore succeeded" in succeeded and "(local copy) is unusable" in succeeded
    assert f"trying {base.dev_id} (s3 copy)" in succeeded
    warned = [line for line in fallback.stderr.splitlines() if line.startswith("warning: ")]
    assert any(f"{base.dev_id} (local copy) is unusable" in line for line in warned), fallback.stderr
    drop_database(target)

    client = s3_client()
    prefix = site.env["AWS_S3_PREFIX"]
    client.delete_object(Bucket=BUCKET, Key=f"{prefix}/development/{base.dev_id}.dump.zst")
    slack_server.reset()
    names = database_names()
    refused = site.cli("restore", base.dev_id, "development", "--yes")
    assert_one_line_error(refused, 1, "failed at fetch", f"{base.dev_id} (local copy) is unusable",
                          f"{DEV} was left untouched")
    untouched(site, before, names)
    assert pre_restore_backups(site) == []  # refused before the safety backup
    texts = slack_server.texts()
    assert len(texts) == 2 and "Restore failed" in texts[1] and "fetch" in texts[1]


# ---------------------------------------------------------------- killed, and two at once

BIG_ROWS = 100_000


@pytest.fixture(scope="module")
def big(base, tmp_path_factory):
    """A development database large enough that pg_restore runs for a few seconds, backed up
    locally, then changed."""
    root = tmp_path_factory.mktemp("restore_cli_big")
    live = create_live(PREFIX + "big")
    fill_big_table(live, rows=BIG_ROWS)
    site = Site(root / "home", root / "backups", make_env(root / "home", root / "backups", {"development": live}),
                live)
    backup_id = site.backup()
    expected = content(live)
    run_sql_as(live, AFTER_BACKUP)
    yield site, backup_id, expected
    for name in database_names(live):
        drop_database(name)


def big_site(big, tmp_path, slack_webhook: str | None = None) -> Site:
    site = big[0]
    home = tmp_path / "home"
    env = {**site.env, "DAGSTER_HOME": str(home), **({"SLACK_WEBHOOK_URL": slack_webhook} if slack_webhook else {})}
    return Site(home, site.backup_dir, env, site.live)


def start_and_wait_for_pg_restore(site: Site, backup_id: str) -> tuple[subprocess.Popen, dict[int, str]]:
    """Start a restore of the live database; return once pg_restore is loading the scratch copy."""
    process = site.popen("restore", backup_id, "development", "--yes")
    seen: dict[int, str] = {}

    def restoring() -> bool:
        seen.update(descendants(process.pid))
        return any(name == "pg_restore" and alive(pid) for pid, name in seen.items()) and \
            any("__restore_" in name for name in database_names(site.live))

    try:
        wait_for(restoring, 120, interval=0.01, what="pg_restore into the scratch database")
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, seen


def test_killed_restore_leaves_the_live_database_and_the_next_restore_cleans_up(big, tmp_path):
    site = big_site(big, tmp_path)
    backup_id, expected = big[1], big[2]
    before = fingerprint(site.live)
    process, seen = start_and_wait_for_pg_restore(site, backup_id)
    try:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        left = [name for name in database_names(site.live) if "__restore_" in name]
        assert len(left) == 1, left  # the killed restore's scratch database
        assert fingerprint(site.live) == before
        assert work_files(site)  # and its decompressed archive

        # The operator runs the restore again, on the same instance.
        again = site.cli("restore", backup_id, "development", "--yes")
        if again.returncode != 0:
            # Check the clean-up through a fresh instance, then report the refusal below.
            fresh = site.cli("restore", backup_id, "development", "--yes",
                             env={"DAGSTER_HOME": str(tmp_path / "fresh_home")})
            assert fresh.returncode == 0, fresh.stderr
        names = database_names(site.live)
        assert not [name for name in names if "__restore_" in name], names
        assert content(site.live) == expected
        assert work_files(site) == []
        still_running = {pid: name for pid, name in seen.items() if alive(pid)}
        assert not still_running, f"processes of the killed restore are still running: {still_running}"
        assert again.returncode == 0, f"the next restore on the same instance was refused: {again.stderr}"
        assert f"warning: dropped {left[0]}, left by a restore that was stopped" in again.stderr, again.stderr
    finally:
        kill_pids(pid for pid in seen if alive(pid))
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_server_restart_during_pg_restore_is_retried_from_a_new_copy(big, tmp_path):
    """Every session of the scratch copy ended while pg_restore loads it (what a server restart or
    failover does to them): the step drops the copy and runs pg_restore again, as a backup would."""
    site = big_site(big, tmp_path)
    backup_id, expected = big[1], big[2]
    ended = f"SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity " \
            f"WHERE starts_with(datname, '{site.live}__restore_') AND backend_type = 'client backend'"
    for _ in range(3):  # a pg_restore that finishes before its sessions are ended is tried again
        process, seen = start_and_wait_for_pg_restore(site, backup_id)
        try:
            hit = wait_for(lambda: "ended" if psql(ended) != "0" else (
                "missed" if not any(name == "pg_restore" and alive(pid) for pid, name in
                                    {**seen, **descendants(process.pid)}.items()) else None),
                60, interval=0.02, what="pg_restore's sessions to end")
            out, err = process.communicate(timeout=240)
        finally:
            kill_pids(pid for pid in seen if alive(pid))
        assert process.returncode == 0, err
        if hit == "ended":
            break
    assert hit == "ended", "pg_restore finished three times before its sessions could be ended"
    assert "warning: pg_restore attempt 1 failed, a transient failure" in err and "retrying in 0s" in err
    assert content(site.live) == expected
    assert not [name for name in database_names(site.live) if "__restore_" in name and "__pre_" not in name]


def test_interrupted_restore_exits_130_and_cleans_up_like_a_failure(big, tmp_path, slack_server):
    """Ctrl-C during pg_restore: the contract's exit code 130, and the failure rules (live untouched,
    scratch copy dropped, one alert saying what was left as it was)."""
    site = big_site(big, tmp_path, slack_server.webhook_url)
    before = fingerprint(site.live)
    process, seen = start_and_wait_for_pg_restore(site, big[1])
    try:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        kill_pids(pid for pid in seen if alive(pid))
    assert fingerprint(site.live) == before
    (run,) = site.runs("restore_job")
    assert run.is_finished
    last = err.strip().splitlines()[-1]
    problems = []
    if process.returncode != 130:
        problems.append(f"exit code {process.returncode}, not 130")
    if "interrupted" not in last or "untouched" not in last:
        problems.append(f"the last line does not say it was interrupted and what was left: {last!r}")
    scratch = [name for name in database_names(site.live) if "__restore_" in name]
    if scratch:
        problems.append(f"scratch database left: {scratch}")
    if work_files(site):
        problems.append(f"decompressed archive left: {work_files(site)}")
    if not any("Restore failed" in text for text in slack_server.texts()):
        problems.append(f"no failure alert, Slack got: {slack_server.texts()}")
    for name in scratch:  # what the next restore would drop
        drop_database(name)
    if problems:
        pytest.fail("interrupted restore:\n  " + "\n  ".join(problems), pytrace=False)


def restore_lock_held(database: str) -> bool:
    from ops_platform.lib.locks import DATABASE_NAMESPACE, lock_keys

    first, second = lock_keys(DATABASE_NAMESPACE, database)
    return psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                f"AND classid = {first}::bigint::oid AND objid = {second & 0xFFFFFFFF}::bigint::oid "
                "AND objsubid = 2") == "1"


def finish(process: subprocess.Popen, timeout: float = 240) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_two_restores_of_one_database_never_run_together(base, site, slack_server, tmp_path):
    """The first restore waits in its migrate step (until the gate file exists) while a second
    restore on the same instance, one on another instance, and a backup are attempted."""
    gate = tmp_path / "gate"
    first = site.popen("restore", base.dev_id, "development", "--yes",
                       env={"MIGRATE_COMMAND": f"while [ ! -e {gate} ]; do sleep 0.1; done"})
    try:
        wait_for(lambda: restore_lock_held(DEV), 60, what="the first restore's lock")
        contenders = {"same": site.popen("restore", base.dev_id, "development", "--yes"),
                      "other": site.popen("restore", base.dev_id, "development", "--yes",
                                          env={"DAGSTER_HOME": str(tmp_path / "other_home")}),
                      "backup": site.popen("backup", "development")}
        results = {name: finish(process) for name, process in contenders.items()}
        assert first.poll() is None
    finally:
        gate.touch()
    done = finish(first)
    assert done.returncode == 0, done.stderr
    assert_one_line_error(results["same"], 1, "a restore_job run of development is in progress", "nothing was touched")
    # Another instance cannot see the first run: the environment's lock on the server refuses it.
    assert_one_line_error(results["other"], 1, "another backup, restore, retention or drill of development is running",
                          "restore_job run", "nothing was changed")
    backup_refusal = results["backup"].stderr
    assert results["backup"].returncode == 1 and ("is already running" in backup_refusal
                                                   or "restore_job run" in backup_refusal), backup_refusal
    assert content(DEV) == base.dev_content
    assert not [name for name in database_names(DEV) if "__restore_" in name]
    texts = slack_server.texts()
    assert sum("Restore succeeded" in text for text in texts) == 1
    assert not [text for text in texts if "Restore failed" in text]  # refused: the first one said what it does


# ---------------------------------------------------------------- 5. bad input

EXISTING = TARGETS + "existing"
BAD_INPUT = {
    "dotdot-id": (["restore", "../development-20260101T000000Z", "development", "--yes"], {}, ["invalid backup id"]),
    "dotdot-in-id": (["restore", "development-20260101T000000Z/../../x", "development", "--yes"], {},
                     ["invalid backup id"]),
    "unknown-id": (["restore", "development-20200101T000000Z", "development", "--yes"], {},
                   ["unknown backup id development-20200101T000000Z"]),
    "no-backups": (["restore", "latest", "production", "--yes"], {}, ["no verified backups of production"]),
    "existing-target": (["restore", "latest", "development", "--target-database", EXISTING], {},
                        [f"database {EXISTING} already exists", "--replace-target"]),
    "no-terminal": (["restore", "latest", "development"], {}, ["needs confirmation", "--yes"]),
    "replace-without-target": (["restore", "latest", "development", "--replace-target", "--yes"], {},
                               ["--replace-target needs --target-database"]),
    "other-environment": (["restore", "{staging_id}", "development", "--yes"], {},
                          ["belongs to staging", "--allow-other-environment"]),
    "unknown-environment": (["restore", "latest", "qa", "--yes"], {}, ["unknown environment 'qa'"]),
    "bad-setting": (["restore", "latest", "development", "--yes"], {"RESTORE_JOBS": "x"}, ["RESTORE_JOBS"]),
    "system-target": (["restore", "latest", "development", "--target-database", "postgres"], {},
                      ["system or platform working database"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_and_touches_nothing(base, site, slack_server, case):
    args, env, fragments = BAD_INPUT[case]
    args = [arg.replace("{staging_id}", base.staging_id) for arg in args]
    if case == "existing-target":
        psql(f"CREATE DATABASE {quoted(EXISTING)} OWNER {DB_USER}")
    before, names = fingerprint(DEV), database_names()
    manifests = sorted(path.name for path in site.backup_dir.rglob("*.manifest.json"))
    result = site.cli(*args, env=env)
    assert_one_line_error(result, 2, *fragments)
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    untouched(site, before, names)
    assert sorted(path.name for path in site.backup_dir.rglob("*.manifest.json")) == manifests
    assert site.runs() == [] and slack_server.texts() == []


def run_on_terminal(site: Site, typed: bytes, *args: str) -> subprocess.CompletedProcess:
    primary, secondary = pty.openpty()
    process = subprocess.Popen([CLI, *args], env=site.env, stdin=secondary, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT)
    os.close(secondary)
    try:
        os.write(primary, typed)
        out, err = process.communicate(timeout=240)
    finally:
        os.close(primary)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_a_terminal_asks_for_the_name_then_restores_from_s3_when_the_local_folder_is_gone(base, site):
    before, names = fingerprint(DEV), database_names()
    wrong = run_on_terminal(site, b"production\n", "restore", base.dev_id, "development")
    assert wrong.returncode == 2, wrong.stderr
    # The typed answer is echoed on the terminal, not on stderr (a pipe here): prompt and error share a line.
    prompt, error = wrong.stderr.strip().splitlines()[-1].split(": ops-platform: error: ")
    assert prompt == "Type development to continue"
    assert error == "not confirmed (typed 'production'); nothing was touched"
    untouched(site, before, names)
    assert site.runs() == []

    # The backup folder is lost; the backup comes from S3 once the name is typed.
    shutil.rmtree(site.backup_dir / "development")
    right = run_on_terminal(site, b"development\n", "restore", "latest", "development")
    assert right.returncode == 0, right.stderr
    fetch = next(line for line in right.stderr.splitlines() if line.startswith("fetch:"))
    assert f"{base.dev_id} from s3://{BUCKET}/" in fetch and "sha256 matches" in fetch
    assert content(DEV) == base.dev_content


# ---------------------------------------------------------------- secrets


KMS_KEY = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ECHO_SECRETS = ('echo "rollback=$ROLLBACK_WEBHOOK_URL production-rollback=$PRODUCTION_ROLLBACK_WEBHOOK_URL '
                'token=$OPS_PLATFORM_TOKEN slack=$SLACK_WEBHOOK_URL db=$DATABASE_URL"')


def test_a_restore_keeps_every_secret_out_of_argv_logs_run_config_and_slack(base, site, slack_server):
    """A CLI restore over the live database (safety backup, pg_restore, a migrate command that
    prints the secrets, verification, swap) with the password in the URL and every other secret
    set. The KMS key id is not a secret: it may show, and the safety backup's S3 copy uses it."""
    secrets = {"ROLLBACK_WEBHOOK_URL": "https://hooks.example.com/rollback/rbSecret7Hq2xL",
               "PRODUCTION_ROLLBACK_WEBHOOK_URL": "https://deploy.example.com/hooks/prodRollback9Wd",
               "OPS_PLATFORM_TOKEN": "ops-platform-token-Zq81xLk3"}
    env = {**secrets, "AWS_S3_SSE": "aws:kms", "AWS_S3_SSE_KMS_KEY_ID": KMS_KEY, "MIGRATE_COMMAND": ECHO_SECRETS}
    values = [DB_PASSWORD, site.env["SLACK_WEBHOOK_URL"], site.env["AWS_SECRET_ACCESS_KEY"], *secrets.values()]
    stop = threading.Event()
    leaks, programs, scanner = watch_argv(values, stop)
    try:
        result = site.cli("restore", "latest", "development", "--yes", env=env)
    finally:
        stop.set()
        scanner.join()
    assert result.returncode == 0, result.stderr
    assert {"pg_dump", "pg_restore"} <= programs, "the client programs were never seen running"
    assert leaks == []

    texts = site.run_texts()  # every run's config and tags, and every event of every run
    # The migrate command ran and reached the log, and saw none of the platform's secrets but its own URL.
    assert "rollback= production-rollback= token= slack= db=postgresql://ops_test:***@" in texts
    for value in values:
        for where, text in (("stdout", result.stdout), ("stderr", result.stderr), ("run log", texts),
                            ("Slack", slack_server.all_bodies())):
            assert value not in text, (where, value)

    [safety] = [entry for entry in site.backups() if entry["kind"] == "pre-restore"]
    manifest = json.loads((site.backup_dir / "development" / f"{safety['id']}.manifest.json").read_text())
    assert KMS_KEY in manifest["verification"]["s3_copy_matches"]["description"]
    head = s3_client().head_object(Bucket=BUCKET, Key=f"{site.env['AWS_S3_PREFIX']}/development/{manifest['artifact']}")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", KMS_KEY)

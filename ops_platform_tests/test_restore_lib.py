"""The restore steps (ops_platform.lib.restore) against the real PostgreSQL and moto S3."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import psycopg
import pytest

from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore import RestoreInputError, RestoreStepError
from ops_platform.lib.restore.archive_offsets import data_positions
from ops_platform.lib.restore.databases import (
    can_create_databases,
    create_database,
    database_exists,
    drop_stale_scratch,
    make_stamp,
    restore_lock,
    scratch_name,
)
from ops_platform.lib.restore.fetch import (
    fetch_candidate,
    fetch_restorable,
    make_work_dir,
)
from ops_platform.lib.restore.pg_restore import plan_grants, restore_into
from ops_platform.lib.restore.resolve import resolve_backup
from ops_platform.lib.restore.verify import verify_restored_database
from ops_platform_tests.backup_helpers import watch_argv
from ops_platform_tests.conftest import DB_PASSWORD, psql
from ops_platform_tests.restore_helpers import (  # noqa: F401 - fixtures
    CHECKS_SQL,
    PREFIX,
    READER_ROLE,
    SESSION,
    SOURCE_DB,
    backup_set,
    cleanup_databases,
    database_names,
    relation_acl,
    schema_dump,
    table_fingerprints,
    url_for,
)
from ops_platform_tests.restore_helpers import create_database as create_test_database

SOURCE_URL = url_for(SOURCE_DB)


def restore_to_scratch(fetched, stamp: str | None = None) -> str:
    scratch = scratch_name(SOURCE_DB, stamp or make_stamp())
    create_database(SOURCE_URL, scratch, like=SOURCE_DB)
    restore_into(SOURCE_URL, scratch, fetched.path, jobs=2)
    return scratch


def test_round_trip_of_a_rich_database(backup_set, cleanup_databases, tmp_path):
    local = backup_set.local_copy(tmp_path / "backups")
    resolution = resolve_backup("production", "latest", local, backup_set.s3_store())
    assert [(c.backup_id, c.source) for c in resolution.candidates] == [
        (backup_set.new.id, "local"), (backup_set.new.id, "s3"), (backup_set.old.id, "local"), (backup_set.old.id, "s3")]
    seen_progress: list[tuple[int, int]] = []
    previous_umask = os.umask(0)
    try:
        work = make_work_dir(tmp_path / "work")
        fetched = fetch_restorable(resolution, work, backup_set.s3_store(),
                                   progress=lambda d, t: seen_progress.append((d, t)))
    finally:
        os.umask(previous_umask)
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    assert stat.S_IMODE(fetched.path.stat().st_mode) == 0o600
    assert fetched.raw_bytes == backup_set.new.raw_bytes and fetched.sha256 == backup_set.new.sha256
    assert seen_progress[-1] == (backup_set.new.stored_bytes, backup_set.new.stored_bytes)
    assert fetched.path.read_bytes()[:5] == b"PGDMP"
    positions = data_positions(fetched.path)  # written by the fetch: pg_restore -j workers seek
    assert positions and None not in positions.values() and fetched.warnings == []

    grants = plan_grants(SOURCE_URL, fetched.path)
    assert grants.keep_acl and READER_ROLE in grants.roles
    scratch = scratch_name(SOURCE_DB, make_stamp())
    create_database(SOURCE_URL, scratch, like=SOURCE_DB)
    stop = threading.Event()
    leaks, programs, scanner = watch_argv([DB_PASSWORD], stop)
    progress: list[tuple[int, int]] = []
    run = restore_into(SOURCE_URL, scratch, fetched.path, jobs=2, grants=grants,
                       progress=lambda done, total: progress.append((done, total)))
    stop.set()
    scanner.join()
    assert "pg_restore" in programs, "pg_restore was never observed running"
    assert leaks == []
    assert run.acl_restored and run.warnings == []
    assert progress[-1][0] == progress[-1][1] == run.items

    checks = tmp_path / "checks.sql"
    checks.write_text(CHECKS_SQL)
    report = verify_restored_database(SOURCE_URL, scratch, fetched.candidate.manifest, checks_file=checks)
    assert report.ok, report.summary()
    assert report.tables_checked == len(backup_set.new.table_row_counts) == 9
    assert report.rows_verified == sum(backup_set.new.table_row_counts.values())
    assert report.sequences_checked >= 4 and len(report.checks) == 4
    assert {"public.weird", "public.café", "Billing.Dept.Invoice Lines.v2"} <= set(backup_set.new.table_row_counts)

    assert table_fingerprints(scratch) == table_fingerprints(SOURCE_DB)
    assert schema_dump(scratch) == schema_dump(SOURCE_DB)
    assert READER_ROLE in relation_acl(scratch, "customers")
    fetched.remove()
    assert not work.exists()


# ---------------------------------------------------------------- resolve and fetch


def test_fetch_from_s3_only_when_the_local_folder_is_empty(backup_set, tmp_path):
    from ops_platform.lib.stores import LocalStore

    resolution = resolve_backup("production", "latest", LocalStore(tmp_path / "empty"), backup_set.s3_store())
    assert [(c.backup_id, c.source) for c in resolution.candidates] == [
        (backup_set.new.id, "s3"), (backup_set.old.id, "s3")]
    work = make_work_dir(tmp_path)
    progress: list[tuple[int, int]] = []
    fetched = fetch_candidate(resolution.first, work, backup_set.s3_store(), progress=lambda d, t: progress.append((d, t)))
    assert fetched.sha256 == backup_set.new.sha256 and fetched.raw_bytes == backup_set.new.raw_bytes
    assert progress[-1] == (backup_set.new.stored_bytes,) * 2
    assert stat.S_IMODE(fetched.path.stat().st_mode) == 0o600
    from ops_platform.lib.restore.pg_restore import list_entries

    assert any("TABLE DATA public customers" in rest for _, rest in list_entries(fetched.path))
    assert None not in data_positions(fetched.path).values()


@pytest.fixture
def unreachable_s3(monkeypatch):
    from ops_platform.lib.stores import S3Store, make_s3_client
    from ops_platform_tests.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    return S3Store(make_s3_client(max_attempts=1, connect_timeout=1, read_timeout=2), "nowhere", "backups")


def test_s3_unreachable_stops_latest_and_never_brings_back_an_older_backup(backup_set, unreachable_s3, tmp_path):
    from ops_platform.lib.restore.resolve import Resolution
    from ops_platform.lib.stores import LocalStore

    empty = LocalStore(tmp_path / "empty")
    with pytest.raises(RestoreStepError) as latest:
        resolve_backup("production", "latest", empty, unreachable_s3)
    assert latest.value.step == "resolve" and not isinstance(latest.value, RestoreInputError)
    assert "no verified local backup of production, and S3 is unreachable" in str(latest.value)
    with pytest.raises(RestoreStepError, match=f"backup {backup_set.new.id} is not in the local folder .* and S3 is "
                                               "unreachable"):
        resolve_backup("production", backup_set.new.id, empty, unreachable_s3)
    # S3 cannot be listed while local copies exist: which backup is the newest cannot be known, so
    # the restore stops, naming the newest local one and how to restore it on purpose.
    local = backup_set.local_copy(tmp_path / "backups")
    with pytest.raises(RestoreStepError) as unknown:
        resolve_backup("production", "latest", local, unreachable_s3)
    message = str(unknown.value)
    assert unknown.value.step == "resolve" and not isinstance(unknown.value, RestoreInputError)
    assert message.startswith("cannot tell which backup of production is the newest: S3 (s3://nowhere/")
    assert f"ops-platform restore {backup_set.new.id} production" in message and "nothing was touched" in message
    # A named backup with its local copy is enough.
    named = resolve_backup("production", backup_set.new.id, local, unreachable_s3)
    assert [c.source for c in named.candidates] == ["local"]
    # S3 going away between resolve and fetch: the newest backup only there is not replaced by the
    # older local one; the error names both, and how to restore the older one on purpose.
    only_new_in_s3 = backup_set.local_copy(tmp_path / "older-only")
    for name in (backup_set.new.artifact, f"{backup_set.new.id}.manifest.json"):
        only_new_in_s3.path("production", name).unlink()
    resolution = resolve_backup("production", "latest", only_new_in_s3, backup_set.s3_store())
    assert [(c.backup_id, c.source) for c in resolution.candidates][0] == (backup_set.new.id, "s3")
    work = make_work_dir(tmp_path)
    with pytest.raises(RestoreStepError) as fetch:
        fetch_candidate(resolution.first, work, unreachable_s3)
    assert fetch.value.step == "fetch" and "Could not connect" in str(fetch.value)
    assert "could not be fetched" in str(fetch.value) and list(work.iterdir()) == []
    with pytest.raises(RestoreStepError) as stopped:
        fetch_restorable(resolution, work, unreachable_s3)
    message = str(stopped.value)
    assert message.startswith(f"{backup_set.new.id} could not be fetched, so nothing was restored")
    assert f"ops-platform restore {backup_set.old.id} production" in message and "\n" not in message
    assert list(work.iterdir()) == []
    assert Resolution(resolution.candidates[:1]).first.source == "s3"


def test_no_room_for_the_newest_stops_with_needed_and_free_bytes(backup_set, tmp_path):
    """The work folder too small for the newest backup's raw dump (it would fit an older, smaller
    one): the restore stops; the sizes it gives read plainly."""
    import subprocess

    local = backup_set.local_copy(tmp_path / "backups")
    resolution = resolve_backup("production", "latest", local)
    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    try:
        with pytest.raises(RestoreStepError) as stopped:
            fetch_restorable(resolution, disk, None)
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    message = str(stopped.value)
    needed = backup_set.new.raw_bytes + (64 << 20)
    assert f"not enough space in {disk} for the raw dump of {backup_set.new.id}: it needs" in message
    assert f"({needed} bytes: the " in message and f"({free} bytes) are free" in message
    assert f"ops-platform restore {backup_set.old.id} production" in message


def databases_of_this_session() -> list[str]:
    """The server's databases this test session made (another session may create its own meanwhile)."""
    return [name for name in database_names("") if f"_{SESSION}" in name]


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        del data[len(data) * 2 // 3:]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_artifact_is_refused_before_any_database_is_touched(backup_set, tmp_path, how):
    local = backup_set.local_copy(tmp_path / "backups")
    damage(local.path("production", backup_set.new.artifact), how)
    candidate = resolve_backup("production", backup_set.new.id, local).first
    databases_before = databases_of_this_session()
    work = make_work_dir(tmp_path)
    with pytest.raises(RestoreStepError) as failure:
        fetch_candidate(candidate, work)
    assert failure.value.step == "fetch"
    message = str(failure.value)
    assert message.startswith(f"{backup_set.new.id} (local copy) is unusable: ") and "\n" not in message
    assert ("sha256" in message or "decompress" in message) if how == "flip" else "truncated" in message
    assert list(work.iterdir()) == []
    assert databases_of_this_session() == databases_before


def test_latest_falls_back_to_the_s3_copy_then_only_to_an_older_backup_proven_needed(backup_set, tmp_path):
    from ops_platform.lib.restore.errors import CopyUnusable

    local = backup_set.local_copy(tmp_path / "backups")
    s3 = backup_set.s3_copy(f"fallback-{os.getpid()}")
    damage(local.path("production", backup_set.new.artifact), "flip")
    notes: list[str] = []
    resolution = resolve_backup("production", "latest", local, s3)
    fetched = fetch_restorable(resolution, make_work_dir(tmp_path), s3, on_fallback=notes.append)
    assert (fetched.candidate.backup_id, fetched.candidate.source) == (backup_set.new.id, "s3")
    assert len(fetched.warnings) == 1 and fetched.warnings == notes
    assert f"trying {backup_set.new.id} (s3 copy)" in notes[0]
    assert fetched.passed_over == [] and fetched.older_than_newest is None
    fetched.remove()

    # Both copies of the newest backup proven bad: the next verified backup, said in words that
    # cannot be missed.
    s3.client.put_object(Bucket=s3.bucket, Key=s3.key("production", backup_set.new.artifact), Body=b"garbage")
    resolution = resolve_backup("production", "latest", local, s3)
    fetched = fetch_restorable(resolution, make_work_dir(tmp_path), s3)
    assert (fetched.candidate.backup_id, fetched.candidate.source) == (backup_set.old.id, "local")
    # (the flipped byte breaks the zstd frame before the sha256 is complete; either proves it bad)
    assert fetched.older_than_newest == (f"restored OLDER backup {backup_set.old.id}: newest {backup_set.new.id} "
                                         "does not decompress")
    assert f"restoring the OLDER backup {backup_set.old.id} instead" in fetched.warnings[-1]

    # Nothing intact at all: one line naming each backup.
    damage(local.path("production", backup_set.old.artifact), "truncate")
    s3.client.put_object(Bucket=s3.bucket, Key=s3.key("production", backup_set.old.artifact), Body=b"x")
    with pytest.raises(CopyUnusable) as nothing:
        fetch_restorable(resolve_backup("production", "latest", local, s3), make_work_dir(tmp_path), s3)
    assert str(nothing.value).startswith("no intact copy of any backup to restore (4 tried): ")
    for backup_id in (backup_set.new.id, backup_set.old.id):
        for source in ("local", "s3"):
            assert f"{backup_id} ({source} copy) is unusable" in str(nothing.value)


def test_a_newest_backup_without_its_dump_file_is_passed_over_out_loud(backup_set, tmp_path):
    local = backup_set.local_copy(tmp_path / "backups")
    local.path("production", backup_set.new.artifact).unlink()
    resolution = resolve_backup("production", "latest", local)
    assert [c.backup_id for c in resolution.candidates] == [backup_set.old.id]
    fetched = fetch_restorable(resolution, make_work_dir(tmp_path))
    assert fetched.older_than_newest == (f"restored OLDER backup {backup_set.old.id}: newest {backup_set.new.id} has "
                                         "no artifact (its manifest is there, its dump file is gone)")


def test_the_restore_state_is_plain_data_that_pickles(backup_set, tmp_path):
    """A run launched by the daemon pickles what its steps hand each other."""
    import pickle

    from ops_platform.config import EnvironmentConfig
    from ops_platform.lib.restore.plan import RestoreRequest, plan_restore

    environment = EnvironmentConfig("production", SOURCE_URL)
    request = RestoreRequest("production", target_database=f"{PREFIX}pickled")
    state = plan_restore(request, environment, backup_set.local_copy(tmp_path / "b"), backup_set.s3_store())
    assert {c.source for c in state.candidates} == {"local", "s3"}
    copy = pickle.loads(pickle.dumps(state))
    assert copy == state and copy.resolution.first == state.candidates[0]


def test_latest_skips_unverified_backups(backup_set, tmp_path):
    import json

    local = backup_set.local_copy(tmp_path / "backups")
    path = local.path("production", f"{backup_set.new.id}.manifest.json")
    data = json.loads(path.read_text())
    data["verified"] = False
    path.write_text(json.dumps(data))
    resolution = resolve_backup("production", "latest", local)
    assert [c.backup_id for c in resolution.candidates] == [backup_set.old.id]
    with pytest.raises(RestoreInputError, match="is not verified"):
        resolve_backup("production", backup_set.new.id, local)
    assert resolve_backup("production", backup_set.new.id, local, allow_unverified=True).warnings == [
        f"backup {backup_set.new.id} is not verified"]


def test_bad_input_is_refused_with_one_clear_line(backup_set, tmp_path):
    from ops_platform.lib.stores import LocalStore

    local = backup_set.local_copy(tmp_path / "backups")
    cases = {
        "../production-20260115T070000Z": "invalid backup id",
        "production-20260115T070000Z/../../etc": "invalid backup id",
        "production-20991231T000000Z": "unknown backup id production-20991231T000000Z",
        backup_set.staging.id: "belongs to staging, not production",
    }
    for selector, expected in cases.items():
        with pytest.raises(RestoreInputError) as failure:
            resolve_backup("production", selector, local, backup_set.s3_store())
        assert failure.value.step == "resolve" and expected in str(failure.value) and "\n" not in str(failure.value)
    with pytest.raises(RestoreInputError, match="unknown environment '../production'"):
        resolve_backup("../production", "latest", local)
    other = resolve_backup("production", backup_set.staging.id, local, allow_other_environment=True)
    assert other.first.manifest.environment == "staging"
    assert other.warnings == [f"restoring staging's backup {backup_set.staging.id} into production"]
    with pytest.raises(RestoreInputError, match="no verified backups of development in"):
        resolve_backup("development", "latest", LocalStore(tmp_path / "nothing"), backup_set.s3_store())


# ---------------------------------------------------------------- databases, lock and swap


def make_live_and_scratch(live: str, stamp: str) -> str:
    create_test_database(live, "CREATE TABLE marker (v text); INSERT INTO marker VALUES ('old');")
    scratch = scratch_name(live, stamp)
    create_test_database(scratch, "CREATE TABLE marker (v text); INSERT INTO marker VALUES ('new');")
    return scratch


def test_names_respect_the_63_byte_limit_and_stay_recognisable():
    from ops_platform.lib.restore.databases import pre_restore_name

    stamp = "20260115T070000Z"
    assert scratch_name("shop", stamp) == "shop__restore_20260115T070000Z"
    assert pre_restore_name("shop", stamp) == "shop__pre_restore_20260115T070000Z"
    for base in ("x" * 63, "é" * 40, "Ünïcødé-" * 10):
        for name in (scratch_name(base, stamp), pre_restore_name(base, stamp)):
            assert len(name.encode()) <= 63 and name.endswith(stamp)
            name.encode().decode()  # never cut inside a character
    assert scratch_name("x" * 63, stamp) == scratch_name("x" * 63, stamp) != scratch_name("x" * 62 + "y", stamp)
    with pytest.raises(ValueError):
        scratch_name("shop", "../etc")


def test_swap_ends_open_sessions_and_keeps_the_old_database(backup_set, cleanup_databases):
    from ops_platform.lib.restore.swap import swap

    live, stamp = f"{PREFIX}swap_live", "20260115T070000Z"
    scratch = make_live_and_scratch(live, stamp)
    psql(f"""ALTER DATABASE "{live}" SET search_path = "$user", public, "Odd Schema";
             ALTER DATABASE "{live}" SET statement_timeout = '5min';
             REVOKE ALL ON DATABASE "{live}" FROM PUBLIC;
             GRANT CONNECT ON DATABASE "{live}" TO "{READER_ROLE}";""")
    url = url_for(live)
    app = psycopg.connect(url)  # an application session, idle in a transaction
    app.execute("SELECT * FROM marker")
    with restore_lock(url, live) as lock:
        result = swap(url, live, scratch, stamp, lock=lock)
    assert result.kept == f"{live}__pre_restore_{stamp}" and result.terminated >= 1 and result.warnings == []
    with pytest.raises(psycopg.OperationalError):
        app.execute("SELECT 1")
    assert psql("SELECT v FROM marker", database=live) == "new"
    assert psql("SELECT v FROM marker", database=result.kept) == "old"
    assert not database_exists(url, scratch)
    rows = psql(f"SELECT datname, datallowconn FROM pg_database WHERE datname IN ('{live}', '{result.kept}') "
                "ORDER BY 1").splitlines()
    assert rows == [f"{live}|t", f"{result.kept}|t"]
    settings = psql(f"SELECT array_to_string(setconfig, '|') FROM pg_db_role_setting WHERE setdatabase = "
                    f"(SELECT oid FROM pg_database WHERE datname = '{live}')")
    assert 'search_path="$user", public, "Odd Schema"' in settings and "statement_timeout=5min" in settings
    acl = psql(f"SELECT datacl::text FROM pg_database WHERE datname = '{live}'")
    assert f"{READER_ROLE}=c/" in acl and "=Tc/" not in acl


def test_swap_failure_renames_the_old_database_back(cleanup_databases):
    from ops_platform.lib.restore.swap import swap

    live, stamp = f"{PREFIX}swap_fail", "20260115T070000Z"
    scratch = make_live_and_scratch(live, stamp)
    # A superuser session on the scratch database: ops_test can neither end it nor rename scratch.
    blocker = psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{scratch}")
    try:
        with pytest.raises(RestoreStepError) as failure:
            swap(url_for(live), live, scratch, stamp, attempts=2, retry_delay=0.1)
    finally:
        blocker.close()
    message = str(failure.value)
    assert failure.value.step == "swap" and "\n" not in message
    assert f"renaming {scratch} to {live} failed" in message
    assert f"the old database was renamed back to {live} and is unchanged" in message
    assert psql("SELECT v FROM marker", database=live) == "old"
    assert psql(f"SELECT datallowconn FROM pg_database WHERE datname = '{live}'") == "t"
    assert not database_exists(url_for(live), f"{live}__pre_restore_{stamp}")


def test_swap_gives_up_cleanly_when_sessions_cannot_be_ended(cleanup_databases):
    from ops_platform.lib.restore.swap import swap

    live, stamp = f"{PREFIX}swap_busy", "20260115T070000Z"
    scratch = make_live_and_scratch(live, stamp)
    blocker = psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{live}")
    try:
        with pytest.raises(RestoreStepError, match=r"could not rename .* after 2 attempt\(s\).*sessions of postgres "
                                                   r"cannot be ended by this role; .* is unchanged and still in service"):
            swap(url_for(live), live, scratch, stamp, attempts=2, retry_delay=0.1)
    finally:
        blocker.close()
    assert psql("SELECT v FROM marker", database=live) == "old"
    assert psql(f"SELECT datallowconn FROM pg_database WHERE datname = '{live}'") == "t"
    assert database_exists(url_for(live), scratch)


def test_scratch_is_promoted_to_a_new_target_database(cleanup_databases):
    from ops_platform.lib.restore.databases import promote_scratch

    target = f"{PREFIX}new_target"
    scratch = scratch_name(target, "20260115T070000Z")
    create_test_database(scratch, "CREATE TABLE marker (v text); INSERT INTO marker VALUES ('new');")
    url = url_for(target)
    with restore_lock(url, target) as lock:
        promote_scratch(url, scratch, target, lock=lock)
        with pytest.raises(RestoreStepError, match="already exists; replacing it needs a swap"):
            promote_scratch(url, scratch, target, lock=lock)
    assert psql("SELECT v FROM marker", database=target) == "new" and not database_exists(url, scratch)


def test_leftover_scratch_is_dropped_and_a_concurrent_restore_is_refused(cleanup_databases):
    live = f"{PREFIX}locked"
    create_test_database(live)
    leftover = scratch_name(live, "20260101T000000Z")
    create_test_database(leftover)
    unrelated = f"{live}__restore_notastamp"
    create_test_database(unrelated)
    url = url_for(live)
    with restore_lock(url, live) as lock:
        with pytest.raises(RestoreStepError) as refused:
            with restore_lock(url, live):
                pass
        assert refused.value.step == "scratch"
        assert f"another restore of database {live} is running (held by backend pid" in str(refused.value)
        with restore_lock(url, f"{PREFIX}other_db"):
            pass  # other databases are not blocked
        current = scratch_name(live, "20260115T070000Z")
        create_database(url, current, like=live)
        assert drop_stale_scratch(url, live, lock, keep=[current]) == [leftover]
        assert database_exists(url, current) and database_exists(url, unrelated)
    with restore_lock(url, live) as again:  # released when the block ends
        pass
    with pytest.raises(RestoreStepError, match="restore lock on .* is not held"):
        drop_stale_scratch(url, live, again)


def test_kept_databases_are_listed_and_expire(cleanup_databases):
    from datetime import datetime, timezone

    from ops_platform.lib.restore.databases import (
        drop_expired_pre_restore,
        list_pre_restore_databases,
        pre_restore_name,
    )

    live = f"{PREFIX}kept"
    old, recent = pre_restore_name(live, "20260101T000000Z"), pre_restore_name(live, "20260114T000000Z")
    for name in (live, old, recent):
        create_test_database(name)
    url = url_for(live)
    assert [name for name, _ in list_pre_restore_databases(url, live)] == [recent, old]
    now = datetime(2026, 1, 15, tzinfo=timezone.utc)
    assert drop_expired_pre_restore(url, live, keep_days=7, now=now, keep_min=0) == [old]
    assert drop_expired_pre_restore(url, live, keep_days=0, now=now, keep_min=1) == []
    assert [name for name, _ in list_pre_restore_databases(url, live)] == [recent]


# ---------------------------------------------------------------- pg_restore


@pytest.fixture(scope="module")
def fetched_new(backup_set, tmp_path_factory):
    """The newest backup as a raw archive, shared by the tests that only read it."""
    from ops_platform.lib.stores import LocalStore

    candidate = resolve_backup("production", backup_set.new.id, LocalStore(backup_set.local_root)).first
    return fetch_candidate(candidate, make_work_dir(tmp_path_factory.mktemp("fetched")))


@pytest.fixture
def limited_role():
    """A login role without CREATEDB, and a database it owns holding other data."""
    role = f"ops_rt_nocreate_{os.getpid()}"
    psql(f'DROP ROLE IF EXISTS "{role}"')
    psql(f"""CREATE ROLE "{role}" LOGIN NOCREATEDB PASSWORD '{DB_PASSWORD}'""")
    database = create_test_database(f"{PREFIX}limited", "CREATE TABLE customers (id int); INSERT INTO customers "
                                                         "VALUES (42); CREATE TABLE leftover (x int);", owner=role)
    yield role, database
    from ops_platform_tests.restore_helpers import drop_databases

    drop_databases([database])
    psql(f'DROP ROLE IF EXISTS "{role}"')


def test_role_without_createdb_restores_in_place(backup_set, fetched_new, limited_role, cleanup_databases):
    from ops_platform.lib.restore.pg_restore import restore_in_place

    role, database = limited_role
    url = url_for(database, user=role)
    assert can_create_databases(url) is False
    assert can_create_databases(url_for(SOURCE_DB)) is True
    progress: list[tuple[int, int]] = []
    with restore_lock(url, database):
        run = restore_in_place(url, database, fetched_new.path,
                               progress=lambda done, total: progress.append((done, total)))
    assert run.acl_restored and run.jobs == 1
    assert progress[0][0] < progress[-1][0] == progress[-1][1] == run.items
    report = verify_restored_database(url, database, backup_set.new)
    assert report.ok, report.summary()
    assert psql("SELECT count(*) FROM customers", database=database) == "300"
    assert psql("SELECT count(*) FROM leftover", database=database) == "0"  # not in the archive: left alone
    assert psql("SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relname IN ('customers', 'orders')",
                database=database) == role


def test_failed_in_place_restore_leaves_the_database_as_it_was(backup_set, fetched_new, limited_role, tmp_path):
    from ops_platform.lib.restore.pg_restore import restore_in_place

    role, database = limited_role
    psql(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')  # every write fails
    with pytest.raises(RestoreStepError) as failure:
        restore_in_place(url_for(database, user=role), database, fetched_new.path)
    psql(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
    assert failure.value.step == "pg_restore" and "exited with code 1" in str(failure.value)
    assert "read-only transaction" in str(failure.value) and "\n" not in str(failure.value)
    assert psql("SELECT id FROM customers", database=database) == "42"


def test_grants_naming_missing_roles_are_skipped_with_a_warning(cleanup_databases, tmp_path):
    import subprocess

    role = f"ops_rt_gone_{os.getpid()}"
    psql(f'DROP ROLE IF EXISTS "{role}"')
    psql(f'CREATE ROLE "{role}" NOLOGIN')
    source = create_test_database(f"{PREFIX}grants", f'CREATE TABLE t (id int); INSERT INTO t VALUES (1); '
                                                     f'GRANT SELECT ON t TO "{role}";')
    dump = tmp_path / "grants.dump"
    subprocess.run(["pg_dump", "-Fc", "-Z0", "-h", "127.0.0.1", "-U", "postgres", "-f", str(dump), source], check=True)
    psql(f'DROP DATABASE "{source}"')
    psql(f'DROP ROLE "{role}"')
    url = url_for(f"{PREFIX}grants_restored")
    create_database(url, f"{PREFIX}grants_restored")
    plan = plan_grants(url, dump)
    assert not plan.keep_acl and plan.missing_roles == [role]
    run = restore_into(url, f"{PREFIX}grants_restored", dump, jobs=1, grants=plan)
    assert not run.acl_restored
    assert run.warnings == [f"grants not restored (--no-acl): role(s) missing on this server: {role}"]
    assert psql("SELECT count(*) FROM t", database=f"{PREFIX}grants_restored") == "1"


def test_pg_restore_timeout_kills_it(fetched_new, cleanup_databases):
    scratch = scratch_name(SOURCE_DB, "20260101T000001Z")
    create_database(SOURCE_URL, scratch)
    started = time.monotonic()
    with pytest.raises(RestoreStepError, match=r"pg_restore timed out after 0.05s and was killed; database .* is "
                                               r"incomplete") as failure:
        restore_into(SOURCE_URL, scratch, fetched_new.path, jobs=2, timeout=0.05)
    assert failure.value.step == "pg_restore" and time.monotonic() - started < 10
    assert not any(line.startswith("pg_restore") and scratch in line for line in _process_names())


def _process_names() -> list[str]:
    names = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                names.append(Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                pass
    return names


# ---------------------------------------------------------------- migrate command


def test_migrate_command_runs_against_the_scratch_database(cleanup_databases):
    import sys

    from ops_platform.lib.restore.migrate import run_migrations

    scratch = scratch_name(f"{PREFIX}app", "20260115T070000Z")
    create_test_database(scratch)
    command = (f"{sys.executable} -c \"import os, psycopg; "
               "print('connected to', psycopg.connect(os.environ['DATABASE_URL']).execute("
               "'select current_database()').fetchone()[0]); print('url', os.environ['DATABASE_URL'])\"; "
               "echo \"restoring $OPS_RESTORE_DATABASE\"; sleep 0.3")
    stop = threading.Event()
    leaks, programs, scanner = watch_argv([DB_PASSWORD], stop)
    result = run_migrations(command, url_for(f"{PREFIX}app"), scratch, timeout=30)
    stop.set()
    scanner.join()
    assert result.ok and f"connected to {scratch}" in result.output and f"restoring {scratch}" in result.output
    assert "url postgresql://ops_test:***@127.0.0.1:5432/" in result.output
    assert DB_PASSWORD not in result.output and leaks == [] and "sleep" in programs


def test_failing_migrate_command_raises_with_its_redacted_output():
    from ops_platform.lib.restore.migrate import run_migrations

    command = "echo 'Error: P1001: cannot reach database at' \"$DATABASE_URL\" >&2; echo done; exit 3"
    with pytest.raises(RestoreStepError) as failure:
        run_migrations(command, url_for(f"{PREFIX}app"), f"{PREFIX}app__restore_20260115T070000Z", timeout=30)
    message = str(failure.value)
    assert failure.value.step == "migrate" and "\n" not in message
    assert message.startswith(f"migrate command exited with code 3 on {PREFIX}app__restore_20260115T070000Z: ")
    assert "cannot reach database at postgresql://ops_test:***@" in message and "| done" in message
    assert DB_PASSWORD not in message


def test_hanging_migrate_command_is_killed_with_its_children():
    from ops_platform.lib.restore.migrate import run_migrations

    marker = f"31.{os.getpid()}"
    started = time.monotonic()
    with pytest.raises(RestoreStepError, match=r"migrate command timed out after 1s and was killed on .*: started"):
        run_migrations(f"echo started; sleep {marker} & sleep {marker}", url_for(f"{PREFIX}app"), f"{PREFIX}app",
                       timeout=1)
    assert time.monotonic() - started < 6
    time.sleep(0.2)
    assert not any(f"sleep {marker}" in line for line in _process_names())


def test_run_shell_command_output_is_a_bounded_tail():
    from ops_platform.lib.commands import run_shell_command

    result = run_shell_command("seq 1 200000; echo secret-value-123 >&2", {"PATH": os.environ["PATH"]}, 30,
                               Redactor(["secret-value-123"]))
    assert result.ok and result.output.endswith("***") and "199999" in result.output and len(result.output) <= 4000


# ---------------------------------------------------------------- verification


def test_verification_reports_each_kind_of_failure_in_one_line(backup_set, fetched_new, cleanup_databases, tmp_path):
    from ops_platform.lib.restore.verify import verify_restored_database

    scratch = restore_to_scratch(fetched_new, "20260101T000002Z")
    psql('DROP TABLE "Billing.Dept"."Invoice Lines.v2"; DELETE FROM public."we""ird (x)" WHERE id = 1; '
         "SELECT setval('customers_id_seq', 10); DELETE FROM ONLY notes WHERE id = 1;", database=scratch)
    checks = tmp_path / "checks.sql"
    checks.write_text("SELECT true; SELECT count(*) = 0 FROM customers; SELECT 1/0 = 1;")
    report = verify_restored_database(SOURCE_URL, scratch, backup_set.new, checks_file=checks)
    summary = report.summary()
    assert not report.ok and "\n" not in summary
    assert report.missing_tables == ["Billing.Dept.Invoice Lines.v2"]
    assert [(m.table, m.expected, m.actual) for m in report.row_mismatches] == [
        ("public.notes", 20, 19), ('public."we""ird (x)"', 3, 2)]
    assert [(s.sequence, s.next_value, s.column_limit) for s in report.sequences_behind] == [
        ("public.customers_id_seq", 11, 300)]
    assert [c.passed for c in report.checks] == [True, False, False]
    assert "returned [(False,)], not one true" in report.checks[1].detail
    assert "division by zero" in report.checks[2].detail
    for fragment in ("1 missing table(s): Billing.Dept.Invoice Lines.v2",
                     "2 row count mismatch(es): public.notes has 19 rows, the manifest says 20",
                     '2 sequence(s) differ from the source: "Billing.Dept"."Invoice Lines.v2_id_seq" is missing; '
                     "public.customers_id_seq is at 10 (called: True), the source was at 300 (called: True)",
                     "2 failed SQL check(s): check #2 (SELECT count(*) = 0 FROM customers) returned"):
        assert fragment in summary
    with pytest.raises(RestoreStepError) as failure:
        report.raise_for_failure()
    assert failure.value.step == "verify" and str(failure.value) == summary

    fixed = verify_restored_database(SOURCE_URL, scratch, backup_set.new, fix_sequences=True)
    assert [s.sequence for s in fixed.sequences_fixed] == ["public.customers_id_seq"] and not fixed.sequences_behind
    assert psql("SELECT nextval('customers_id_seq')", database=scratch) == "301"


def test_scratch_urls_and_sql_check_files_are_parsed_exactly():
    from ops_platform.lib.restore.databases import database_url_for
    from ops_platform.lib.restore.verify import manifest_key, split_sql

    assert database_url_for("postgresql://u:p%40ss@h:6432/app?sslmode=require", "app__restore_1") == \
        "postgresql://u:p%40ss@h:6432/app__restore_1?sslmode=require"
    assert database_url_for("host=h port=6432 user=u password='p w' dbname=app", "new db") == \
        "postgresql://u:p%20w@h:6432/new%20db"
    assert split_sql("SELECT ';'; -- a; comment\nSELECT $x$;$x$ = ';' /* ; */;\n;  ; SELECT \"a;b\" FROM t") == [
        "SELECT ';'", "-- a; comment\nSELECT $x$;$x$ = ';' /* ; */", 'SELECT "a;b" FROM t']
    assert manifest_key('public."we""ird (x)"') == "public.weird"
    assert manifest_key('"Billing.Dept"."Invoice Lines.v2"') == "Billing.Dept.Invoice Lines.v2"


def _synthetic_backup(local, s3, compression: str, raw: bytes):
    """A committed backup of arbitrary bytes (fetch never looks inside the archive)."""
    import gzip
    import hashlib

    import zstandard

    from ops_platform.lib.artifacts import Manifest, artifact_name

    stored = zstandard.ZstdCompressor(level=3).compress(raw) if compression == "zstd" else \
        gzip.compress(raw, compresslevel=6, mtime=0)
    backup_id = "development-20260115T070000Z"
    name = artifact_name(backup_id, compression)
    manifest = Manifest(id=backup_id, environment="development", kind="manual", created_at="2026-01-15T07:00:00Z",
                        database="app", server_version="15", pg_dump_version="15", compression=compression,
                        compression_level=3, artifact=name, raw_bytes=len(raw), stored_bytes=len(stored),
                        sha256=hashlib.sha256(stored).hexdigest(), duration_seconds=1.0, verified=True)
    local.path("development", name).parent.mkdir(parents=True, exist_ok=True)
    local.path("development", name).write_bytes(stored)
    local.write_manifest(manifest)
    s3.client.put_object(Bucket=s3.bucket, Key=s3.key("development", name), Body=stored)
    s3.write_manifest(manifest)
    return manifest


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_fetch_memory_stays_bounded_for_both_compressions_and_sources(backup_set, tmp_path, compression):
    import tracemalloc

    from ops_platform.lib.stores import LocalStore

    raw = (b"PGDMP" + bytes(range(256)) * 64) * 4096  # 64 MiB that compresses about 1000:1
    local = LocalStore(tmp_path / "backups")
    s3 = backup_set.s3_copy(f"synthetic-{compression}-{os.getpid()}")
    manifest = _synthetic_backup(local, s3, compression, raw)
    del raw
    for candidate in resolve_backup("development", "latest", local, s3).candidates:
        tracemalloc.start()
        try:
            fetched = fetch_candidate(candidate, make_work_dir(tmp_path), s3)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert fetched.raw_bytes == manifest.raw_bytes == fetched.path.stat().st_size
        assert peak < 24 << 20, f"{candidate.describe()} peaked at {peak >> 20} MiB"
        fetched.remove()
    path = local.path("development", manifest.artifact)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(RestoreStepError, match="truncated"):
        fetch_candidate(resolve_backup("development", "latest", local).first, make_work_dir(tmp_path))


def test_fetch_from_s3_of_more_parts_than_the_transfer_window(tmp_path, moto_server, s3_bucket, monkeypatch):
    """boto3's transfer manager, writing into a stream it cannot seek, keeps at most 10 parts in
    memory; with the project's client it once deadlocked from the 11th part on (an 88 MB backup
    never restored). 1 MiB parts make a 12-part object of a small backup."""
    import os as _os

    import zstandard as _zstd

    from ops_platform.lib.artifacts import Manifest, artifact_name, make_backup_id, utc_iso
    from ops_platform.lib.restore import fetch as fetch_module
    from ops_platform.lib.restore.resolve import BackupCandidate
    from ops_platform.lib.stores import S3Store
    from ops_platform_tests.conftest import S3_BUCKET

    monkeypatch.setattr(fetch_module, "S3_PART_SIZE", 1 << 20)
    raw = _os.urandom(12 << 20)
    stored = _zstd.ZstdCompressor(level=1).compress(raw)
    import hashlib as _hashlib
    from datetime import datetime as _datetime, timezone as _timezone

    created = _datetime(2026, 11, 26, 12, tzinfo=_timezone.utc)
    backup_id = make_backup_id("production", created)
    manifest = Manifest(id=backup_id, environment="production", kind="scheduled", created_at=utc_iso(created),
                        database="app", server_version="15", pg_dump_version="15", compression="zstd",
                        compression_level=1, artifact=artifact_name(backup_id, "zstd"), raw_bytes=len(raw),
                        stored_bytes=len(stored), sha256=_hashlib.sha256(stored).hexdigest(), duration_seconds=1.0,
                        verified=True)
    store = S3Store(s3_bucket, S3_BUCKET, "parts")
    s3_bucket.put_object(Bucket=S3_BUCKET, Key=store.key("production", manifest.artifact), Body=stored)
    candidate = BackupCandidate(manifest, "s3", store.location("production", manifest.artifact))
    result: dict = {}

    def fetch() -> None:
        result["fetched"] = fetch_module.fetch_candidate(candidate, tmp_path, store)

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the S3 fetch hung"
    assert result["fetched"].raw_bytes == len(raw) and result["fetched"].path.read_bytes() == raw

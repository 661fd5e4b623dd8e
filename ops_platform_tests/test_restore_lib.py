"""The restore steps (ops_platform.lib.restore) against the real PostgreSQL and moto S3."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import psycopg
import pytest

from ops_platform.lib.restore import RestoreInputError, RestoreStepError
from ops_platform.lib.restore.databases import (
    can_create_databases, create_database, database_exists, drop_stale_scratch, make_stamp, restore_lock, scratch_name,
)
from ops_platform.lib.restore.fetch import fetch_candidate, fetch_first_intact, make_work_dir
from ops_platform.lib.restore.pg_restore import plan_grants, restore_into
from ops_platform.lib.restore.resolve import resolve_backup
from ops_platform.lib.restore.verify import verify_restored_database
from ops_platform_tests.conftest import DB_PASSWORD
from ops_platform_tests.restore_helpers import (  # noqa: F401 - fixtures
    CHECKS_SQL, READER_ROLE, SOURCE_DB, backup_set, cleanup_databases, database_names, relation_acl, schema_dump,
    table_fingerprints, url_for, watch_all_cmdlines,
)

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
        fetched = fetch_first_intact(resolution.candidates, work, progress=lambda d, t: seen_progress.append((d, t)))
    finally:
        os.umask(previous_umask)
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    assert stat.S_IMODE(fetched.path.stat().st_mode) == 0o600
    assert fetched.raw_bytes == backup_set.new.raw_bytes and fetched.sha256 == backup_set.new.sha256
    assert seen_progress[-1] == (backup_set.new.stored_bytes, backup_set.new.stored_bytes)
    assert fetched.path.read_bytes()[:5] == b"PGDMP"

    grants = plan_grants(SOURCE_URL, fetched.path)
    assert grants.keep_acl and READER_ROLE in grants.roles
    scratch = scratch_name(SOURCE_DB, make_stamp())
    create_database(SOURCE_URL, scratch, like=SOURCE_DB)
    stop = threading.Event()
    leaks, programs, scanner = watch_all_cmdlines(DB_PASSWORD, stop)
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

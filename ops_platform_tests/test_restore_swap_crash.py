"""A restore's swap stopped at every step, as the night it matters would stop it: SIGKILL (the OOM
killer, a lost machine) at each step, with a client session frozen (SIGSTOP, as a stuck client
is) to widen the wait for sessions; and SIGTERM/SIGINT, which finish or undo the swap before the
command exits. Whatever stopped it, health says what happened, and the next command that touches
the environment (``restore --recover``, a backup, a restore) finishes or undoes it and says which.

Rule under test: before the live database was renamed the swap is undone (the live database is
the same database, with its content, accepting connections); after, it is finished (the live name
holds the backup's content; the previous database is kept)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import psycopg
import pytest

from ops_platform_tests.conftest import DB_PASSWORD, DB_USER, PG_HOST, PG_PORT, psql
from ops_platform_tests.restore_e2e_helpers import (
    PREFIX,
    Site,
    content,
    copy_tree,
    create_live,
    database_names,
    drop_database,
    fingerprint,
    make_env,
    run_sql_as,
)
from ops_platform_tests.waiting import wait_for

LIVE = PREFIX + "swapcrash"
AFTER_BACKUP = "INSERT INTO customers (email) VALUES ('written-after-the-backup@example.com');"


@pytest.fixture(scope="module")
def backup(tmp_path_factory):
    """One local backup of LIVE, made with the CLI, and its content."""
    root = tmp_path_factory.mktemp("swap_crash")
    create_live(LIVE)
    site = Site(root / "home", root / "backups", make_env(root / "home", root / "backups", {"development": LIVE}),
                LIVE)
    backup_id = site.backup()
    yield root / "backups", backup_id, content(LIVE)
    for name in database_names(LIVE):
        drop_database(name)


@pytest.fixture
def site(backup, tmp_path, slack_server):
    """A fresh live database (the backup's content plus one row), the backups, a new instance."""
    backups, _, _ = backup
    for name in database_names(LIVE):
        drop_database(name)
    create_live(LIVE)
    run_sql_as(LIVE, AFTER_BACKUP)
    backup_dir = copy_tree(backups, tmp_path / "backups")
    env = make_env(tmp_path / "home", backup_dir, {"development": LIVE}, slack_webhook=slack_server.webhook_url)
    yield Site(tmp_path / "home", backup_dir, env, LIVE)
    for name in database_names(LIVE):
        drop_database(name)


def journal(site: Site) -> dict | None:
    for path in (site.backup_dir / ".swaps" / "development").glob("swap-*.json"):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None
    return None


def start_restore_stopping_at(site: Site, backup_id: str, step: str) -> subprocess.Popen:
    """A restore over LIVE that pauses right after the journal announces ``step``; returns once
    it is there."""
    process = site.popen("restore", backup_id, "development", "--yes",
                         env={"OPS_PLATFORM_FAULT_SWAP_PAUSE": f"{step}=120"})
    try:
        wait_for(lambda: (journal(site) or {}).get("step") == step, 180, interval=0.05, what=f"the swap at {step}")
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


def allows_connections(name: str) -> bool:
    return psql(f"SELECT datallowconn FROM pg_database WHERE datname = '{name}'") == "t"


def kept_databases() -> list[str]:
    return [name for name in database_names(LIVE) if "__pre_restore_" in name]


def scratch_databases() -> list[str]:
    return [name for name in database_names(LIVE) if "__restore_" in name and "__pre_restore_" not in name]


def assert_undone(before) -> None:
    assert fingerprint(LIVE) == before and allows_connections(LIVE)
    assert kept_databases() == [] and scratch_databases() == []


def assert_finished(restored: dict) -> None:
    assert content(LIVE) == restored and allows_connections(LIVE)
    (kept,) = kept_databases()
    assert allows_connections(kept) and scratch_databases() == []


@pytest.mark.parametrize("step, next_command", [
    ("blocking", "recover"),
    ("renaming_copy", "recover"),
    ("reopening", "backup"),
])
def test_a_swap_killed_at_a_step_is_finished_or_undone_by_the_next_command(backup, site, step, next_command):
    _, backup_id, restored = backup
    before = fingerprint(LIVE)
    process = start_restore_stopping_at(site, backup_id, step)
    process.kill()
    process.wait()
    assert journal(site)["step"] == step

    if step == "renaming_copy":  # the worst moment: no database has the live name
        assert LIVE not in database_names(LIVE)
        health = site.cli("health", "development", "--json")
        assert health.returncode == 1, health.stdout + health.stderr
        assert f"a restore's swap of {LIVE} stopped between renaming it and renaming the restored copy" in health.stdout
        assert f"no database is named {LIVE}" in health.stdout and "restore --recover development" in health.stdout

    if next_command == "recover":
        result = site.cli("restore", "--recover", "development")
        said = result.stdout
    else:
        result = site.cli("backup", "development")
        said = result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    action = "undone" if step == "blocking" else "finished"
    assert f"the interrupted swap of {LIVE} was {action}" in said, said
    if action == "undone":
        assert_undone(before)
    else:
        assert_finished(restored)
    assert journal(site) is None
    again = site.cli("restore", "--recover", "development")
    assert again.returncode == 0 and "nothing to recover" in again.stdout


def test_a_swap_killed_while_waiting_for_a_frozen_session_is_undone_by_the_next_restore(backup, site, slack_server):
    """A client's backend frozen with SIGSTOP cannot be terminated: the swap keeps retrying with the
    live database closed to new connections. SIGKILL there; the next restore undoes it first (the
    live database opens again, unchanged), then does its own work."""
    _, backup_id, restored = backup
    before = fingerprint(LIVE)
    client = psycopg.connect(f"postgresql://{DB_USER}:{DB_PASSWORD}@{PG_HOST}:{PG_PORT}/{LIVE}", autocommit=True)
    backend = client.info.backend_pid
    os.kill(backend, signal.SIGSTOP)
    try:
        process = site.popen("restore", backup_id, "development", "--yes")
        wait_for(lambda: (journal(site) or {}).get("step") == "renaming_live", 180, interval=0.05,
                 what="the swap waiting for sessions")
        time.sleep(1.0)
        assert not allows_connections(LIVE)
        process.kill()
        process.wait()
    finally:
        os.kill(backend, signal.SIGCONT)
        client.close()
    assert not allows_connections(LIVE), "the kill left the live database closed, as the issue observed"
    health = site.cli("health", "development", "--json")
    assert "while ending its sessions to rename it" in health.stdout and f"{LIVE} does not accept connections" \
        in health.stdout, health.stdout

    slack_server.reset()
    result = site.cli("restore", "latest", "development", "--yes")
    assert result.returncode == 0, result.stderr
    assert f"warning: the interrupted swap of {LIVE} was undone" in result.stderr
    assert content(LIVE) == restored and allows_connections(LIVE)
    assert fingerprint(kept_databases()[0])[1] == before[1]
    assert any("Interrupted restore swap undone" in text for text in slack_server.texts())


@pytest.mark.parametrize("sig, step, code", [
    (signal.SIGTERM, "renaming_copy", 143),
    (signal.SIGINT, "blocking", 130),
])
def test_sigterm_or_sigint_in_the_swap_finish_or_undo_it_before_exiting(backup, site, slack_server, sig, step, code):
    _, backup_id, restored = backup
    before = fingerprint(LIVE)
    process = start_restore_stopping_at(site, backup_id, step)
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    last = err.strip().splitlines()[-1]
    if step == "blocking":
        assert f"the interrupted swap of {LIVE} was undone: {LIVE} is the database it was" in last, last
        assert "left untouched" not in last
        assert_undone(before)
    else:
        assert f"the interrupted swap of {LIVE} was finished: {LIVE} now holds the restored copy of {backup_id}" \
            in last, last
        assert_finished(restored)
    assert journal(site) is None
    assert any(f"was {'undone' if step == 'blocking' else 'finished'}" in text for text in slack_server.texts())

"""pg_stat_statements loaded: a private PostgreSQL cluster started for this module with
``shared_preload_libraries=pg_stat_statements`` (initdb as the ``postgres`` OS user in a temporary
directory, on a free loopback port; stopped and removed afterwards)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from ops_platform.lib.insight.database_stats import collect_snapshot
from ops_platform_tests.conftest import free_port

BIN = Path("/usr/lib/postgresql/15/bin")
ROLE = f"ops_insight_stmt_monitor_{os.getpid()}"
SECRET_LITERAL = "Sekret-Literal-8812"


def _as_postgres(*command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *command], capture_output=True, text=True,
                          timeout=timeout, check=True)


@pytest.fixture(scope="module")
def private_cluster():
    if not (BIN / "initdb").exists() or shutil.which("runuser") is None or os.geteuid() != 0:
        pytest.skip("needs root, runuser and PostgreSQL 15's initdb to start a private cluster")
    root = Path(tempfile.mkdtemp(prefix="ops_insight_pg_"))
    shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    try:
        _as_postgres(str(BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync",
                     "--no-instructions")
        options = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements "
                   "-c fsync=off -c pg_stat_statements.track_utility=on")
        _as_postgres(str(BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(["runuser", "-u", "postgres", "--", str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate",
                            "-w", "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_top_statements_appear_when_loaded_and_literals_are_masked(private_cluster):
    url = private_cluster
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("CREATE EXTENSION pg_stat_statements")
        admin.execute(f"CREATE ROLE {ROLE} LOGIN")
        admin.execute(f"GRANT pg_monitor TO {ROLE}")
        admin.execute("CREATE TABLE items AS SELECT g AS id FROM generate_series(1, 1000) g")
        for _ in range(3):
            admin.execute("SELECT pg_sleep(0.05)")
        admin.execute(f"ALTER ROLE {ROLE} PASSWORD '{SECRET_LITERAL}'")
    snapshot = collect_snapshot(url, statement_timeout_ms=5000, lock_timeout_ms=200, top_tables=5, top_statements=10)
    assert snapshot.statements_note is None
    assert snapshot.statements, "no statements read"
    top = snapshot.statements[0]
    assert "pg_sleep" in top.query and top.calls == 3 and top.total_ms >= 150
    assert top.mean_ms == pytest.approx(top.total_ms / 3, rel=0.01)
    assert all(SECRET_LITERAL not in s.query for s in snapshot.statements)
    assert any("PASSWORD '***'" in s.query for s in snapshot.statements)
    monitor_url = url.replace("postgres@", f"{ROLE}@")
    monitored = collect_snapshot(monitor_url, statement_timeout_ms=5000, lock_timeout_ms=200, top_tables=5,
                                 top_statements=10)
    assert any("pg_sleep" in s.query for s in monitored.statements), "pg_monitor should see other roles' statements"

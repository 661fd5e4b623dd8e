"""pg_stat_statements loaded: a private PostgreSQL cluster started for this module with
``shared_preload_libraries=pg_stat_statements`` (initdb as the ``postgres`` OS user in a temporary
directory, on a free loopback port; stopped and removed afterwards). Statements that carry secrets
are run on it, and the real ``database_stats`` asset and ``ops_report`` (digest and weekly, posted
to the Slack test server) must show none of them."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from ops_platform.defs.resources import OpsSlackResource
from ops_platform.lib.insight.database_stats import collect_snapshot
from ops_platform.lib.messages import reports
from ops_platform_tests.conftest import SLACK_TOKEN, free_port
from ops_platform_tests.insight_helpers import posted, run_report, run_stats

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
    assert any(s.query == "ALTER ROLE (text not shown)" for s in snapshot.statements)
    monitor_url = url.replace("postgres@", f"{ROLE}@")
    monitored = collect_snapshot(monitor_url, statement_timeout_ms=5000, lock_timeout_ms=200, top_tables=5,
                                 top_statements=10)
    assert any("pg_sleep" in s.query for s in monitored.statements), "pg_monitor should see other roles' statements"


APP_ROLE = "app_secret_owner"
SECRETS = {
    "backslash": "Sekret-Backslash-4471",
    "dollar": "Sekret-Dollar-5582",
    "set_identifier": "sekret_set_ident_6693",
    "set_literal": "Sekret-Set-Literal-7704",
    "e_string": "Sekret-E-String-8815",
    "copy": "Sekret-Copy-9926",
    "do_block": "Sekret-Do-Block-1037",
    "explain": "Sekret-Explain-2148",
    "comment": "Sekret-Comment-3259",
    "nested_comment": "Sekret-Nested-4360",
    "line_comment": "Sekret-Line-5471",
}
SECRET_STATEMENTS = [
    f"ALTER ROLE {APP_ROLE} PASSWORD '{SECRETS['backslash']}\\'",  # valid: standard_conforming_strings is on
    f"ALTER ROLE {APP_ROLE} PASSWORD $p1${SECRETS['dollar']}$p1$",
    f"SET myapp.api_token = {SECRETS['set_identifier']}",
    f"SET myapp.api_token TO '{SECRETS['set_literal']}'",
    f"CREATE ROLE {APP_ROLE}_e LOGIN PASSWORD E'{SECRETS['e_string']}\\'s'",
    f"DO $$BEGIN PERFORM '{SECRETS['do_block']}'; END$$",
    f"EXPLAIN SELECT '{SECRETS['explain']}'",
    f"SELECT count(*) FROM pg_class /* {SECRETS['comment']} */",
    f"SELECT count(*) FROM pg_namespace /* outer /* inner */ {SECRETS['nested_comment']} */",
    f"SELECT count(*) FROM pg_type -- {SECRETS['line_comment']}",
]
# A known secret (from the environment) used as a column alias across the places where statement
# text is cut: the report's cell (160), the metadata view (200) and the stored snapshot (300).
KNOWN_TOKEN = "tkzq7lm2pw9xc4vbn8"
CUTS = (160, 200, 300)


def straddling_select(secret: str, cut: int) -> str:
    """A SELECT with no constants whose text has ``secret`` as a column alias across position ``cut``."""
    text = "SELECT relname AS a"
    while len(text) < cut - len(secret) // 2 - len(", relname AS "):
        text += ", relname AS f" if len(text) - text.rfind(" ") > 60 else "y"
    start = len(text) + len(", relname AS ")
    assert start + 6 < cut - 1 < start + len(secret)
    return f"{text}, relname AS {secret} FROM pg_class"


@pytest.fixture(scope="module")
def secret_database(private_cluster):
    """A database of the private cluster whose pg_stat_statements holds the secret-bearing statements."""
    with psycopg.connect(private_cluster, autocommit=True) as admin:
        admin.execute("CREATE DATABASE app_secrets")
    url = private_cluster.rsplit("/", 1)[0] + "/app_secrets"
    with psycopg.connect(url, autocommit=True) as app:
        app.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        app.execute(f"CREATE ROLE {APP_ROLE} LOGIN")
        app.execute("SELECT pg_stat_statements_reset()")
        for statement in [*SECRET_STATEMENTS, *(straddling_select(KNOWN_TOKEN, cut) for cut in CUTS)]:
            app.execute(statement)
        with app.cursor().copy(f"COPY (SELECT '{SECRETS['copy']}') TO STDOUT") as copy:
            for _ in copy:
                pass
        recorded = "\n".join(row[0] for row in app.execute(
            "SELECT query FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())"))
    assert all(secret in recorded for secret in SECRETS.values()), "pg_stat_statements should hold every secret"
    assert all(straddling_select(KNOWN_TOKEN, cut) in recorded for cut in CUTS)
    return url


def assert_no_secret(text: str, where: str) -> None:
    """None of the secrets, nor the start of the known token, is in ``text``."""
    found = [name for name, secret in SECRETS.items() if secret in text]
    found += ["known token"] if KNOWN_TOKEN[:6] in text else []
    assert not found, f"{where} shows {', '.join(found)}"


def test_secret_bearing_statements_appear_nowhere(secret_database, instance, slack_server, monkeypatch):
    """Utility statements show only their command tag; comments and constants of the rest are
    masked; a known secret is redacted before the text is cut to length, so no part of it shows."""
    monkeypatch.setenv("PRODUCTION_STATS_DATABASE_URL", secret_database)
    monkeypatch.setenv("STATS_TOP_STATEMENTS", "100")
    monkeypatch.setenv("INSIGHT_STATEMENT_TOKEN", KNOWN_TOKEN)
    monkeypatch.setattr(reports, "SLOWEST_STATEMENTS", 100)  # every statement read reaches the report
    stats = run_stats(instance, "production")
    assert stats.success
    [materialization] = stats.asset_materializations_for_node("database_stats")
    assert_no_secret(str(materialization.metadata), "database_stats metadata")
    view = materialization.metadata["statements"].value
    stored = [s["query"] for s in materialization.metadata["snapshot"].value["statements"]]
    for tag in ("ALTER ROLE", "SET", "CREATE ROLE", "DO", "EXPLAIN", "COPY"):
        assert f"{tag} (text not shown)" in stored, tag
        assert f"`{tag} (text not shown)`" in view, tag
    for shown in ("SELECT count(*) FROM pg_class", "SELECT count(*) FROM pg_namespace",
                  "SELECT count(*) FROM pg_type", "SELECT relname AS a"):
        assert any(query.startswith(shown) for query in stored), shown
    logs = "\n".join(str(entry) for entry in instance.all_logs(stats.run_id))
    assert_no_secret(logs, "the run's event log")

    slack = OpsSlackResource(token=SLACK_TOKEN, base_url=slack_server.api_url, channel="#ops", max_retries=1)
    for kind in ("weekly", "digest"):
        result = run_report(instance, kind, slack=slack)
        assert result.success, kind
        [report] = result.asset_materializations_for_node("ops_report")
        markdown = result.output_for_node("ops_report")
        if kind == "weekly":
            assert "`ALTER ROLE (text not shown)`" in markdown and "`SELECT count(*) FROM pg_class" in markdown
        assert_no_secret(markdown, f"the {kind} report")
        assert_no_secret(str(report.metadata), f"the {kind} report's metadata")
    assert len(posted(slack_server)) == 2
    assert_no_secret(slack_server.all_bodies(), "Slack")

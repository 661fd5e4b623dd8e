"""Helpers for the end-to-end restore tests (``ops-platform restore`` in a subprocess, ``restore_job``
in process and through the webserver): databases of this session, a private instance, backup folder
and S3 prefix per test, content fingerprints, and the checks every restore test repeats.

Every database these tests create starts with PREFIX and every role with ROLE_PREFIX, so a
module's teardown can drop everything it made."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ops_platform_tests.conftest import DB_PASSWORD, DB_USER, PG_HOST, PG_PORT, psql

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLI = str(BIN / "ops-platform")
SESSION = os.getpid()
PREFIX = f"ops_re_{SESSION}_"
ROLE_PREFIX = f"ops_re_role_{SESSION}_"
BUCKET = f"ops-re-{SESSION}"
STEP_PREFIXES = ["resolve:", "fetch:", "safety backup:", "pg_restore:", "migrate:", "verify:", "swap:"]

# Deterministic, so a database rebuilt from it has the content (and sequence states) of its backup.
DATA_SQL = """
CREATE TABLE customers (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, profile jsonb);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers(id), total numeric(12,2),
                     note text);
CREATE INDEX orders_customer ON orders(customer_id);
INSERT INTO customers (email, profile)
  SELECT 'user' || g || '@example.com', jsonb_build_object('n', g) FROM generate_series(1, {customers}) g;
INSERT INTO orders (customer_id, total, note)
  SELECT 1 + g % {customers}, g * 1.5, md5(g::text) FROM generate_series(1, {orders}) g;
"""
CUSTOMERS, ORDERS = 200, 800
ROWS = CUSTOMERS + ORDERS


def url_for(database: str, user: str = DB_USER, password: str = DB_PASSWORD) -> str:
    return f"postgresql://{user}:{password}@{PG_HOST}:{PG_PORT}/{database}"


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def run_sql_as(database: str, sql: str, user: str = DB_USER) -> str:
    result = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", PG_HOST, "-p", str(PG_PORT),
                             "-U", user, "-d", database, "-f", "-"], input=sql, capture_output=True, text=True,
                            timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"psql failed: {result.stderr}")
    return result.stdout.strip()


def drop_database(name: str) -> None:
    psql(f"DROP DATABASE IF EXISTS {quoted(name)} WITH (FORCE)")


def create_live(name: str, owner: str = DB_USER, customers: int = CUSTOMERS, orders: int = ORDERS) -> str:
    """(Re)create ``name`` owned by ``owner`` holding DATA_SQL, loaded as ``owner``."""
    drop_database(name)
    psql(f"CREATE DATABASE {quoted(name)} OWNER {quoted(owner)}")
    run_sql_as(name, DATA_SQL.format(customers=customers, orders=orders), user=owner)
    return name


def database_names(prefix: str = PREFIX) -> list[str]:
    out = psql(f"SELECT datname FROM pg_database WHERE starts_with(datname, '{prefix}') ORDER BY 1")
    return out.splitlines() if out else []


def drop_databases(prefix: str = PREFIX) -> None:
    for name in database_names(prefix):
        drop_database(name)


def drop_roles(prefix: str = ROLE_PREFIX) -> None:
    out = psql(f"SELECT rolname FROM pg_roles WHERE starts_with(rolname, '{prefix}')")
    for role in out.splitlines() if out else []:
        psql(f"DROP ROLE IF EXISTS {quoted(role)}")


def database_oid(name: str) -> str:
    return psql(f"SELECT oid FROM pg_database WHERE datname = '{name}'")


def confirmation(backup_id: str, database: str) -> str:
    """What the launchpad's confirm must say to restore ``backup_id`` over ``database`` as it is now."""
    return f"{backup_id} over {database} #{database_oid(database)}"


def content(database: str) -> dict[str, str]:
    """Rows of every user table (count and md5 of the sorted rows) and every sequence's state,
    read as the superuser (a restore in place leaves objects owned by another role)."""
    relations = psql(r"""SELECT format('%I.%I', n.nspname, c.relname), c.relkind
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\_toast%' ORDER BY 1""", database=database)
    parts = []
    for line in relations.splitlines():
        name, kind = line.split("|")
        if kind == "S":
            parts.append(f"SELECT '{name}', (SELECT last_value::text || ',' || is_called::text FROM {name})")
        else:
            parts.append(f"SELECT '{name}', (SELECT count(*)::text || ':' || "
                         f"coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '-') FROM ONLY {name} t)")
    if not parts:
        return {}
    return dict(line.split("|", 1) for line in psql(" UNION ALL ".join(parts), database=database).splitlines())


def fingerprint(database: str) -> tuple[str, dict[str, str]]:
    """(the database's oid, its content): equal only when it is the same database, unchanged."""
    return database_oid(database), content(database)


def pids_with_parent(parent: int) -> dict[int, str]:
    """Processes whose parent is ``parent``, with their program names."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        if int(stat[stat.rindex(")") + 2:].split()[1]) == parent:
            found[int(entry)] = name
    return found


def descendants(root: int) -> dict[int, str]:
    """Every process below ``root``, with its program name."""
    found, frontier = {}, [root]
    while frontier:
        children = pids_with_parent(frontier.pop())
        found.update(children)
        frontier += list(children)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_pids(pids) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def assert_one_line_error(result, code: int, *fragments: str) -> str:
    """The command failed with ``code`` and exactly one error line (after any step lines)."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("ops-platform: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def step_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("ops-platform: error:")]


@dataclass
class Site:
    """One operator's setup: a private instance, backup folder and S3 prefix, and the variables
    the ``ops-platform`` command gets."""

    home: Path
    backup_dir: Path
    env: dict[str, str]
    live: str
    extra: dict = field(default_factory=dict)

    def cli(self, *args: str, env: dict | None = None, timeout: float = 240, stdin=subprocess.DEVNULL):
        return subprocess.run([CLI, *args], env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout, stdin=stdin, cwd=ROOT)

    def popen(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen([CLI, *args], env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=ROOT)

    def backups(self, environment: str = "development") -> list[dict]:
        result = self.cli("backups", "list", environment, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def backup(self, environment: str = "development") -> str:
        result = self.cli("backup", environment)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()[1]

    @contextlib.contextmanager
    def instance(self):
        import dagster as dg

        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            yield instance

    def runs(self, job_name: str | None = None) -> list:
        if not (self.home / "dagster.yaml").exists():
            return []
        with self.instance() as instance:
            runs = instance.get_runs()
        return [run for run in runs if job_name is None or run.job_name == job_name]

    def run_texts(self) -> str:
        """Every run's config and every event of every run on the instance, as text."""
        if not (self.home / "dagster.yaml").exists():
            return ""
        with self.instance() as instance:
            parts = []
            for run in instance.get_runs():
                parts.append(json.dumps(run.run_config))
                parts.append(json.dumps(run.tags))
                parts.extend(str(entry) for entry in instance.all_logs(run.run_id))
        return "\n".join(parts)


def make_env(home: Path, backup_dir: Path, databases: dict[str, str], *, s3_prefix: str | None = None,
             slack_webhook: str | None = None, url=url_for) -> dict[str, str]:
    """The variables of an operator's shell: only the environments in ``databases``."""
    env = {key: value for key, value in os.environ.items()
           if not key.endswith(("DATABASE_URL", "MIGRATE_COMMAND", "_API_URL", "_FRONTEND_URL", "_REDIS_URL"))
           and key not in ("API_URL", "FRONTEND_URL", "REDIS_URL")
           and not key.startswith(("SLACK_", "AWS_S3_", "RESTORE_", "PYTEST_"))}
    variables = {"production": "PRODUCTION_DATABASE_URL", "staging": "STAGING_DATABASE_URL",
                 "development": "DATABASE_URL"}
    for environment, database in databases.items():
        env[variables[environment]] = url(database)
    env.update({"DAGSTER_HOME": str(home), "BACKUP_DIR": str(backup_dir), "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1"})
    if s3_prefix:
        env.update({"AWS_S3_BUCKET": BUCKET, "AWS_S3_PREFIX": s3_prefix})
    if slack_webhook:
        env["SLACK_WEBHOOK_URL"] = slack_webhook
    return env


def s3_client():
    from ops_platform.lib.stores import make_s3_client

    return make_s3_client()


def s3_keys(client, prefix: str) -> list[str]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/" if prefix else ""):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def copy_s3_prefix(client, source: str, target: str) -> None:
    for key in s3_keys(client, source):
        client.copy_object(Bucket=BUCKET, Key=target + key[len(source):], CopySource={"Bucket": BUCKET, "Key": key})


def empty_bucket(client) -> None:
    for key in s3_keys(client, ""):
        client.delete_object(Bucket=BUCKET, Key=key)


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target

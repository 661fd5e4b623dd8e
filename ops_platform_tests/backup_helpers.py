"""Helpers shared by the backup tests: a larger database, the S3 fault proxy, process watchers."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ops_platform_testkit.s3_fault_proxy import S3FaultProxy
from ops_platform_tests.conftest import DB_USER, PG_HOST, psql, reset_database

BIG_ROWS = 600_000


def fill_big_table(database: str, rows: int = BIG_ROWS) -> None:
    """About 80 MB raw of poorly-compressible text, so a dump takes long enough to interrupt
    and its compressed form spans several 16 MB S3 parts."""
    sql = ("CREATE TABLE events (id bigint PRIMARY KEY, payload text);"
           f"INSERT INTO events SELECT g, md5(random()::text) || md5(random()::text) || "
           f"md5(random()::text) || md5(random()::text) FROM generate_series(1, {rows}) g;")
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PG_HOST, "-U", DB_USER, "-d", database,
                    "-c", sql], check=True, capture_output=True)


@pytest.fixture
def big_database(databases):
    """The production test database with the ``events`` table added."""
    fill_big_table(databases["production"])
    return databases["production"]


@pytest.fixture
def empty_database():
    """The staging test database with no tables at all."""
    name = reset_database("staging")
    psql("DROP TABLE orders; DROP TABLE customers;", database=name)
    return name


@pytest.fixture
def s3_fault_proxy(moto_server, s3_bucket, monkeypatch):
    proxy = S3FaultProxy(moto_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    yield proxy
    proxy.close()


def terminate_dump_when_streaming(database: str, folder: Path, timeout: float = 30.0) -> threading.Thread:
    """In the background: wait until the dump has written part of its file, then terminate
    pg_dump's backend, as an operator or an OOM kill would."""
    result = {}

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            partials = list(folder.rglob(".*.partial")) if folder.exists() else []
            if partials and any(p.exists() and p.stat().st_size > 1_000_000 for p in partials):
                # one statement finds and ends the dump's session: the dump is still streaming then
                out = psql(f"WITH dump AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE datname = '{database}' "
                           "AND application_name = 'ops_platform' AND backend_type = 'client backend') "
                           "SELECT pid FROM dump WHERE pg_terminate_backend(pid)")
                if out:
                    result["terminated"] = [int(pid) for pid in out.split()]
                    return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.result = result
    thread.start()
    return thread


def watch_argv(secrets: list[str], stop: threading.Event) -> tuple[list[str], set[str], threading.Thread]:
    """Scan every process's argv until ``stop``: (argv lines holding a secret, program names seen)."""
    leaks: list[str] = []
    programs: set[str] = set()

    def on_argv(program: str, argv: bytes) -> None:
        programs.add(program)
        if any(secret.encode() in argv for secret in secrets):
            leaks.append(argv.replace(b"\0", b" ").decode(errors="replace"))

    return leaks, programs, _scan_argv(on_argv, stop)


def watch_cmdlines(program: str, stop: threading.Event) -> tuple[list[str], threading.Thread]:
    """Collect the argv of every running ``program`` process until ``stop`` is set."""
    seen: list[str] = []

    def on_argv(name: str, argv: bytes) -> None:
        if name == program:
            seen.append(argv.replace(b"\0", b" ").decode(errors="replace"))

    return seen, _scan_argv(on_argv, stop)


def _scan_argv(on_argv, stop: threading.Event) -> threading.Thread:
    def scan():
        while not stop.is_set():
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    raw = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if raw:
                    on_argv(os.path.basename(raw.split(b"\0")[0].decode(errors="replace")), raw)
            time.sleep(0.002)

    thread = threading.Thread(target=scan, daemon=True)
    thread.start()
    return thread

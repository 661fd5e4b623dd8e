"""Discovery benchmark: a server with 500 databases (issue 19: discovery in under 2 s).

Creates 500 empty databases ``ops_bench_tg_000`` ... ``ops_bench_tg_499`` on the local server (two
connections in parallel; about a minute, then about as long to drop them: they are always dropped
at the end), then, interleaved and repeated:

- the baseline: a fresh connection and ``SELECT datname FROM pg_database``;
- ``lib/targets.discover_server`` for a server whose ``databases`` selects the 500: connection,
  the one query, the selection and 500 targets;
- the same with ``databases: all`` (the 500 and whatever else the server holds);
- ``ops-platform targets list`` end to end in a fresh process (interpreter, imports, the file, the
  discovery, 500 lines), and the same with no server in the file (its fixed cost), for reference.

Target: discovery <= 2 s. Results: bench_results/targets.json. Run alone with
``python -m bench.bench_targets`` (PostgreSQL at 127.0.0.1:5432, trust auth).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from psycopg import sql

from ops_platform.lib import targets

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench_results" / "targets.json"
SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASES = 500
PREFIX = "ops_bench_tg_"
TARGET_SECONDS = 2.0
ROUNDS = int(os.environ.get("BENCH_REPEAT", "") or (1 if os.environ.get("BENCH_QUICK", "") not in ("", "0") else 4))
NAMES = [f"{PREFIX}{index:03d}" for index in range(DATABASES)]


def _existing() -> set[str]:
    with psycopg.connect(SERVER, autocommit=True) as connection:
        return {row[0] for row in connection.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                                                     (PREFIX,))}


def _each(statement: str, names: list[str], workers: int = 2) -> float:
    """Run ``statement`` for each name over ``workers`` connections; the wall time."""
    def run(chunk: list[str]) -> None:
        with psycopg.connect(SERVER, autocommit=True) as connection:
            for name in chunk:
                connection.execute(sql.SQL(statement).format(sql.Identifier(name)))

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, [names[index::workers] for index in range(workers)]))
    return time.perf_counter() - started


def _baseline() -> int:
    with psycopg.connect(SERVER, autocommit=True) as connection:
        return len(connection.execute("SELECT datname FROM pg_database").fetchall())


def _discover(selection: tuple[str, ...] | None) -> int:
    server = targets.Server("bench", "BENCH_SERVER_URL", selection, (), targets.DEFAULT_SCHEDULE)
    found, problems = targets.discover_server(server, {"BENCH_SERVER_URL": SERVER})
    if any(problem.kind == targets.SERVER_PROBLEM for problem in problems):
        raise RuntimeError(problems[0].message)
    return len(found)


def _cli(config_file: Path) -> int:
    environ = {**os.environ, targets.CONFIG_VARIABLE: str(config_file), "BENCH_SERVER_URL": SERVER}
    result = subprocess.run([sys.executable, "-c", "from ops_platform.cli.main import console_main; console_main()",
                             "targets", "list"], capture_output=True, text=True, env=environ, cwd=ROOT, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"targets list exited {result.returncode}: {result.stderr.strip()}")
    return len(result.stdout.splitlines())


def run() -> bool:
    missing = sorted(set(NAMES) - _existing())
    create_seconds = _each("CREATE DATABASE {}", missing) if missing else 0.0
    results: dict = {"databases": DATABASES, "created_seconds": round(create_seconds, 2), "rounds": ROUNDS}
    try:
        with tempfile.TemporaryDirectory(prefix="ops_bench_tg_") as folder:
            config_file = Path(folder) / "ops_platform.yaml"
            config_file.write_text(f"servers:\n  bench:\n    url_env: BENCH_SERVER_URL\n"
                                   f"    databases: [\"{PREFIX}*\"]\n")
            empty_file = Path(folder) / "empty.yaml"
            empty_file.write_text("")
            _discover((f"{PREFIX}*",))  # warm: imports, the server's catalog cache
            measures = {"baseline": _baseline, "discovery": lambda: _discover((f"{PREFIX}*",)),
                        "discovery_all": lambda: _discover(None), "cli": lambda: _cli(config_file),
                        "cli_without_servers": lambda: _cli(empty_file)}
            times: dict[str, list[float]] = {name: [] for name in measures}
            counts = {}
            for _ in range(ROUNDS):
                for name, function in measures.items():
                    started = time.perf_counter()
                    counts[name] = function()
                    times[name].append(time.perf_counter() - started)
    finally:
        results["dropped_seconds"] = round(_each("DROP DATABASE IF EXISTS {}", sorted(_existing())), 2)
    best = {name: min(values) for name, values in times.items()}
    median = {name: statistics.median(values) for name, values in times.items()}
    ok = best["discovery"] <= TARGET_SECONDS and counts["discovery"] == DATABASES
    results.update({"best_seconds": best, "median_seconds": median, "counts": counts, "target_seconds": TARGET_SECONDS,
                    "pass": ok})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    def line(name: str) -> str:
        return f"{best[name] * 1000:.0f} ms ({median[name] * 1000:.0f})"

    print(f"discovery of a server with {DATABASES} databases (best of {ROUNDS}, medians in brackets)")
    print(f"  {DATABASES} empty databases created in {create_seconds:.1f}s (2 connections), "
          f"dropped in {results['dropped_seconds']:.1f}s")
    print(f"  baseline: connect + SELECT datname FROM pg_database ({counts['baseline']} rows): {line('baseline')}")
    print(f"  discover_server, databases [\"{PREFIX}*\"]: {line('discovery')} for {counts['discovery']} targets "
          f"({best['discovery'] / best['baseline']:.1f}x baseline)")
    print(f"  discover_server, databases: all: {line('discovery_all')} for {counts['discovery_all']} targets")
    print(f"  ops-platform targets list, end to end in a fresh process: {line('cli')} for {counts['cli']} lines; "
          f"with no server in the file: {line('cli_without_servers')} for {counts['cli_without_servers']} lines")
    print(f"  target discovery <= {TARGET_SECONDS:g}s: {'PASS' if ok else 'FAIL'}")
    print(f"  results written to {RESULTS.relative_to(ROOT)}")
    return ok


if __name__ == "__main__":
    raise SystemExit(0 if run() else 1)

"""Fleet benchmark (issue 19 §4): one night's backups of a server with many small databases.

Creates ``ops_bench_fleet_n000`` ... (100 databases of about 5 MB of random rows; 20 with
BENCH_QUICK) from one template database on the local server; they are dropped at the end. Then,
interleaved and repeated:

- floor, back to back: ``pg_dump -Fc -Z0 -f`` of each database, one after the other; the issue's
  floor is their sum divided by the parallelism (2, the code location's executor);
- floor, two at a time: the same dumps, two running at once (what the parallelism really gives
  on this machine, for reference);
- project: the night's run as the daemon's run worker executes it: ``dagster job execute`` of
  ``fleet_backup_job`` for the server of ``ops_platform.yaml`` (discovery, one step per database
  in the code location's process pool, each dump compressed, written, read back and verified,
  manifest last), end to end in a fresh process (interpreter, imports, instance, definitions);
- project on Celery (reported, not a target): the same run with ``OPS_PLATFORM_EXECUTOR=celery``,
  its steps taken by two Celery workers already running on this machine (``celery -A
  ops_platform.celery_app worker --concurrency 1`` each, Redis on loopback as the broker, the
  instance on PostgreSQL as Celery needs), i.e. what spreading over machines costs per step.

Target: project <= 1.3 x (floor back to back / 2) + 1 s per database. Results:
bench_results/fleet.json. Run alone with ``python -m bench.bench_fleet``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench_results" / "fleet.json"
SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
DATABASES = int(os.environ.get("BENCH_FLEET_DATABASES", "") or (20 if QUICK else 100))
ROUNDS = int(os.environ.get("BENCH_REPEAT", "") or (1 if QUICK else 3))
PARALLELISM = 2
TEMPLATE = "ops_bench_fleet_template"
PREFIX = "ops_bench_fleet_n"
NAMES = [f"{PREFIX}{index:03d}" for index in range(DATABASES)]
TARGET_RATIO = 1.3
TARGET_OVERHEAD_PER_DATABASE = 1.0
ROWS = 30_000  # about 5 MB of rows (and the 7.5 MB of an empty database's catalog)


def log(message: str) -> None:
    print(message, flush=True)


def url(database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{database}"


def _admin(statement) -> None:
    with psycopg.connect(SERVER, autocommit=True) as connection:
        connection.execute(statement)


def create_databases() -> int:
    """The template (once), then each database as a copy of it; the size of one, in bytes."""
    _drop(NAMES)
    _admin(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE)))
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    with psycopg.connect(url(TEMPLATE), autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE orders AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS reference, "
            "now() - random() * interval '400 days' AS placed_at, (random() * 100000)::int AS cents "
            "FROM generate_series(1, %s) AS g", (ROWS,))
        connection.execute("ALTER TABLE orders ADD PRIMARY KEY (id)")
        connection.execute("CREATE TABLE customers AS SELECT g AS id, md5(g::text) AS email FROM generate_series(1, %s) g",
                           (ROWS // 4,))
        size = connection.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda name: _admin(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(TEMPLATE))), NAMES))
    return size


def _drop(names) -> None:
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda name: _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name))), names))


def pg_dump(name: str, folder: Path) -> float:
    started = time.monotonic()
    subprocess.run(["pg_dump", "-Fc", "-Z0", "-f", str(folder / f"{name}.dump"), url(name)], check=True)
    return time.monotonic() - started


def floor_back_to_back(scratch: Path) -> float:
    folder = Path(tempfile.mkdtemp(dir=scratch))
    started = time.monotonic()
    for name in NAMES:
        pg_dump(name, folder)
    wall = time.monotonic() - started
    shutil.rmtree(folder)
    return wall


def floor_in_parallel(scratch: Path) -> float:
    folder = Path(tempfile.mkdtemp(dir=scratch))
    started = time.monotonic()
    with ThreadPoolExecutor(PARALLELISM) as pool:
        list(pool.map(lambda name: pg_dump(name, folder), NAMES))
    wall = time.monotonic() - started
    shutil.rmtree(folder)
    return wall


def project_env(scratch: Path) -> tuple[dict, Path]:
    home = scratch / "home"
    home.mkdir(mode=0o700)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    config = scratch / "ops_platform.yaml"
    config.write_text(f'servers:\n  bench:\n    url_env: BENCH_FLEET_SERVER_URL\n    databases: ["{PREFIX}*"]\n')
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PRODUCTION_", "STAGING_", "SLACK_", "AWS_S3_", "BACKUP_", "OPS_PLATFORM_"))
           and key not in ("DATABASE_URL", "DAGSTER_HOME")}
    env.update({"DAGSTER_HOME": str(home), "OPS_PLATFORM_CONFIG": str(config), "BENCH_FLEET_SERVER_URL": SERVER,
                "PYTHONPATH": str(ROOT)})
    run_config = scratch / "run.json"
    run_config.write_text(json.dumps({"ops": {"fleet_backup_targets": {"config": {"servers": ["bench"]}}}}))
    return env, run_config


def project(scratch: Path, round_number: int) -> dict:
    env, run_config = project_env(Path(tempfile.mkdtemp(dir=scratch)))
    backups = scratch / f"backups_{round_number}"
    env["BACKUP_DIR"] = str(backups)
    return _execute(env, run_config, backups)


def _execute(env: dict, run_config: Path, backups: Path) -> dict:
    dagster = Path(sys.executable).parent / "dagster"
    started = time.monotonic()
    result = subprocess.run([str(dagster), "job", "execute", "-m", "ops_platform.definitions", "-j", "fleet_backup_job",
                             "-c", str(run_config)], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"fleet_backup_job failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    manifests = [json.loads(path.read_text()) for path in backups.rglob("*.manifest.json")]
    verified = sum(1 for manifest in manifests if manifest.get("verified"))
    if verified != DATABASES:
        raise RuntimeError(f"{verified} of {DATABASES} backups verified")
    stored = sum(manifest["stored_bytes"] for manifest in manifests)
    shutil.rmtree(backups)
    return {"wall_seconds": wall, "verified": verified, "stored_bytes": stored}


BROKER = "redis://127.0.0.1:6379/13"
INSTANCE_DATABASE = "ops_bench_fleet_instance"


class CeleryWorkers:
    """Two workers on this machine, a PostgreSQL instance and a queue of their own."""

    def __init__(self, scratch: Path):
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(INSTANCE_DATABASE)))
        _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(INSTANCE_DATABASE)))
        self.env, self.run_config = project_env(scratch)
        shutil.copy(ROOT / "deploy" / "dagster.postgres.yaml", Path(self.env["DAGSTER_HOME"]) / "dagster.yaml")
        self.env.update({"DAGSTER_POSTGRES_URL": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{INSTANCE_DATABASE}",
                         "OPS_PLATFORM_EXECUTOR": "celery", "CELERY_BROKER_URL": BROKER,
                         "CELERY_QUEUE": f"ops_bench_fleet_{os.getpid()}", "BACKUP_DIR": str(scratch / "backups")})
        self.workers = []
        celery = Path(sys.executable).parent / "celery"
        for name in ("bench-a", "bench-b"):
            log = scratch / f"{name}.log"
            with open(log, "wb") as output:
                process = subprocess.Popen([str(celery), "-A", "ops_platform.celery_app", "worker", "-n", f"{name}@%h",
                                            "--concurrency", "1", "--loglevel", "INFO", "--without-gossip",
                                            "--without-mingle"], cwd=ROOT, env=self.env, stdout=output,
                                           stderr=subprocess.STDOUT, start_new_session=True)
            self.workers.append((process, log))
        deadline = time.monotonic() + 90
        for process, log in self.workers:
            while b" ready." not in log.read_bytes():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"a Celery worker did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.3)

    def run(self, round_number: int) -> dict:
        backups = Path(self.env["BACKUP_DIR"])
        return _execute(self.env, self.run_config, backups)

    def close(self) -> None:
        for process, _ in self.workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process, _ in self.workers:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(INSTANCE_DATABASE)))


def run() -> bool:
    log(f"== fleet benchmark: {DATABASES} databases, {ROUNDS} round(s) ==")
    started = time.monotonic()
    size = create_databases()
    log(f"created {DATABASES} databases of {size / 1e6:.1f} MB each in {time.monotonic() - started:.0f} s")
    scratch = Path(tempfile.mkdtemp(prefix="ops_bench_fleet_"))
    walls: dict[str, list[float]] = {"floor": [], "floor_parallel": [], "project": [], "project_celery": []}
    stored = 0
    celery = None
    try:
        pg_dump(NAMES[0], scratch)  # warm the cache
        celery_folder = scratch / "celery"
        celery_folder.mkdir()
        celery = CeleryWorkers(celery_folder)
        for round_number in range(ROUNDS):
            order = ["floor", "floor_parallel", "project", "project_celery"]
            if round_number % 2:
                order.reverse()
            for name in order:
                if name == "floor":
                    walls[name].append(floor_back_to_back(scratch))
                elif name == "floor_parallel":
                    walls[name].append(floor_in_parallel(scratch))
                elif name == "project":
                    outcome = project(scratch, round_number)
                    walls[name].append(outcome["wall_seconds"])
                    stored = outcome["stored_bytes"]
                else:
                    walls[name].append(celery.run(round_number)["wall_seconds"])
                log(f"  round {round_number + 1}: {name:<15} {walls[name][-1]:7.2f} s")
    finally:
        if celery is not None:
            celery.close()
        shutil.rmtree(scratch, ignore_errors=True)
        _drop(NAMES + [TEMPLATE])
    best = {name: min(values) for name, values in walls.items()}
    floor_share = best["floor"] / PARALLELISM
    allowed = TARGET_RATIO * floor_share + TARGET_OVERHEAD_PER_DATABASE * DATABASES
    overhead = (best["project"] - floor_share) / DATABASES
    results = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "databases": DATABASES,
        "database_bytes": size, "stored_bytes": stored, "rounds": ROUNDS, "parallelism": PARALLELISM,
        "walls": {name: [round(value, 2) for value in values] for name, values in walls.items()},
        "best_seconds": {name: round(value, 2) for name, value in best.items()},
        "medians": {name: round(statistics.median(values), 2) for name, values in walls.items()},
        "floor_per_parallelism_seconds": round(floor_share, 2),
        "project_to_floor_per_parallelism": round(best["project"] / floor_share, 2),
        "project_to_floor_in_parallel": round(best["project"] / best["floor_parallel"], 2),
        "overhead_per_database_seconds": round(overhead, 3),
        "celery_overhead_per_database_seconds": round((best["project_celery"] - floor_share) / DATABASES, 3),
        "target": {"allowed_seconds": round(allowed, 2), "pass": best["project"] <= allowed},
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print_report(results)
    return results["target"]["pass"]


def print_report(results: dict) -> None:
    best, count = results["best_seconds"], results["databases"]
    log(f"\n{count} databases of {results['database_bytes'] / 1e6:.1f} MB; best of {results['rounds']} round(s)")
    log(f"  {'measurement':<62} {'best s':>8} {'median':>8}")
    labels = {"floor": "floor: pg_dump -Fc -Z0 of each, back to back",
              "floor_parallel": f"floor: the same, {results['parallelism']} at a time",
              "project": "fleet_backup_job (dagster job execute), end to end",
              "project_celery": "the same, steps on two Celery workers (Redis broker)"}
    for name, label in labels.items():
        log(f"  {label:<62} {best[name]:8.2f} {results['medians'][name]:8.2f}")
    log(f"  floor back to back / {results['parallelism']}: {results['floor_per_parallelism_seconds']:.2f} s; "
        f"project / that: {results['project_to_floor_per_parallelism']:.2f}x; "
        f"project / floor {results['parallelism']} at a time: {results['project_to_floor_in_parallel']:.2f}x")
    log(f"  Dagster's share per database beyond the floor: {results['overhead_per_database_seconds']:.2f} s "
        f"(on Celery: {results['celery_overhead_per_database_seconds']:.2f} s)")
    target = results["target"]
    log(f"target: <= 1.3 x floor/{results['parallelism']} + 1 s x {count} = {target['allowed_seconds']:.1f} s: "
        f"{best['project']:.1f} s {'PASS' if target['pass'] else 'FAIL'}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--report":
        print_report(json.loads(RESULTS.read_text()))
    else:
        sys.exit(0 if run() else 1)

"""The restore benchmark: ``ops-platform restore`` end to end, against the floor and the old path.

    python -m bench restore                  # or: python -m bench.restore_bench
    BENCH_QUICK=1 python -m bench restore    # one round of each
    python -m bench.restore_bench --report   # print the last results again

Setup (untimed): ``ops-platform backup development`` of the benchmark datasets (bench/dataset.py)
with the S3 leg to a moto server in its own process, so the restored backup is a real one of the
project's pipeline, local and S3; ``pg_dump -Fc -Z0 -f`` and ``pg_dump | gzip`` files for the
baselines.

Measured in the same rounds (interleaved, order alternated; best of N and medians, because the
machine is noisy), on ``ops_bench_large``:

- floor:        ``pg_restore -j2 --no-owner`` of the uncompressed custom-format file into an empty
                database (created before the clock starts);
- old path:     ``gunzip -c backup.sql.gz | psql`` (the old emergency restore) into an empty database;
- project:      ``ops-platform restore latest development --target-database <new>`` as a user waits
                for it (a subprocess with its own DAGSTER_HOME and BACKUP_DIR; S3 configured as in
                production, the local copy is read), with the inner passes from the run: the step
                seconds the restore records (``step_seconds`` of the ``database`` observation; the
                CLI prints a line per step), and before/after the run from the event log;
- reference:    ``zstd -dc`` of the stored archive into a raw file (what the fetch step must at
                least do for a local copy).

Fetching from S3 (moto): the project's fetch of the S3 copy (stream, sha256, decompress, raw file,
checked against the manifest) against a plain boto3 ``download_file`` of the same object, each in
a fresh process, plus the project's fetch of the local copy; if the S3 fetch takes about as long
as the download alone, hashing and decompression are pipelined with it. On ``ops_bench_large``
(a 15-part object) and ``ops_bench_medium`` (0.6 of it, 9 parts): with s3transfer 0.19 the
project's fetch of an object of more than 10 parts never finishes (see the README of bench/), so
a fetch is killed after FETCH_TIMEOUT, reported as a hang with what it had written, and not
retried in later rounds; ``ops-platform restore`` from S3 is run once on each (last, because a
killed restore leaves its run STARTED on the instance, which refuses further restores).

On ``ops_bench_wide`` (``ops_bench_wide_quick`` with BENCH_QUICK): the floor and ``ops-platform
restore`` of a local backup, interleaved, over a restore about three times as long (reported).

Peak RSS of the ``ops-platform restore`` process (GNU time: the largest of it and the programs it
waited for) on ``ops_bench_large`` and ``ops_bench_small`` (a quarter of it), and restoring from
S3. Targets: end to end <= 1.3 x the floor (and, as issue 16 puts it, <= 1.3 x the floor + 3 s); S3 fetch <= 1.1 x the download alone; peak RSS
<= 200 MiB and within 10 % between the two sizes. Results go to bench_results/restore.json.

Every database created is named ``ops_bench_rt_*`` and dropped; scratch files live in a temp dir
that is removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench import _cli, dataset
from bench.backup_bench import Moto, cpu_busy, wait4

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
REPEAT = int(os.environ.get("BENCH_REPEAT", "1" if QUICK else "4"))
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench_results" / "restore.json"
BUCKET = "ops-bench"
PREFIX = "ops_bench_rt_"
ZSTD = shutil.which("zstd")
JOBS = 2

S3_PART_BYTES = 8 << 20  # ops_platform.lib.restore.fetch.S3_PART_SIZE
WIDE_ROUNDS = 1 if QUICK else 2
FETCH_TIMEOUT = 45.0 if QUICK else 90.0  # seconds; the download of the largest object takes one or two

TARGET_RATIO = 1.3
FIXED_START_SECONDS = 3.0  # issue 16's allowance for the fixed start of a Dagster run: <= 1.3 x floor + 3 s
TARGET_S3_RATIO = 1.1
TARGET_RSS_MIB = 200
TARGET_RSS_SPREAD = 0.10

STEPS = ("resolve", "fetch", "safety_backup", "pg_restore", "migrate", "verify", "swap")


def log(message: str) -> None:
    print(message, flush=True)


# ------------------------------------------------------------------ databases


def _admin():
    return psycopg.connect(f"{dataset.SERVER}/postgres", autocommit=True)


def create_database(name: str) -> None:
    with _admin() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with _admin() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_bench_databases() -> list[str]:
    """Every database this benchmark creates (``ops_bench_rt_*``, scratch copies included)."""
    with _admin() as connection:
        names = [row[0] for row in connection.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX.replace("_", r"\_") + "%",))]
        for name in names:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return names


def table_count(name: str) -> int:
    with psycopg.connect(f"{dataset.SERVER}/{name}", autocommit=True) as connection:
        return connection.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]


# ------------------------------------------------------------------ baselines


def _run_timed(command: list[str], what: str, **popen) -> float:
    started = time.monotonic()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, **popen)
    errors = process.stderr.read().decode(errors="replace")
    code, _ = wait4(process)
    wall = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"{what} failed with {code}: {errors[-800:]}")
    return wall


def measure_floor(raw_file: Path) -> dict:
    target = PREFIX + "floor"
    create_database(target)
    try:
        wall = _run_timed(["pg_restore", f"--jobs={JOBS}", "--no-owner", "--no-password",
                           f"--dbname={dataset.SERVER}/{target}", str(raw_file)], "pg_restore (floor)")
    finally:
        drop_database(target)
    return {"wall_seconds": wall}


def measure_psql(sql_gz: Path) -> dict:
    target = PREFIX + "psql"
    create_database(target)
    try:
        started = time.monotonic()
        gunzip = subprocess.Popen(["gzip", "-dc", str(sql_gz)], stdout=subprocess.PIPE)
        psql = subprocess.Popen(["psql", "-q", "-X", "-v", "ON_ERROR_STOP=1", f"--dbname={dataset.SERVER}/{target}"],
                                stdin=gunzip.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        gunzip.stdout.close()
        errors = psql.stderr.read().decode(errors="replace")
        gunzip_code, _ = wait4(gunzip)
        psql_code, _ = wait4(psql)
        wall = time.monotonic() - started
        if gunzip_code or psql_code:
            raise RuntimeError(f"gunzip | psql failed ({gunzip_code}, {psql_code}): {errors[-800:]}")
    finally:
        drop_database(target)
    return {"wall_seconds": wall}


def measure_zstd_decompress(artifact: Path, scratch: Path) -> dict:
    target = scratch / "reference.raw.dump"
    try:
        with open(target, "wb") as out:
            wall = _run_timed([ZSTD, "-q", "-d", "-c", str(artifact)], "zstd -d", stdout=out)
    finally:
        target.unlink(missing_ok=True)
    return {"wall_seconds": wall}


# ------------------------------------------------------------------ the project


class Project:
    """One dataset's DAGSTER_HOME, backup folder and S3 prefix, with a real backup in them."""

    def __init__(self, db: dataset.Dataset, scratch: Path, moto: Moto | None):
        self.db = db
        self.home = scratch / f"home-{db.name}"
        self.backups = scratch / f"backups-{db.name}"
        self.no_local = scratch / f"empty-{db.name}"  # a backup folder without copies: restores read S3
        self.no_local.mkdir(parents=True, exist_ok=True)
        self.s3_prefix = f"bench/{db.name}"
        self.s3 = {"AWS_S3_BUCKET": BUCKET, "AWS_S3_PREFIX": self.s3_prefix,
                   "AWS_ENDPOINT_URL_S3": moto.endpoint} if moto else {}
        self.env = _cli.cli_env(database_url=db.url, dagster_home=self.home, backup_dir=self.backups, extra=self.s3)
        self.manifest: dict = {}
        self.backup_run: dict = {}

    def make_backup(self) -> None:
        self.backup_run = _cli.run_cli(["backup", "development"], self.env)
        manifests = sorted((self.backups / "development").glob("*.manifest.json"))
        self.manifest = json.loads(manifests[-1].read_text())
        in_s3 = any(location.startswith("s3://") for location in self.manifest["locations"])
        if not self.manifest.get("verified") or in_s3 != bool(self.s3):
            raise RuntimeError(f"the backup of {self.db.name} is not verified with the copies asked for: {self.manifest}")

    @property
    def artifact(self) -> Path:
        return self.backups / "development" / self.manifest["artifact"]

    def restore(self, target: str, from_s3: bool = False, timeout: float = 3600) -> dict:
        env = self.env if not from_s3 else {**self.env, "BACKUP_DIR": str(self.no_local)}
        try:
            run = _cli.run_cli(["restore", "latest", "development", "--target-database", target], env,
                               timeout=timeout)
            tables = table_count(target)
        except _cli.Hung as hung:
            work = Path(env["BACKUP_DIR"]) / ".restore"
            written = _bytes_under(work)
            shutil.rmtree(work, ignore_errors=True)
            return {"hung": True, "timeout_seconds": hung.seconds, "peak_rss_kib_before_kill": hung.peak_rss_kib,
                    "raw_bytes_written": written, "output": hung.output}
        finally:
            drop_database(target)
        log_ = _cli.run_log(self.home, run["run_id"])
        metadata = next(o["metadata"] for o in log_["observations"] if "step_seconds" in o["metadata"])
        parts = _cli.breakdown(run, log_)
        step_seconds = metadata["step_seconds"]
        parts["step_seconds"] = step_seconds
        parts["in_product_steps"] = sum(step_seconds.values())
        parts["startup_overhead"] = run["wall_seconds"] - parts["in_product_steps"]
        # wall = before_run + the recorded steps + the rest of the run + after_run, exactly
        parts["run_other"] = (log_["run_end"] - log_["run_start"]) - parts["in_product_steps"]
        parts["pg_restore_process"] = pg_restore_seconds(run["stderr"])
        return {"wall_seconds": run["wall_seconds"], "peak_rss_kib": run["peak_rss_kib"],
                "cpu_seconds": run["cpu_seconds"], "fetched_from": metadata.get("fetched_from"),
                "rows_verified": metadata.get("rows_verified"), "tables_in_target": tables,
                "step_lines": [line for line in run["stderr"].splitlines() if line.strip()],
                "breakdown": parts}


def pg_restore_seconds(stderr: str) -> float | None:
    """The pg_restore process's own wall time, from the step line the CLI prints
    ("pg_restore: 25 archive items into X with 2 job(s) in 9.6s"; 0.1 s resolution)."""
    match = re.search(r"^pg_restore: \d+ archive items into .* in (?:(\d+)m )?([\d.]+)s$", stderr, re.MULTILINE)
    if not match:
        return None
    return 60 * int(match[1] or 0) + float(match[2])


def run_child(mode: str, args: dict, timeout: float = 3600) -> dict:
    process = _cli.run_group([sys.executable, "-m", "bench._restore_child", mode, json.dumps(args)],
                             timeout=timeout, what=f"bench._restore_child {mode}", cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    if process.returncode != 0:
        raise RuntimeError(f"bench child ({mode}) failed with {process.returncode}:\n"
                           f"{process.stderr.decode(errors='replace')[-3000:]}")
    return json.loads(process.stdout.decode().strip().splitlines()[-1])


def _bytes_under(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) if folder.exists() else 0


def measure_fetch(project: Project, source: str, scratch: Path, moto: Moto) -> dict:
    work = scratch / "fetch"
    try:
        return run_child("fetch", {"backup_dir": str(project.backups), "s3_bucket": BUCKET,
                                   "s3_prefix": project.s3_prefix, "source": source, "work_dir": str(work),
                                   "moto_pid": moto.process.pid}, timeout=FETCH_TIMEOUT)
    except _cli.Hung as hung:
        return {"hung": True, "timeout_seconds": hung.seconds, "raw_bytes_written": _bytes_under(work),
                "peak_rss_kib_before_kill": hung.peak_rss_kib}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_download(project: Project, scratch: Path, moto: Moto) -> dict:
    key = f"{project.s3_prefix}/development/{project.manifest['artifact']}"
    return run_child("download", {"s3_bucket": BUCKET, "key": key, "path": str(scratch / "download.dump.zst"),
                                  "moto_pid": moto.process.pid}, timeout=FETCH_TIMEOUT)


def measure_wide(scratch: Path, runs: dict, sizes: dict, show) -> dict:
    """The floor and ``ops-platform restore`` of the wide dataset (local copy), interleaved: the
    same fixed costs over a restore about three times as long."""
    wide = dataset.WIDE_QUICK if QUICK else dataset.WIDE
    sizes[wide.name] = dataset.ensure(wide, log)
    log(f"on {wide.name} ({sizes[wide.name] / 1e6:.0f} MB on disk): floor and ops-platform restore, local copy")
    project = Project(wide, scratch, None)
    project.make_backup()
    raw_file = scratch / "wide_floor.dump"
    subprocess.run(["pg_dump", "--format=custom", "--compress=0", "--no-password", f"--file={raw_file}",
                    f"--dbname={wide.url}"], check=True)
    try:
        for round_number in range(WIDE_ROUNDS):
            steps = [("wide_floor", lambda: measure_floor(raw_file)),
                     ("wide_cli", lambda: project.restore(PREFIX + "wide"))]
            for name, measure in steps[::-1] if round_number % 2 else steps:
                runs[name].append(measure())
                show(name)
    finally:
        raw_file.unlink(missing_ok=True)
        shutil.rmtree(project.backups, ignore_errors=True)
    return {"dataset": wide.name, "raw_bytes": project.manifest["raw_bytes"],
            "stored_bytes": project.manifest["stored_bytes"]}


# ------------------------------------------------------------------ the run


def main() -> dict:
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"})
    log(f"== restore benchmark (ops-platform restore){' [quick]' if QUICK else ''} ==")
    large, medium, small = dataset.LARGE, dataset.MEDIUM, dataset.SMALL
    sizes = {}
    for db in (large, medium, small):
        sizes[db.name] = dataset.ensure(db, log)
        log(f"{db.name}: {sizes[db.name] / 1e6:.0f} MB on disk")
    left = drop_bench_databases()
    if left:
        log(f"dropped databases left by an earlier run: {', '.join(left)}")
    scratch = Path(tempfile.mkdtemp(prefix="ops_bench_restore_"))
    moto = Moto()
    runs: dict[str, list[dict]] = {name: [] for name in LABELS}
    busy: list[float] = []
    setup: dict = {}
    started = time.monotonic()
    try:
        projects = {db.name: Project(db, scratch, moto) for db in (large, medium, small)}
        for project in projects.values():
            log(f"backing up {project.db.name} with ops-platform backup (local + S3 on moto)")
            project.make_backup()
            log(f"  {project.manifest['id']}: {project.manifest['stored_bytes'] / 1e6:.1f} MB stored, "
                f"{project.manifest['raw_bytes'] / 1e6:.1f} MB raw, {project.backup_run['wall_seconds']:.1f} s")
        project, medium_project, small_project = (projects[db.name] for db in (large, medium, small))
        raw_file, sql_gz = scratch / "floor.dump", scratch / "old.sql.gz"
        log("baseline files: pg_dump -Fc -Z0 -f, pg_dump | gzip")
        started_files = time.monotonic()
        subprocess.run(["pg_dump", "--format=custom", "--compress=0", "--no-password", f"--file={raw_file}",
                        f"--dbname={large.url}"], check=True)
        with open(sql_gz, "wb") as out:
            dump = subprocess.Popen(["pg_dump", "--no-password", f"--dbname={large.url}"], stdout=subprocess.PIPE)
            gzip = subprocess.Popen(["gzip"], stdin=dump.stdout, stdout=out)
            dump.stdout.close()
            if wait4(dump)[0] or wait4(gzip)[0]:
                raise RuntimeError("pg_dump | gzip failed")
        setup = {"raw_file_bytes": raw_file.stat().st_size, "sql_gz_bytes": sql_gz.stat().st_size,
                 "files_seconds": round(time.monotonic() - started_files, 1),
                 "backups": {name: {"manifest_id": p.manifest["id"], "stored_bytes": p.manifest["stored_bytes"],
                                    "raw_bytes": p.manifest["raw_bytes"],
                                    "s3_parts": -(-p.manifest["stored_bytes"] // S3_PART_BYTES),
                                    "backup_wall_seconds": round(p.backup_run["wall_seconds"], 2),
                                    "backup_peak_rss_mib": round((p.backup_run["peak_rss_kib"] or 0) / 1024, 1)}
                             for name, p in projects.items()}}

        log("warming up: an untimed restore of each kind")
        measure_floor(raw_file)
        project.restore(PREFIX + "warm")

        def show(name: str) -> None:
            log(f"  {LABELS[name]:<56} {_wall(runs[name][-1])}{_extra(name, runs[name][-1])}")

        for round_number in range(1, REPEAT + 1):
            busy.append(cpu_busy())
            log(f"round {round_number}/{REPEAT} (machine {busy[-1]:.0%} busy before the round)")
            steps = [("floor", lambda: measure_floor(raw_file)),
                     ("cli", lambda: project.restore(PREFIX + "e2e")),
                     ("psql", lambda: measure_psql(sql_gz))]
            if ZSTD:
                steps.append(("zstd_d", lambda: measure_zstd_decompress(project.artifact, scratch)))
            steps += [("download", lambda: measure_download(project, scratch, moto)),
                      ("fetch_local", lambda: measure_fetch(project, "local", scratch, moto)),
                      ("download_medium", lambda: measure_download(medium_project, scratch, moto)),
                      ("fetch_s3_medium", lambda: measure_fetch(medium_project, "s3", scratch, moto)),
                      ("fetch_local_medium", lambda: measure_fetch(medium_project, "local", scratch, moto))]
            if not any(run.get("hung") for run in runs["fetch_s3"]):  # a hang is measured once, not N times
                steps.append(("fetch_s3", lambda: measure_fetch(project, "s3", scratch, moto)))
            if round_number % 2 == 0:
                steps = steps[::-1]
            for name, measure in steps:
                runs[name].append(measure())
                show(name)
        log(f"on {small.name} and {medium.name}")
        # A killed restore leaves its run STARTED on its instance, which then refuses further restores:
        # restores from S3 come last on each instance, and stop at the first hang.
        timeout = (2 * min(_walls(runs["cli"])) + 30) if QUICK else (3 * min(_walls(runs["cli"])) + 60)
        for _ in range(1 if QUICK else 2):
            runs["small_cli"].append(small_project.restore(PREFIX + "small"))
            show("small_cli")
            if not any(run.get("hung") for run in runs["s3_cli_medium"]):
                runs["s3_cli_medium"].append(medium_project.restore(PREFIX + "medium_s3", from_s3=True,
                                                                    timeout=timeout))
                show("s3_cli_medium")
        runs["s3_cli"].append(project.restore(PREFIX + "large_s3", from_s3=True, timeout=timeout))
        show("s3_cli")
        setup["wide"] = measure_wide(scratch, runs, sizes, show)
    finally:
        moto.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        dropped = drop_bench_databases()
        if dropped:
            log(f"dropped {', '.join(dropped)}")

    results = summarize(sizes, setup, runs, busy, time.monotonic() - started)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_report(results)
    log(f"\nresults written to {RESULTS.relative_to(ROOT)}")
    return results


LABELS = {
    "floor": f"floor: pg_restore -j{JOBS} of a -Fc -Z0 file",
    "psql": "old emergency path: gunzip -c | psql",
    "cli": "ops-platform restore (end to end)",
    "zstd_d": "reference: zstd -dc stored archive > raw file",
    "download": "large: boto3 download_file of the S3 object",
    "fetch_s3": "large: project's fetch of the S3 copy",
    "fetch_local": "large: project's fetch of the local copy",
    "download_medium": "medium: boto3 download_file of the S3 object",
    "fetch_s3_medium": "medium: project's fetch of the S3 copy",
    "fetch_local_medium": "medium: project's fetch of the local copy",
    "small_cli": "ops-platform restore of ops_bench_small",
    "s3_cli_medium": "ops-platform restore of ops_bench_medium from S3",
    "s3_cli": "ops-platform restore of ops_bench_large from S3",
    "wide_floor": f"wide: pg_restore -j{JOBS} of a -Fc -Z0 file",
    "wide_cli": "wide: ops-platform restore (end to end)",
}


def _wall(run: dict) -> str:
    if run.get("hung"):
        return f"HUNG (killed after {run['timeout_seconds']:.0f} s)"
    return f"{run['wall_seconds']:7.2f} s"


def _extra(name: str, run: dict) -> str:
    if run.get("hung"):
        notes = []
        if run.get("raw_bytes_written") is not None:
            notes.append(f"{run['raw_bytes_written'] / 1e6:.0f} MB raw written")
        if run.get("peak_rss_kib_before_kill"):
            notes.append(f"peak RSS {run['peak_rss_kib_before_kill'] / 1024:.0f} MiB")
        return f"  ({', '.join(notes)})" if notes else ""
    if "breakdown" in run:
        steps = run["breakdown"]["step_seconds"]
        return (f"  (fetch {steps.get('fetch', 0):.2f}, pg_restore {steps.get('pg_restore', 0):.2f}, verify "
                f"{steps.get('verify', 0):.2f}, outside steps {run['breakdown']['startup_overhead']:.2f}; "
                f"peak RSS {run['peak_rss_kib'] / 1024:.0f} MiB)")
    if "moto_cpu_seconds" in run and "local" not in name:
        return f"  (moto CPU {run['moto_cpu_seconds'] / run['wall_seconds']:.0%}, peak RSS {run['peak_rss_kib'] / 1024:.0f} MiB)"
    if "peak_rss_kib" in run:
        return f"  (peak RSS {run['peak_rss_kib'] / 1024:.0f} MiB)"
    return ""


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _done(entries):
    return [run for run in entries if not run.get("hung")]


def _walls(entries):
    return [run["wall_seconds"] for run in _done(entries)]


def summarize(sizes, setup, runs, busy, seconds) -> dict:
    floor = min(_walls(runs["floor"]))
    floor_median = median(_walls(runs["floor"]))
    table = []
    for name in ("floor", "psql", "cli", "zstd_d"):
        walls = _walls(runs[name])
        if not walls:
            continue
        table.append({"name": name, "label": LABELS[name], "best_seconds": round(min(walls), 3),
                      "median_seconds": round(median(walls), 3), "ratio_to_floor": round(min(walls) / floor, 3),
                      "median_ratio_to_floor": round(median(walls) / floor_median, 3),
                      "all_walls": [round(w, 2) for w in walls]})
    cli_runs = _done(runs["cli"])
    where = {}
    for key in ("before_run", "run_other", "after_run", "startup_overhead", "in_product_steps"):
        where[key] = median([r["breakdown"][key] for r in cli_runs])
    for step in STEPS:
        where[f"step:{step}"] = median([r["breakdown"]["step_seconds"].get(step) for r in cli_runs])
    where["pg_restore_process"] = median([r["breakdown"].get("pg_restore_process") for r in cli_runs])
    fetch = {}
    for name in ("download", "fetch_s3", "fetch_local", "download_medium", "fetch_s3_medium", "fetch_local_medium"):
        done = _done(runs[name])
        hung = [r for r in runs[name] if r.get("hung")]
        entry = {"hung": len(hung), "attempts": len(runs[name])}
        if hung:
            entry["hung_detail"] = {key: hung[0].get(key) for key in
                                    ("timeout_seconds", "raw_bytes_written", "peak_rss_kib_before_kill")}
        if done:
            walls = _walls(runs[name])
            entry.update({"best_seconds": round(min(walls), 3), "median_seconds": round(median(walls), 3),
                          "all_walls": [round(w, 2) for w in walls],
                          "peak_rss_mib": round(max(r["peak_rss_kib"] for r in done) / 1024, 1),
                          "cpu_seconds": round(median([r["cpu_seconds"] for r in done]), 2),
                          "moto_cpu_share": round(median([r.get("moto_cpu_seconds", 0) / r["wall_seconds"]
                                                          for r in done]), 3)})
        fetch[name] = entry

    def s3_ratio(suffix: str) -> dict:
        fetched, download = fetch["fetch_s3" + suffix], fetch["download" + suffix]
        if fetched["hung"] or "best_seconds" not in fetched:
            return {"value": "hangs", "median": None, "target": f"<= {TARGET_S3_RATIO}", "pass": False,
                    "median_pass": False}
        best = fetched["best_seconds"] / download["best_seconds"]
        med = fetched["median_seconds"] / download["median_seconds"]
        return {"value": round(best, 3), "median": round(med, 3), "target": f"<= {TARGET_S3_RATIO}",
                "pass": best <= TARGET_S3_RATIO, "median_pass": med <= TARGET_S3_RATIO}

    def peak(entries):
        values = [r["peak_rss_kib"] for r in _done(entries) if r.get("peak_rss_kib")]
        return round(max(values) / 1024, 1) if values else None

    s3_large = runs["s3_cli"][0] if runs["s3_cli"] else {}
    rss = {"restore_cli_large_mib": peak(runs["cli"]), "restore_cli_small_mib": peak(runs["small_cli"]),
           "restore_cli_from_s3_medium_mib": peak(runs["s3_cli_medium"]),
           "restore_cli_from_s3_large_mib": peak(runs["s3_cli"]),
           "restore_cli_from_s3_large_until_killed_mib": round(s3_large["peak_rss_kib_before_kill"] / 1024, 1)
           if s3_large.get("peak_rss_kib_before_kill") else None,
           "fetch_s3_medium_process_mib": fetch["fetch_s3_medium"].get("peak_rss_mib"),
           "fetch_local_process_mib": fetch["fetch_local"].get("peak_rss_mib")}
    largest = max(v for v in rss.values() if v is not None)
    spread = abs(rss["restore_cli_large_mib"] - rss["restore_cli_small_mib"]) / min(
        rss["restore_cli_large_mib"], rss["restore_cli_small_mib"])
    cli_best, cli_median = min(_walls(cli_runs)), median(_walls(cli_runs))
    targets = {
        "end_to_end_ratio_to_floor": {"value": round(cli_best / floor, 3), "median": round(cli_median / floor_median, 3),
                                      "target": f"<= {TARGET_RATIO}", "pass": cli_best / floor <= TARGET_RATIO,
                                      "median_pass": cli_median / floor_median <= TARGET_RATIO},
        "end_to_end_seconds_vs_1.3x_floor_plus_3s": {
            "value": round(cli_best, 2), "median": round(cli_median, 2),
            "target": f"<= {TARGET_RATIO * floor + FIXED_START_SECONDS:.2f}",
            "pass": cli_best <= TARGET_RATIO * floor + FIXED_START_SECONDS,
            "median_pass": cli_median <= TARGET_RATIO * floor_median + FIXED_START_SECONDS},
        "s3_fetch_ratio_to_download_large": s3_ratio(""),
        "s3_fetch_ratio_to_download_medium": s3_ratio("_medium"),
        "restore_from_s3_large_completes": {"value": "hangs" if s3_large.get("hung") else "yes",
                                            "target": "finishes", "pass": bool(s3_large) and not s3_large.get("hung")},
        "restore_peak_rss_mib": {"value": largest, "target": f"<= {TARGET_RSS_MIB}", "pass": largest <= TARGET_RSS_MIB},
        "rss_spread_between_sizes": {"value": round(spread, 3), "target": f"<= {TARGET_RSS_SPREAD}",
                                     "pass": spread <= TARGET_RSS_SPREAD},
    }
    wide_floor, wide_cli = _walls(runs["wide_floor"]), _walls(_done(runs["wide_cli"]))
    wide = {}
    if wide_floor and wide_cli:
        wide = {**setup.get("wide", {}), "floor_best_seconds": round(min(wide_floor), 3),
                "cli_best_seconds": round(min(wide_cli), 3), "ratio": round(min(wide_cli) / min(wide_floor), 3),
                "median_ratio": round(median(wide_cli) / median(wide_floor), 3),
                "startup_overhead_median": round(median([r["breakdown"]["startup_overhead"]
                                                         for r in _done(runs["wide_cli"])]), 2),
                "pg_restore_process_median": median([r["breakdown"].get("pg_restore_process")
                                                     for r in _done(runs["wide_cli"])])}
    results = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": os.cpu_count(),
        "repeat": REPEAT, "quick": QUICK, "jobs": JOBS, "machine_busy_before_rounds": [round(b, 2) for b in busy],
        "databases": {name: {"on_disk_bytes": size} for name, size in sizes.items()}, "setup": setup,
        "table": table, "where_the_time_goes_median": where, "wide": wide, "fetch": fetch, "rss_mib": rss, "targets": targets,
        "runs": runs, "bench_seconds": round(seconds, 1),
    }
    return results


WHERE_ROWS = [
    ("before_run", "before the run: interpreter, imports, CLI checks (plan, S3 list), instance, definitions"),
    ("step:resolve", "step resolve (lock, plan, stale scratch)"),
    ("step:fetch", "step fetch (read, sha256, zstd -d, raw file)"),
    ("step:safety_backup", "step safety_backup (skipped: new target)"),
    ("step:pg_restore", "step pg_restore (create scratch, --list, grants, pg_restore -j)"),
    ("pg_restore_process", "  of which the pg_restore process itself (0.1 s resolution)"),
    ("step:migrate", "step migrate (none configured)"),
    ("step:verify", "step verify (row counts, sequences)"),
    ("step:swap", "step swap (rename scratch to target)"),
    ("run_other", "rest of the run: resources, events, IO between and around the steps"),
    ("after_run", "after the run: output, instance close, interpreter exit"),
]


def print_report(results: dict) -> None:
    large, small = dataset.LARGE.name, dataset.SMALL.name
    setup = results["setup"]
    backup = setup["backups"][large]
    log("")
    log(f"restore of {large} ({results['databases'][large]['on_disk_bytes'] / 1e6:.0f} MB on disk; backup "
        f"{backup['manifest_id']}: {backup['stored_bytes'] / 1e6:.1f} MB zstd, {backup['raw_bytes'] / 1e6:.0f} MB raw; "
        f"-Fc -Z0 file {setup['raw_file_bytes'] / 1e6:.0f} MB, .sql.gz {setup['sql_gz_bytes'] / 1e6:.1f} MB)")
    log(f"best of {results['repeat']} interleaved rounds, {results['cores']} cores, machine busy before each round: "
        f"{', '.join(f'{b:.0%}' for b in results['machine_busy_before_rounds'])}\n")
    log(f"  {'measurement':<52} {'best s':>7} {'median':>7} {'x floor':>8} {'med x':>6}  runs (s)")
    for row in results["table"]:
        log(f"  {row['label']:<52} {row['best_seconds']:>7.2f} {row['median_seconds']:>7.2f} "
            f"{row['ratio_to_floor']:>7.2f}x {row['median_ratio_to_floor']:>5.2f}x  {row['all_walls']}")
    where = results["where_the_time_goes_median"]
    floor = results["table"][0]["median_seconds"]
    cli_runs = _done(results["runs"]["cli"])
    best = min(cli_runs, key=lambda run: run["wall_seconds"])["breakdown"]
    best_values = {"before_run": best["before_run"], "run_other": best["run_other"], "after_run": best["after_run"],
                   "pg_restore_process": best.get("pg_restore_process"),
                   **{f"step:{step}": best["step_seconds"].get(step) for step in STEPS}}
    log(f"\n  where the time of ops-platform restore goes (median of {len(cli_runs)} runs; the best run, whose "
        "parts add up to its wall, in brackets):")
    for key, label in WHERE_ROWS:
        if where.get(key) is not None:
            log(f"    {label:<84} {where[key]:6.2f} s  [{best_values.get(key) or 0:.2f}]")
    cli_row = next(row for row in results["table"] if row["name"] == "cli")
    log(f"    {'= wall':<84} {cli_row['median_seconds']:6.2f} s  [{best['wall_seconds']:.2f}]")
    log(f"    {'steps as the restore records them (step_seconds)':<84} {where['in_product_steps']:6.2f} s  "
        f"[{best['in_product_steps']:.2f}]")
    log(f"    {'Dagster start-up and overhead (wall - step_seconds)':<84} {where['startup_overhead']:6.2f} s  "
        f"[{best['startup_overhead']:.2f}]")
    if where.get("pg_restore_process"):
        log(f"    pg_restore process / floor (medians): {where['pg_restore_process'] / floor:.2f}x")
    log(f"    pg_restore step / floor (medians): {where['step:pg_restore'] / floor:.2f}x; "
        f"fetch + pg_restore + verify + swap / floor: "
        f"{sum(where[f'step:{s}'] for s in ('fetch', 'pg_restore', 'verify', 'swap')) / floor:.2f}x")

    wide = results.get("wide")
    if wide:
        log(f"\n  the same on {wide['dataset']} ({wide['raw_bytes'] / 1e6:.0f} MB raw, "
            f"{wide['stored_bytes'] / 1e6:.0f} MB zstd), local copy: floor {wide['floor_best_seconds']:.2f} s, "
            f"ops-platform restore {wide['cli_best_seconds']:.2f} s = {wide['ratio']:.2f}x "
            f"(medians {wide['median_ratio']:.2f}x); Dagster start-up and overhead {wide['startup_overhead_median']:.2f} s, "
            f"pg_restore process {wide['pg_restore_process_median'] or 0:.1f} s")

    fetch = results["fetch"]
    log("\n  fetching a stored archive (each in a fresh process; moto in its own):")
    for dataset_name, suffix in ((large, ""), (dataset.MEDIUM.name, "_medium")):
        info = setup["backups"][dataset_name]
        log(f"  {dataset_name}: {info['stored_bytes'] / 1e6:.1f} MB stored ({info['s3_parts']} parts of 8 MiB), "
            f"{info['raw_bytes'] / 1e6:.0f} MB raw")
        log(f"    {'':<50} {'best s':>7} {'median':>7} {'CPU s':>6} {'moto CPU':>8} {'peak RSS':>9}  runs (s)")
        for name in ("download" + suffix, "fetch_s3" + suffix, "fetch_local" + suffix):
            entry = fetch[name]
            if "best_seconds" in entry:
                log(f"    {LABELS[name]:<50} {entry['best_seconds']:>7.2f} {entry['median_seconds']:>7.2f} "
                    f"{entry['cpu_seconds']:>6.2f} {entry['moto_cpu_share']:>8.0%} {entry['peak_rss_mib']:>5.0f} MiB  "
                    f"{entry['all_walls']}")
            if entry["hung"]:
                detail = entry["hung_detail"]
                written = detail.get("raw_bytes_written")
                log(f"    {LABELS[name]:<50} HUNG in {entry['hung']} of {entry['attempts']} attempt(s): killed after "
                    f"{detail['timeout_seconds']:.0f} s"
                    + (f" with {written / 1e6:.0f} of {info['raw_bytes'] / 1e6:.0f} MB raw written" if written else ""))
        target = results["targets"]["s3_fetch_ratio_to_download" + (suffix or "_large")]
        if target["median"] is not None:
            serial = fetch["download" + suffix]["median_seconds"] + fetch["fetch_local" + suffix]["median_seconds"]
            log(f"    S3 fetch / download alone: {target['value']:.2f}x best, {target['median']:.2f}x medians; "
                f"download then local fetch in series: {serial:.2f} s")

    rss = results["rss_mib"]
    log("\n  peak RSS (MiB; GNU time on the ops-platform process, the programs it waited for included)")
    for name, info in setup["backups"].items():
        if info.get("backup_peak_rss_mib"):
            log(f"    {'ops-platform backup with S3 (setup), ' + name:<50} {info['backup_peak_rss_mib']}")
    for key, label in (("restore_cli_large_mib", f"ops-platform restore, {large}"),
                       ("restore_cli_small_mib", f"ops-platform restore, {small}"),
                       ("restore_cli_from_s3_medium_mib", f"ops-platform restore from S3, {dataset.MEDIUM.name}"),
                       ("restore_cli_from_s3_large_until_killed_mib",
                        f"ops-platform restore from S3, {large}, until killed"),
                       ("fetch_s3_medium_process_mib", f"fetch process, S3 copy, {dataset.MEDIUM.name}"),
                       ("fetch_local_process_mib", f"fetch process, local copy, {large}")):
        log(f"    {label:<50} {rss[key] if rss[key] is not None else 'n/a'}")
    for name in ("s3_cli_medium", "s3_cli"):
        for run in results["runs"][name]:
            if run.get("hung"):
                rss_kill = run.get("peak_rss_kib_before_kill")
                written = run.get("raw_bytes_written")
                log(f"\n  {LABELS[name]}: HUNG, killed after {run['timeout_seconds']:.0f} s"
                    + (f" with {written / 1e6:.0f} MB of the raw dump written" if written else "")
                    + (f" (peak RSS until then {rss_kill / 1024:.0f} MiB)" if rss_kill else "")
                    + "; its last output: " + " | ".join(run["output"].strip().splitlines()[-3:]))
            else:
                log(f"\n  {LABELS[name]}: {run['wall_seconds']:.2f} s, fetch step "
                    f"{run['breakdown']['step_seconds'].get('fetch', 0):.2f} s")
    log("\ntargets")
    for name, target in results["targets"].items():
        verdict = "PASS" if target["pass"] else "FAIL"
        if target.get("median") is not None:
            verdict += f" (medians {target['median']}: {'PASS' if target['median_pass'] else 'FAIL'})"
        log(f"  {name:<40} {target['value']!s:>8}  target {target['target']:<9} {verdict}")


def report_only() -> None:
    """Print the report of the last results again (bench_results/restore.json)."""
    print_report(json.loads(RESULTS.read_text()))


if __name__ == "__main__":
    report_only() if sys.argv[1:] == ["--report"] else main()

"""The CLI backup benchmark: ``ops-platform backup development`` end to end, as a user waits for it.

    python -m bench cli-backup            # or: python -m bench.cli_bench
    BENCH_QUICK=1 python -m bench cli-backup   # one round, the wide dataset at a fifth of its rows
    python -m bench.cli_bench --report         # print the last results again

Each command is a subprocess with its own DAGSTER_HOME and BACKUP_DIR (local folder only, no S3,
no Slack), DATABASE_URL pointing at the dataset, and this worktree on PYTHONPATH. Beside it, in
the same rounds (interleaved, order alternated, best of N and medians, because the machine is
noisy):

- floor:      ``pg_dump -Fc -Z0 > /dev/null``;
- reference:  ``pg_dump -Fc -Z0 | zstd -T2 -3 > file`` (fsynced);
- size:       ``pg_dump | gzip`` once per dataset, for the archive size target.

on two datasets: the mixed one of the backup benchmark (``ops_bench_large``) and one of wide,
poorly compressible rows (``ops_bench_wide``, 5 million rows, bench/dataset.py).

Where the time goes, per run: before the run (interpreter, imports, the CLI's checks, the
instance, loading the definitions; the time until ``pg_dump`` connects is its "time to first
byte", read from pg_stat_activity.backend_start), the dump pass (metadata ``dump_seconds``), the
verification (``duration_seconds - dump_seconds``: connect, decode the archive in full through
pg_restore, size check, manifest), the rest of the ``database_backup`` step, ``backup_retention``,
the run's own overhead and the exit. A start-up probe (bench._dagster_probe startup) times the
imports and the definitions load one after the other in a fresh process.

Targets (the issue): end to end, verification included, <= 1.3 x floor + 3 s; archive <= 1.02 x
the gzip size; peak RSS <= 200 MiB. Results go to bench_results/cli_backup.json.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from bench import _cli, dataset
from bench.backup_bench import (
    ZSTD,
    cpu_busy,
    measure_floor,
    measure_gzip,
    measure_zstd_cli,
)

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
REPEAT = int(os.environ.get("BENCH_REPEAT", "1" if QUICK else "4"))
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench_results" / "cli_backup.json"
DATASETS = (dataset.LARGE, dataset.WIDE_QUICK if QUICK else dataset.WIDE)

TARGET_RATIO = 1.3
TARGET_EXTRA_SECONDS = 3.0
TARGET_SIZE_RATIO = 1.02
TARGET_RSS_MIB = 200


def log(message: str) -> None:
    print(message, flush=True)


class BackendWatch:
    """Watches pg_stat_activity for the session on ``database`` that runs ``COPY ... TO stdout``
    (pg_dump's; the project's client programs and psycopg sessions all say application_name
    ops_platform) and keeps its ``backend_start``: a server timestamp of when pg_dump connected,
    so the polling interval does not blur it."""

    def __init__(self, database: str, application: str = "ops_platform", interval: float = 0.05):
        self.database, self.application, self.interval = database, application, interval
        self.first: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        with psycopg.connect(f"{dataset.SERVER}/postgres", autocommit=True) as connection:
            while not self._stop.is_set():
                for (started,) in connection.execute(
                        "SELECT extract(epoch FROM backend_start) FROM pg_stat_activity WHERE datname = %s "
                        "AND application_name = %s AND query LIKE 'COPY %%TO stdout%%'",
                        (self.database, self.application)).fetchall():
                    self.first = float(started) if self.first is None else min(self.first, float(started))
                self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        return False


class CliBackup:
    """``ops-platform backup development`` against one dataset, in its own home and folder."""

    def __init__(self, db: dataset.Dataset, scratch: Path):
        self.db = db
        self.home = scratch / f"home-{db.name}"
        self.backups = scratch / f"backups-{db.name}"
        self.env = _cli.cli_env(database_url=db.url, dagster_home=self.home, backup_dir=self.backups)

    def artifacts(self) -> set[Path]:
        folder = self.backups / "development"
        return set(folder.iterdir()) if folder.is_dir() else set()

    def run(self, keep: bool = False) -> dict:
        before = self.artifacts()
        with BackendWatch(self.db.name) as watch:
            result = _cli.run_cli(["backup", "development"], self.env)
        log_ = _cli.run_log(self.home, result["run_id"])
        if not keep:  # every measured run sees the same folder: the warm-up backup only
            for path in self.artifacts() - before:
                path.unlink()
        metadata = next(m["metadata"] for m in log_["materializations"] if m["asset"] == "database_backup")
        parts = _cli.breakdown(result, log_)
        dump_seconds, duration = metadata["dump_seconds"], metadata["duration_seconds"]
        backup_step = parts["steps"].get("database_backup", 0.0)
        parts.update({
            "first_byte": None if watch.first is None else watch.first - result["started_unix"],
            "dump_seconds": dump_seconds,
            "verification_seconds": duration - dump_seconds,
            "backup_step_rest": backup_step - duration,
            "retention_step": parts["steps"].get("backup_retention", 0.0),
        })
        return {"wall_seconds": result["wall_seconds"], "peak_rss_kib": result["peak_rss_kib"],
                "cpu_seconds": result["cpu_seconds"], "stored_bytes": metadata["stored_bytes"],
                "raw_bytes": metadata["raw_bytes"], "verified": metadata["verified"], "checks": log_["checks"],
                "breakdown": parts}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main() -> dict:
    log(f"== CLI backup benchmark (ops-platform backup){' [quick]' if QUICK else ''} ==")
    scratch = Path(tempfile.mkdtemp(prefix="ops_bench_cli_"))
    results: dict = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": os.cpu_count(),
                     "repeat": REPEAT, "quick": QUICK, "datasets": {}, "startup_probe": []}
    started = time.monotonic()
    try:
        for db in DATASETS:
            size = dataset.ensure(db, log)
            log(f"{db.name}: {size / 1e6:.0f} MB on disk")
            results["datasets"][db.name] = measure_dataset(db, size, scratch)
        log("start-up probe (fresh process, one cost after the other)")
        env = _cli.cli_env(database_url=DATASETS[0].url, dagster_home=scratch / f"home-{DATASETS[0].name}",
                           backup_dir=scratch / f"backups-{DATASETS[0].name}")
        for _ in range(max(2, REPEAT)):
            results["startup_probe"].append(_cli.startup_probe(env, "backup_job"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results["bench_seconds"] = round(time.monotonic() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")  # the measurements, come what may
    summarize(results)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    log(f"\nresults written to {RESULTS.relative_to(ROOT)}")
    return results


def measure_dataset(db: dataset.Dataset, size: int, scratch: Path) -> dict:
    cli = CliBackup(db, scratch)
    log(f"warming up on {db.name}: an untimed pg_dump, and a first backup in a fresh DAGSTER_HOME")
    measure_floor(db)
    first = cli.run(keep=True)
    log(f"  first backup (creates the instance): {first['wall_seconds']:.2f} s, "
        f"{first['stored_bytes'] / 1e6:.1f} MB stored of {first['raw_bytes'] / 1e6:.1f} MB raw")
    gzip = measure_gzip(db, scratch)
    log(f"  pg_dump | gzip (size reference, once): {gzip['wall_seconds']:.2f} s, {gzip['stored_bytes'] / 1e6:.1f} MB")
    runs: dict[str, list[dict]] = {"floor": [], "zstd_cli": [], "cli": []}
    busy = []
    for round_number in range(1, REPEAT + 1):
        busy.append(cpu_busy())
        log(f"round {round_number}/{REPEAT} on {db.name} (machine {busy[-1]:.0%} busy before the round)")
        steps = [("floor", lambda: measure_floor(db)), ("cli", cli.run)]
        if ZSTD:
            steps.append(("zstd_cli", lambda: measure_zstd_cli(db, scratch)))
        if round_number % 2 == 0:
            steps = steps[::-1]
        for name, measure in steps:
            runs[name].append(measure())
            run = runs[name][-1]
            extra = ""
            if name == "cli":
                parts = run["breakdown"]
                extra = (f"  (before the run {parts['before_run']:.2f}, dump {parts['dump_seconds']:.2f}, "
                         f"verification {parts['verification_seconds']:.2f}, peak RSS "
                         f"{run['peak_rss_kib'] / 1024:.0f} MiB)")
            log(f"  {name:<9} {run['wall_seconds']:7.2f} s{extra}")
    return {"on_disk_bytes": size, "raw_dump_bytes": first["raw_bytes"], "gzip": gzip, "first_run": first,
            "runs": runs, "machine_busy_before_rounds": busy}


def _best(runs):
    return min(runs, key=lambda run: run["wall_seconds"])


def summarize(results: dict) -> None:
    targets = {}
    log("")
    for name, data in results["datasets"].items():
        runs = data["runs"]
        floor, cli = _best(runs["floor"]), _best(runs["cli"])
        floor_median = median([r["wall_seconds"] for r in runs["floor"]])
        cli_median = median([r["wall_seconds"] for r in runs["cli"]])
        gzip_bytes = data["gzip"]["stored_bytes"]
        raw = data["raw_dump_bytes"]
        rows = [("floor: pg_dump -Fc -Z0 > /dev/null", runs["floor"], None)]
        if runs["zstd_cli"]:
            rows.append(("pg_dump -Fc -Z0 | zstd -T2 -3 > file", runs["zstd_cli"], _best(runs["zstd_cli"])["stored_bytes"]))
        rows.append(("ops-platform backup (local, verified)", runs["cli"], cli["stored_bytes"]))
        table = []
        log(f"{name}: {data['on_disk_bytes'] / 1e6:.0f} MB on disk, raw custom-format dump {raw / 1e6:.0f} MB, "
            f"pg_dump | gzip {gzip_bytes / 1e6:.1f} MB ({data['gzip']['wall_seconds']:.1f} s, once)")
        log(f"  {'measurement':<40} {'best s':>7} {'median':>7} {'x floor':>8} {'med x':>6} {'MB/s':>6} "
            f"{'archive MB':>10} {'x gzip':>7}  runs (s)")
        for label, entries, stored in rows:
            best = _best(entries)["wall_seconds"]
            med = median([r["wall_seconds"] for r in entries])
            row = {"name": label, "best_seconds": round(best, 3), "median_seconds": round(med, 3),
                   "ratio_to_floor": round(best / floor["wall_seconds"], 3),
                   "median_ratio_to_floor": round(med / floor_median, 3), "mb_per_s": round(raw / best / 1e6, 1),
                   "stored_bytes": stored,
                   "size_ratio_to_gzip": None if stored is None else round(stored / gzip_bytes, 4),
                   "all_walls": [round(r["wall_seconds"], 2) for r in entries]}
            table.append(row)
            log(f"  {label:<40} {best:>7.2f} {med:>7.2f} {row['ratio_to_floor']:>7.2f}x "
                f"{row['median_ratio_to_floor']:>5.2f}x {row['mb_per_s']:>6.1f} "
                f"{'' if stored is None else f'{stored / 1e6:.1f}':>10} "
                f"{'' if stored is None else format(row['size_ratio_to_gzip'], '.3f'):>7}  {row['all_walls']}")
        data["table"] = table
        budget = TARGET_RATIO * floor["wall_seconds"] + TARGET_EXTRA_SECONDS
        budget_median = TARGET_RATIO * floor_median + TARGET_EXTRA_SECONDS
        peak = max(r["peak_rss_kib"] or 0 for r in runs["cli"] + [data["first_run"]]) / 1024
        targets[name] = {
            "cli_end_to_end": {"value": round(cli["wall_seconds"], 2), "budget": round(budget, 2),
                               "median_value": round(cli_median, 2), "median_budget": round(budget_median, 2),
                               "target": f"<= {TARGET_RATIO} x floor + {TARGET_EXTRA_SECONDS:g} s",
                               "pass": cli["wall_seconds"] <= budget, "median_pass": cli_median <= budget_median},
            "archive_size_ratio_to_gzip": {"value": round(cli["stored_bytes"] / gzip_bytes, 4),
                                           "target": f"<= {TARGET_SIZE_RATIO}",
                                           "pass": cli["stored_bytes"] / gzip_bytes <= TARGET_SIZE_RATIO},
            "peak_rss_mib": {"value": round(peak, 1), "target": f"<= {TARGET_RSS_MIB} MiB",
                             "pass": peak <= TARGET_RSS_MIB},
        }
        print_breakdown(runs["cli"], floor["wall_seconds"])
    results["targets"] = targets
    print_startup(results["startup_probe"])
    log("\ntargets")
    for name, checks in targets.items():
        for check, target in checks.items():
            value = target["value"]
            if check == "cli_end_to_end":
                shown = (f"best {value:.2f} s vs budget {target['budget']:.2f} s "
                         f"(median {target['median_value']:.2f} vs {target['median_budget']:.2f})")
                verdict = "PASS" if target["pass"] else "FAIL"
                if target["pass"] != target["median_pass"]:
                    verdict += f" (medians: {'PASS' if target['median_pass'] else 'FAIL'})"
            else:
                shown, verdict = f"{value}", "PASS" if target["pass"] else "FAIL"
            log(f"  {name:<22} {check:<28} {shown:<58} {target['target']:<26} {verdict}")


BREAKDOWN_ROWS = [
    ("before_run", "before the run: interpreter, imports, CLI checks, instance, definitions"),
    ("first_byte", "  (pg_dump connects: time to first byte)"),
    ("dump_seconds", "dump pass (dump_seconds)"),
    ("verification_seconds", "verification (duration - dump: connect, decode, manifest)"),
    ("backup_step_rest", "rest of the database_backup step (events, Slack off)"),
    ("retention_step", "backup_retention step"),
    ("run_overhead", "run overhead outside steps (resources, IO, events)"),
    ("after_run", "after the run: output, instance close, interpreter exit"),
    ("outside_steps", "= everything outside the steps (wall - steps)"),
]


def print_breakdown(cli_runs: list[dict], floor_seconds: float) -> None:
    log(f"  where the time of ops-platform backup goes (median of {len(cli_runs)} runs; best run in brackets):")
    best = _best(cli_runs)["breakdown"]
    for key, label in BREAKDOWN_ROWS:
        value = median([r["breakdown"].get(key) for r in cli_runs])
        if value is None:
            continue
        log(f"    {label:<74} {value:6.2f} s  [{best.get(key) or 0:.2f}]")
    wall = median([r["wall_seconds"] for r in cli_runs])
    log(f"    {'= wall':<74} {wall:6.2f} s   (floor {floor_seconds:.2f} s)")


def print_startup(probes: list[dict]) -> None:
    if not probes:
        return
    log("\nstart-up, one cost after the other in a fresh process (median of "
        f"{len(probes)}; RSS after each):")
    log(f"  {'bare python -c pass (reference)':<44} {median([p['python_bare_seconds'] for p in probes]):6.3f} s")
    log(f"  {'interpreter start until the probe runs':<44} {median([p['interpreter_start_seconds'] for p in probes]):6.3f} s")
    for index, stage in enumerate(probes[0]["stages"]):
        seconds = median([p["stages"][index]["seconds"] for p in probes])
        log(f"  {stage['name']:<44} {seconds:6.3f} s   {stage['rss_kib'] / 1024:5.0f} MiB")
    log(f"  {'interpreter exit (finalization)':<44} {median([p['interpreter_exit_seconds'] for p in probes]):6.3f} s")
    log(f"  {'= process wall':<44} {median([p['process_wall_seconds'] for p in probes]):6.3f} s")


def report_only() -> None:
    """Print the report of the last results again (bench_results/cli_backup.json)."""
    summarize(json.loads(RESULTS.read_text()))


if __name__ == "__main__":
    import sys

    report_only() if sys.argv[1:] == ["--report"] else main()

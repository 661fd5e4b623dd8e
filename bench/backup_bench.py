"""The backup benchmark (issue 2): the project's dump pipeline against the floor and the old script.

Measured in one run, interleaved and repeated (best of N, the machine is noisy):
- floor:     ``pg_dump -Fc -Z0`` to stdout, drained to /dev/null;
- gzip:      ``pg_dump | gzip`` to a file (the old backup script);
- local:     ``ops_platform.lib.dump.run_dump`` to a local folder;
- local+S3:  the same with the S3 leg against a moto server in its own process (its CPU share shown);
- verify:    ``ops_platform.lib.verify.decode_artifact`` on the local archive;
- peak RSS:  each pipeline in a fresh child process, at two database sizes, plus a full Dagster
             materialization of ``database_backup``.

Targets: local-only ≤ 1.3× the floor; archive ≤ 1.02× the gzip size; largest process ≤ 200 MB
peak RSS and within 10 % between the two sizes. Results go to bench_results/backup.json.
"""

from __future__ import annotations

import json
import os
import statistics
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import dataset

REPEAT = int(os.environ.get("BENCH_REPEAT", "4"))
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench_results" / "backup.json"
BUCKET = "ops-bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TIME = shutil.which("time", path="/usr/bin:/bin")
ZSTD = shutil.which("zstd")

TARGET_LOCAL_RATIO = 1.3
TARGET_SIZE_RATIO = 1.02
TARGET_RSS_MB = 200
TARGET_RSS_SPREAD = 0.10


LABELS = {"floor": "floor: pg_dump -Fc -Z0 > /dev/null", "gzip": "old script: pg_dump | gzip",
          "zstd_cli": "reference: pg_dump -Fc -Z0 | zstd -T2 -3", "local": "pipeline, local folder",
          "s3": "pipeline, local + S3 (moto)"}


def log(message: str) -> None:
    print(message, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait4(process: subprocess.Popen) -> tuple[int, object]:
    """Reap ``process`` ourselves to get its own rusage (peak RSS, CPU)."""
    _, status, rusage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, rusage


def rusage_dict(rusage) -> dict:
    return {"maxrss_kib": rusage.ru_maxrss, "cpu_seconds": rusage.ru_utime + rusage.ru_stime}


class Moto:
    """moto's S3 server in its own process, so its CPU time can be read from /proc."""

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=1).read()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)
        os.environ["AWS_ENDPOINT_URL_S3"] = self.endpoint
        from ops_platform.lib.stores import make_s3_client

        self.client = make_s3_client()
        self.client.create_bucket(Bucket=BUCKET)

    def empty_bucket(self) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=BUCKET):
            for item in page.get("Contents", []):
                self.client.delete_object(Bucket=BUCKET, Key=item["Key"])
        for upload in self.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
            self.client.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])

    def object_size(self, key: str) -> int | None:
        try:
            return self.client.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
        except Exception:  # noqa: BLE001
            return None

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def measure_floor(db: dataset.Dataset) -> dict:
    """pg_dump to stdout drained to /dev/null. GNU time reports pg_dump's own peak RSS (%M, KiB):
    wait4 from this (large) process would also count the pre-exec image of the fork."""
    command = ["pg_dump", "--format=custom", "--compress=0", "--no-password", f"--dbname={db.url}"]
    if TIME:
        command = [TIME, "-f", "%M %U %S", *command]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    errors = process.stderr.read().decode(errors="replace")
    code, _ = wait4(process)
    wall = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"pg_dump failed: {errors[-500:]}")
    peak = cpu = None
    if TIME and errors.strip():
        fields = errors.strip().splitlines()[-1].split()
        peak, cpu = int(fields[0]), float(fields[1]) + float(fields[2])
    return {"wall_seconds": wall, "pg_dump_peak_rss_kib": peak, "cpu_seconds": cpu}


def measure_zstd_cli(db: dataset.Dataset, scratch: Path) -> dict:
    """Reference (docs/architecture.md, "Performance"): ``pg_dump -Fc -Z0 | zstd -T2 -3`` written to a file and fsynced."""
    target = scratch / "reference.dump.zst"
    started = time.monotonic()
    with open(target, "wb") as out:
        dump = subprocess.Popen(["pg_dump", "--format=custom", "--compress=0", "--no-password", f"--dbname={db.url}"],
                                stdout=subprocess.PIPE)
        zstd = subprocess.Popen([ZSTD, "-q", "-T2", "-3"], stdin=dump.stdout, stdout=out)
        dump.stdout.close()
        dump_code, dump_usage = wait4(dump)
        zstd_code, zstd_usage = wait4(zstd)
        out.flush()
        os.fsync(out.fileno())
    wall = time.monotonic() - started
    size = target.stat().st_size
    target.unlink()
    if dump_code or zstd_code:
        raise RuntimeError(f"pg_dump | zstd failed ({dump_code}, {zstd_code})")
    return {"wall_seconds": wall, "stored_bytes": size,
            "cpu_seconds": rusage_dict(dump_usage)["cpu_seconds"] + rusage_dict(zstd_usage)["cpu_seconds"]}


def cpu_busy(interval: float = 0.5) -> float:
    """Share of all cores busy right now (everything on the machine, from /proc/stat)."""
    def sample():
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        return sum(values), values[3] + values[4]
    total0, idle0 = sample()
    time.sleep(interval)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def measure_gzip(db: dataset.Dataset, scratch: Path) -> dict:
    target = scratch / "old-script.sql.gz"
    started = time.monotonic()
    with open(target, "wb") as out:
        dump = subprocess.Popen(["pg_dump", "--no-password", f"--dbname={db.url}"], stdout=subprocess.PIPE)
        gzip = subprocess.Popen(["gzip"], stdin=dump.stdout, stdout=out)
        dump.stdout.close()
        dump_code, dump_usage = wait4(dump)
        gzip_code, gzip_usage = wait4(gzip)
    wall = time.monotonic() - started
    size = target.stat().st_size
    target.unlink()
    if dump_code or gzip_code:
        raise RuntimeError(f"pg_dump | gzip failed ({dump_code}, {gzip_code})")
    return {"wall_seconds": wall, "stored_bytes": size, "gzip_cpu_seconds": rusage_dict(gzip_usage)["cpu_seconds"],
            "cpu_seconds": rusage_dict(dump_usage)["cpu_seconds"] + rusage_dict(gzip_usage)["cpu_seconds"]}


def run_child(mode: str, args: dict, env: dict | None = None) -> dict:
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen([sys.executable, "-m", "bench._child", mode, json.dumps(args)],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=errors,
                                   env={**os.environ, **(env or {})})
        output = process.stdout.read()
        code, rusage = wait4(process)
        if code != 0:
            errors.seek(0)
            raise RuntimeError(f"bench child ({mode}) failed with {code}:\n{errors.read().decode(errors='replace')[-3000:]}")
    result = json.loads(output.decode().strip().splitlines()[-1])
    result["process"] = rusage_dict(rusage)
    return result


def measure_pipeline(db: dataset.Dataset, scratch: Path, moto: Moto | None, verify: bool = False,
                     tag: str = "") -> dict:
    destination = scratch / f"bench-{tag or 'run'}.dump.zst"
    args = {"database_url": db.url, "destination": str(destination), "verify": verify}
    if moto is not None:
        key = f"backups/bench/{destination.name}"
        args.update(s3_bucket=BUCKET, s3_key=key, moto_pid=moto.process.pid)
    try:
        result = run_child("pipeline", args)
        if moto is not None:
            result["s3_object_bytes"] = moto.object_size(args["s3_key"])
    finally:
        destination.unlink(missing_ok=True)
        if moto is not None:
            moto.empty_bucket()
    if moto is not None and not result.get("s3_ok"):
        raise RuntimeError(f"S3 leg failed: {result.get('s3_error')}")
    result["cpu_seconds"] = result["dump_self"]["cpu_seconds"] + result["pg_dump"]["cpu_seconds"]
    if moto is not None:
        result["moto_cpu_share"] = result.get("moto_cpu_seconds", 0.0) / result["wall_seconds"]
    return result


def measure_dagster(db: dataset.Dataset, scratch: Path, moto: Moto | None) -> dict:
    backup_dir = scratch / "dagster-backups"
    home = scratch / "dagster-home"
    home.mkdir(exist_ok=True)
    env = {"DATABASE_URL": db.url, "BACKUP_DIR": str(backup_dir), "DAGSTER_HOME": str(home)}
    for variable in ("PRODUCTION_DATABASE_URL", "STAGING_DATABASE_URL", "SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL",
                     "SLACK_CHANNEL", "SLACK_API_URL", "AWS_S3_BUCKET"):
        os.environ.pop(variable, None)
    args = {"backup_dir": str(backup_dir)}
    if moto is not None:
        env["AWS_S3_BUCKET"] = BUCKET
        args["s3_bucket"] = BUCKET
    try:
        return run_child("dagster", args, env)
    finally:
        shutil.rmtree(backup_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
        if moto is not None:
            moto.empty_bucket()


def best(runs: list[dict], key: str = "wall_seconds") -> dict:
    return min(runs, key=lambda run: run[key])


def mib(kib: int | None) -> float | None:
    return None if kib is None else kib / 1024


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> dict:
    os.environ.update({
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    })
    log("== backup benchmark ==")
    sizes = {}
    for db in (dataset.LARGE, dataset.SMALL):
        sizes[db.name] = dataset.ensure(db, log)
        log(f"{db.name}: {sizes[db.name] / 1e6:.0f} MB on disk (pg_database_size)")
    large, small = dataset.LARGE, dataset.SMALL

    scratch = Path(tempfile.mkdtemp(prefix="ops_bench_"))
    moto = Moto()
    runs: dict[str, list[dict]] = {"floor": [], "gzip": [], "zstd_cli": [], "local": [], "s3": []}
    busy_samples: list[float] = []
    small_runs: dict[str, list[dict]] = {"floor": [], "local": [], "s3": []}
    verify_runs: list[dict] = []
    dagster_runs: dict[str, dict] = {}
    started = time.monotonic()
    try:
        log("warming the page cache (untimed pg_dump of both databases)")
        measure_floor(large)
        measure_floor(small)
        for round_number in range(1, REPEAT + 1):
            busy = cpu_busy()
            busy_samples.append(busy)
            log(f"round {round_number}/{REPEAT} on {large.name} (machine {busy:.0%} busy before the round)")
            steps = [("floor", lambda: measure_floor(large)),
                     ("local", lambda: measure_pipeline(large, scratch, None, tag=f"local{round_number}")),
                     ("s3", lambda: measure_pipeline(large, scratch, moto, tag=f"s3{round_number}")),
                     ("gzip", lambda: measure_gzip(large, scratch))]
            if ZSTD:
                steps.append(("zstd_cli", lambda: measure_zstd_cli(large, scratch)))
            if round_number % 2 == 0:  # alternate the order so no measurement always follows the same one
                steps = steps[:1] + steps[1:][::-1]
            for name, measure in steps:
                runs[name].append(measure())
                extra = f"  (moto CPU {runs[name][-1]['moto_cpu_share']:.0%})" if name == "s3" else ""
                log(f"  {LABELS[name]:<40} {runs[name][-1]['wall_seconds']:7.2f} s{extra}")
            if round_number <= 2:
                verify_runs.append(measure_pipeline(large, scratch, None, verify=True, tag=f"verify{round_number}"))
                log(f"  {'verification (decode_artifact)':<40} {verify_runs[-1]['verify_seconds']:7.2f} s")
        for round_number in range(1, 3):
            log(f"round {round_number}/2 on {small.name}")
            small_runs["floor"].append(measure_floor(small))
            small_runs["local"].append(measure_pipeline(small, scratch, None, tag=f"small-local{round_number}"))
            small_runs["s3"].append(measure_pipeline(small, scratch, moto, tag=f"small-s3{round_number}"))
        for db in (small, large):
            log(f"Dagster materialization of database_backup (local + S3) on {db.name}")
            try:
                dagster_runs[db.name] = measure_dagster(db, scratch, moto)
                outcome = dagster_runs[db.name]
                log(f"  success={outcome['success']} verified={outcome['verified']} "
                    f"{outcome['wall_seconds']:.1f} s, peak RSS {mib(outcome['peak_rss_kib']):.0f} MiB")
            except Exception as error:  # noqa: BLE001 - reported, the rest of the bench stands
                dagster_runs[db.name] = {"error": str(error)[-2000:]}
                log(f"  failed: {str(error)[-600:]}")
    finally:
        moto.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    results = summarize(sizes, runs, small_runs, verify_runs, dagster_runs, time.monotonic() - started, busy_samples)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    log(f"\nresults written to {RESULTS.relative_to(ROOT)}")
    return results


def summarize(sizes, runs, small_runs, verify_runs, dagster_runs, seconds, busy_samples) -> dict:
    large, small = dataset.LARGE, dataset.SMALL
    floor, gzip, local, s3 = (best(runs[name]) for name in ("floor", "gzip", "local", "s3"))
    raw = local["raw_bytes"]
    verify = best(verify_runs, "verify_seconds")

    def row(name, run, stored):
        wall = run["wall_seconds"]
        walls = sorted(r["wall_seconds"] for r in runs[name])
        cpus = [r["cpu_seconds"] for r in runs[name] if r.get("cpu_seconds") is not None]
        return {"name": name, "wall_seconds": round(wall, 3), "median_seconds": round(statistics.median(walls), 3),
                "mb_per_s": round(raw / wall / 1e6, 1),
                "ratio_to_floor": round(wall / floor["wall_seconds"], 3),
                "median_ratio_to_floor": round(statistics.median(walls) / statistics.median(
                    [r["wall_seconds"] for r in runs["floor"]]), 3),
                "cpu_seconds": round(min(cpus), 2) if cpus else None,
                "stored_bytes": stored,
                "size_ratio_to_gzip": None if stored is None else round(stored / gzip["stored_bytes"], 4),
                "all_walls": [round(r["wall_seconds"], 2) for r in runs[name]]}

    table = [row("floor", floor, None), row("gzip", gzip, gzip["stored_bytes"])]
    if runs["zstd_cli"]:
        reference = best(runs["zstd_cli"])
        table.append(row("zstd_cli", reference, reference["stored_bytes"]))
    table += [row("local", local, local["stored_bytes"]), row("s3", s3, s3["stored_bytes"])]
    table[-1]["moto_cpu_share"] = round(s3["moto_cpu_share"], 3)
    table[-1]["moto_cpu_shares"] = [round(r["moto_cpu_share"], 3) for r in runs["s3"]]
    local_row = next(entry for entry in table if entry["name"] == "local")

    def peak(run_list):
        return max(r["peak_rss_kib"] for r in run_list)

    def pg_dump_peak(run_list):
        values = [r["pg_dump_peak_rss_kib"] for r in run_list if r.get("pg_dump_peak_rss_kib")]
        return mib(max(values)) if values else None

    rss = {
        "pipeline_process_mib": {large.name: mib(max(peak(runs["local"]), peak(runs["s3"]))),
                                 small.name: mib(max(peak(small_runs["local"]), peak(small_runs["s3"])))},
        "pipeline_local_only_mib": {large.name: mib(peak(runs["local"])), small.name: mib(peak(small_runs["local"]))},
        "pipeline_s3_mib": {large.name: mib(peak(runs["s3"])), small.name: mib(peak(small_runs["s3"]))},
        "pg_dump_mib": {large.name: pg_dump_peak(runs["floor"]), small.name: pg_dump_peak(small_runs["floor"])},
        "dagster_process_mib": {name: mib(run.get("peak_rss_kib")) for name, run in dagster_runs.items()},
        "dagster_after_import_mib": {name: mib(run.get("rss_after_import_kib")) for name, run in dagster_runs.items()},
    }
    # The largest process of a backup is the Dagster run process when it could be measured,
    # otherwise the bare pipeline process; pg_dump is counted too.
    largest_key = "dagster_process_mib" if all(rss["dagster_process_mib"].get(n) for n in (large.name, small.name)) \
        else "pipeline_process_mib"
    largest = {name: max(value for value in (rss[largest_key][name], rss["pg_dump_mib"][name]) if value)
               for name in (large.name, small.name)}
    spread = abs(largest[large.name] - largest[small.name]) / min(largest.values())

    targets = {
        "local_ratio_to_floor": {"value": local_row["ratio_to_floor"], "target": f"<= {TARGET_LOCAL_RATIO}",
                                 "pass": local_row["ratio_to_floor"] <= TARGET_LOCAL_RATIO},
        "archive_size_ratio_to_gzip": {"value": local_row["size_ratio_to_gzip"], "target": f"<= {TARGET_SIZE_RATIO}",
                                       "pass": local_row["size_ratio_to_gzip"] <= TARGET_SIZE_RATIO},
        "largest_process_peak_rss_mib": {"value": round(max(largest.values()), 1), "target": f"<= {TARGET_RSS_MB}",
                                         "measured_on": largest_key,
                                         "pass": max(largest.values()) <= TARGET_RSS_MB},
        "rss_spread_between_sizes": {"value": round(spread, 3), "target": f"<= {TARGET_RSS_SPREAD}",
                                     "pass": spread <= TARGET_RSS_SPREAD},
    }
    results = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": os.cpu_count(),
        "repeat": REPEAT,
        "machine_busy_before_rounds": [round(b, 2) for b in busy_samples],
        "databases": {name: {"on_disk_bytes": size} for name, size in sizes.items()},
        "raw_dump_bytes": raw,
        "table": table,
        "verify": {"seconds": round(verify["verify_seconds"], 3), "ok": verify["verify_ok"],
                   "tables": verify["verify_tables"], "mb_per_s": round(raw / verify["verify_seconds"] / 1e6, 1),
                   "all": [round(r["verify_seconds"], 2) for r in verify_runs]},
        "small": {"floor_seconds": round(best(small_runs["floor"])["wall_seconds"], 3),
                  "local_seconds": round(best(small_runs["local"])["wall_seconds"], 3),
                  "s3_seconds": round(best(small_runs["s3"])["wall_seconds"], 3),
                  "raw_dump_bytes": small_runs["local"][0]["raw_bytes"]},
        "cpu_seconds_note": "CPU of pg_dump plus the compressor (the Python process for the pipeline, zstd or gzip "
                            "for the pipes); the PostgreSQL backend's own CPU is not counted",
        "moto_cpu_seconds": round(s3.get("moto_cpu_seconds", 0.0), 2),
        "rss": rss,
        "largest_process_mib": largest,
        "dagster": dagster_runs,
        "targets": targets,
        "bench_seconds": round(seconds, 1),
    }
    print_report(results)
    return results


def print_report(results: dict) -> None:
    large, small = dataset.LARGE.name, dataset.SMALL.name
    dbs = results["databases"]
    log("")
    log(f"datasets: {large} {dbs[large]['on_disk_bytes'] / 1e6:.0f} MB on disk, "
        f"{small} {dbs[small]['on_disk_bytes'] / 1e6:.0f} MB on disk; "
        f"raw custom-format dump of {large}: {results['raw_dump_bytes'] / 1e6:.0f} MB")
    log(f"best of {results['repeat']} interleaved runs on {large}, {results['cores']} cores\n")
    log(f"{'measurement':<42} {'best s':>7} {'median':>7} {'MB/s':>6} {'x floor':>8} {'CPU s':>6} "
        f"{'archive MB':>10} {'x gzip':>7}  runs (s)")
    for entry in results["table"]:
        stored = entry["stored_bytes"]
        cpu = "" if entry["cpu_seconds"] is None else f"{entry['cpu_seconds']:.2f}"
        line = (f"{LABELS[entry['name']]:<42} {entry['wall_seconds']:>7.2f} {entry['median_seconds']:>7.2f} "
                f"{entry['mb_per_s']:>6.1f} {entry['ratio_to_floor']:>7.2f}x {cpu:>6} "
                f"{'' if stored is None else f'{stored / 1e6:.1f}':>10} "
                f"{'' if entry['size_ratio_to_gzip'] is None else format(entry['size_ratio_to_gzip'], '.3f'):>7}  "
                f"{entry['all_walls']}")
        if "moto_cpu_share" in entry:
            line += f"\n{'':<42} moto's own CPU: {entry['moto_cpu_share']:.0%} of wall in the best run " \
                    f"({', '.join(f'{s:.0%}' for s in entry['moto_cpu_shares'])} per run)"
        log(line)
    verify = results["verify"]
    log(f"{'verification: decode_artifact (zstd)':<42} {verify['seconds']:>7.2f} {'':>7} {verify['mb_per_s']:>6.1f}"
        f"  (ok={verify['ok']}, {verify['tables']} tables; separate from the dump target) runs {verify['all']}")
    log("x floor = best / best floor; medians: " + ", ".join(
        f"{entry['name']} {entry['median_ratio_to_floor']:.2f}x" for entry in results["table"]))
    log(f"CPU s = pg_dump + compressor (min over runs; the PostgreSQL backend is not counted). "
        f"Machine busy before each round (other work included): "
        f"{', '.join(f'{b:.0%}' for b in results['machine_busy_before_rounds'])}")
    small_run = results["small"]
    log(f"\n{small}: floor {small_run['floor_seconds']:.2f} s, local {small_run['local_seconds']:.2f} s "
        f"({small_run['local_seconds'] / small_run['floor_seconds']:.2f}x), local+S3 {small_run['s3_seconds']:.2f} s")
    log("\npeak RSS (MiB)                        " + f"{large:>16} {small:>16}")
    names = {"pipeline_local_only_mib": "run_dump process, local only",
             "pipeline_s3_mib": "run_dump process, local + S3",
             "pg_dump_mib": "pg_dump (floor run, GNU time)",
             "dagster_after_import_mib": "Dagster process after imports",
             "dagster_process_mib": "Dagster materialization process"}
    for key, label in names.items():
        values = results["rss"][key]
        cells = [f"{values[n]:.1f}" if values.get(n) else "n/a" for n in (large, small)]
        log(f"  {label:<36} {cells[0]:>16} {cells[1]:>16}")
    for name, run in results["dagster"].items():
        if "error" in run:
            log(f"  Dagster materialization on {name} failed: {run['error'].splitlines()[-1]}")
        else:
            log(f"  Dagster run on {name}: success={run['success']}, verified={run['verified']}, "
                f"{run['wall_seconds']:.1f} s, checks {run['checks']}")

    log("\ntargets")
    for name, target in results["targets"].items():
        extra = f"  (measured on {target['measured_on']})" if "measured_on" in target else ""
        log(f"  {name:<32} {target['value']!s:>8}  target {target['target']:<8} {verdict(target['pass'])}{extra}")


if __name__ == "__main__":
    main()

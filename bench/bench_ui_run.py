"""What an operator waits for after clicking Launch Run: a backup and a restore run from the UI,
end to end, beside the same work typed at the CLI and the bare PostgreSQL tools.

``python -m ops_platform.dev`` (code server, dagster-webserver, dagster-daemon, as ``make dev``
and ``deploy/`` run them) on a temp SQLite instance, no S3, no Slack, the environment
``development`` on a database of about 5 MB (``ops_bench_ui_run``). Runs are launched over GraphQL
as the Launchpad does: queued, dequeued by the daemon, executed by a run worker whose steps run in
processes of the run's pool. In each round, interleaved:

- ``backup_job`` from the UI (``database_backup`` then ``backup_retention``), launch to SUCCESS;
- ``ops-platform backup development``, the command end to end;
- the floor: ``pg_dump -Fc -Z0 > /dev/null``;
- ``restore_job`` from the UI into a new database (``backup: latest``), launch to SUCCESS;
- ``ops-platform restore latest development --target-database ...``;
- the floor: ``createdb`` then ``pg_restore -j2`` of the same dump, uncompressed.

Where a UI run's time goes, from its step stats: before the first step (the queue, the run
worker's start, the pool's start), inside the steps, between the steps, after the last one.
No target is set: the figures and their ratios are reported (bench_results/ui_run.json).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.backup_bench import cpu_busy, log
from ops_platform_testkit.webserver_process import free_port, stop, wait_until_up

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench_results" / "ui_run.json"
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
ROUNDS = int(os.environ.get("BENCH_REPEAT", "") or (1 if QUICK else 4))
DATABASE = "ops_bench_ui_run"
SERVER = "postgresql://postgres@127.0.0.1:5432"
COPY = "ops_bench_ui_run_copy"

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) { __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } }
}"""
RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) { ... on Run { status stepStats { stepKey startTime endTime } } }
}"""


def psql(sql: str, database: str = "postgres") -> None:
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", f"{SERVER}/{database}", "-c", sql],
                   check=True, capture_output=True, text=True)


def make_dataset() -> None:
    psql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{DATABASE}"')
    psql("CREATE TABLE customers AS SELECT g AS id, 'customer-' || g || '@example.com' AS email, "
         "now() - g * interval '1 minute' AS created FROM generate_series(1, 20000) g; "
         "ALTER TABLE customers ADD PRIMARY KEY (id); "
         "CREATE TABLE orders AS SELECT g AS id, 1 + g % 20000 AS customer_id, (g % 997) * 1.25 AS total, "
         "md5(g::text) AS reference FROM generate_series(1, 60000) g; "
         "ALTER TABLE orders ADD PRIMARY KEY (id); CREATE INDEX ON orders (customer_id);", DATABASE)


def graphql(url: str, query: str, variables: dict) -> dict:
    response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=60)
    response.raise_for_status()
    return response.json()["data"]


def ui_run(url: str, job: str, run_config: dict | None = None) -> dict:
    """Launch ``job`` for development as the Launchpad does; the seconds until it succeeded, and
    where they went."""
    params = {"selector": {"repositoryLocationName": "ops_platform", "repositoryName": "__repository__",
                           "jobName": job},
              "runConfigData": run_config or {},
              "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "development"}]}}
    launched_at = time.time()
    launched = graphql(url, LAUNCH, {"params": params})["launchRun"]
    if launched["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"{job} was not launched: {launched}")
    run_id = launched["run"]["runId"]
    while True:
        run = graphql(url, RUN, {"runId": run_id})["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(0.1)
    ended_at = time.time()
    if run["status"] != "SUCCESS":
        raise RuntimeError(f"{job} run {run_id} ended {run['status']}")
    steps = sorted((s for s in run["stepStats"] if s["startTime"]), key=lambda s: s["startTime"])
    inside = sum(s["endTime"] - s["startTime"] for s in steps)
    before = steps[0]["startTime"] - launched_at
    after = max(0.0, ended_at - steps[-1]["endTime"])
    total = ended_at - launched_at
    return {"seconds": total, "before_first_step": before, "in_steps": inside,
            "between_steps": max(0.0, total - before - inside - after), "after_last_step": after,
            "steps": len(steps)}


def timed(command: list[str], env: dict) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, env=env, capture_output=True, text=True, timeout=600)
    return time.monotonic() - started


def drop_copy() -> None:
    psql(f'DROP DATABASE IF EXISTS "{COPY}" WITH (FORCE)')


def one_round(url: str, env: dict, folder: Path) -> dict:
    figures: dict[str, float | dict] = {}
    figures["ui_backup"] = ui_run(url, "backup_job")
    figures["cli_backup"] = timed([str(BIN / "ops-platform"), "backup", "development"], env)
    with open("/dev/null", "wb") as sink:
        started = time.monotonic()
        subprocess.run(["pg_dump", "-Fc", "-Z0", f"{SERVER}/{DATABASE}"], check=True, stdout=sink)
        figures["floor_backup"] = time.monotonic() - started
    drop_copy()
    figures["ui_restore"] = ui_run(url, "restore_job", {"ops": {"resolve_restore": {"config": {
        "backup": "latest", "target_database": COPY}}}})
    drop_copy()
    figures["cli_restore"] = timed([str(BIN / "ops-platform"), "restore", "latest", "development",
                                    "--target-database", COPY], env)
    drop_copy()
    dump = folder / "floor.dump"
    subprocess.run(["pg_dump", "-Fc", "-Z0", "-f", str(dump), f"{SERVER}/{DATABASE}"], check=True)
    started = time.monotonic()
    psql(f'CREATE DATABASE "{COPY}"')
    subprocess.run(["pg_restore", "-j2", "-d", f"{SERVER}/{COPY}", str(dump)], check=True)
    figures["floor_restore"] = time.monotonic() - started
    drop_copy()
    return figures


def summary(rounds: list[dict]) -> dict:
    def seconds(value) -> float:
        return value["seconds"] if isinstance(value, dict) else value

    result = {}
    for name in rounds[0]:
        values = [seconds(item[name]) for item in rounds]
        result[name] = {"best": min(values), "median": statistics.median(values)}
        if isinstance(rounds[0][name], dict):
            best = min((item[name] for item in rounds), key=lambda run: run["seconds"])
            result[name]["breakdown_of_best"] = best
    return result


def report(result: dict) -> None:
    figures = result["figures"]
    log(f"\nUI runs, launch to SUCCESS (best of {result['rounds']}, median beside; CPU busy "
        f"{result['cpu_busy_before']:.0%} before):")
    for kind in ("backup", "restore"):
        ui, cli, floor = figures[f"ui_{kind}"], figures[f"cli_{kind}"], figures[f"floor_{kind}"]
        log(f"  {kind}_job from the UI  {ui['best']:6.2f} s (median {ui['median']:6.2f})   "
            f"CLI {cli['best']:6.2f} s   floor {floor['best']:5.2f} s   "
            f"UI/CLI {ui['best'] / cli['best']:.2f}x   UI/floor {ui['best'] / floor['best']:.1f}x")
        parts = ui["breakdown_of_best"]
        log(f"      before the first step {parts['before_first_step']:.2f} s, in {parts['steps']} steps "
            f"{parts['in_steps']:.2f} s, between steps {parts['between_steps']:.2f} s, "
            f"after the last {parts['after_last_step']:.2f} s")


def run() -> dict:
    folder = Path(tempfile.mkdtemp(prefix="ops_bench_ui_run_"))
    home = folder / "home"
    home.mkdir(mode=0o700)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PRODUCTION_", "STAGING_", "DEVELOPMENT_", "SLACK_", "AWS_", "BACKUP_",
                                  "OPS_PLATFORM_", "DAGSTER_"))
           and key != "DATABASE_URL"}
    env.update({"DAGSTER_HOME": str(home), "BACKUP_DIR": str(folder / "backups"),
                "DEVELOPMENT_DATABASE_URL": f"{SERVER}/{DATABASE}", "PYTHONUNBUFFERED": "1"})
    processes = []
    try:
        log("UI run benchmark: making the dataset and starting the platform (python -m ops_platform.dev)")
        make_dataset()
        port = free_port()
        with open(folder / "platform.log", "w") as output:
            processes.append(subprocess.Popen([sys.executable, "-m", "ops_platform.dev", "--host", "127.0.0.1",
                                               "--port", str(port)], cwd=ROOT, env=env, stdout=output,
                                              stderr=subprocess.STDOUT))
        url = f"http://127.0.0.1:{port}"
        if not wait_until_up(url, 180, processes[0]):
            raise RuntimeError(f"the platform did not start:\n{(folder / 'platform.log').read_text()[-3000:]}")
        ui_run(url, "backup_job")  # the first run after start-up warms the code server; not measured
        busy = cpu_busy()
        rounds = []
        for index in range(ROUNDS):
            rounds.append(one_round(url, env, folder))
            log(f"  round {index + 1}/{ROUNDS}: UI backup {rounds[-1]['ui_backup']['seconds']:.2f} s, "
                f"UI restore {rounds[-1]['ui_restore']['seconds']:.2f} s")
        result = {"rounds": ROUNDS, "cpu_busy_before": busy, "figures": summary(rounds), "raw": rounds}
        report(result)
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2))
        return result
    finally:
        stop(processes)
        drop_copy()
        psql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    run()

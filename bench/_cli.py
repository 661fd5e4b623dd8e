"""Running ``ops-platform`` as a user does, in a subprocess, and reading back where its time went.

The command is this checkout's console-script entry point (``[project.scripts]``) started by the
venv's Python with this worktree on PYTHONPATH, exactly what the installed ``ops-platform`` script
does, without depending on which checkout installed that script.

A measured command runs under GNU time, so its peak RSS (``%M``: the largest of the Python
process and the programs it waited for) is its own and not this big process's pre-exec image.
Its Dagster run is then read from the instance in its ``DAGSTER_HOME`` by a small child
(``bench._dagster_probe runlog``) for step timings and metadata, so the time can be split into:

- ``before_run``: interpreter, imports, the CLI's own checks, the instance, loading the
  definitions, up to the run's first event;
- the steps (STEP_START to STEP_SUCCESS of each op or asset in the event log);
- ``run_overhead``: the rest of the run (resources, IO managers, events between steps);
- ``after_run``: from the run's last event until the process has exited.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
TIME = shutil.which("time", path="/usr/bin:/bin")


def _console_script() -> list[str]:
    """``ops-platform`` as its console script runs it, from this checkout's ``[project.scripts]``
    entry point and this Python: the script installed in the venv may come from another checkout
    whose entry point no longer matches the code on PYTHONPATH."""
    with open(ROOT / "pyproject.toml", "rb") as handle:
        entry = tomllib.load(handle)["project"]["scripts"]["ops-platform"]
    module, attribute = entry.split(":")
    code = f"import sys; from {module} import {attribute} as entry; sys.argv[0] = 'ops-platform'; sys.exit(entry())"
    return [sys.executable, "-c", code]


OPS_PLATFORM = _console_script()

# Variables of the operator's shell that would add environments, S3 or Slack to a measured run.
_DROPPED_PREFIXES = ("PRODUCTION_", "STAGING_", "SLACK_", "BACKUP_", "RESTORE_", "AWS_S3_", "HEALTH_", "DEPLOY")
_DROPPED = {"DATABASE_URL", "DAGSTER_HOME", "MIGRATE_COMMAND", "ROLLBACK_COMMAND", "ROLLBACK_WEBHOOK_URL",
            "RESTORE_CHECKS_FILE", "REDIS_URL", "API_URL", "FRONTEND_URL", "AWS_ENDPOINT_URL_S3", "OPS_PLATFORM_DEBUG"}


def cli_env(*, database_url: str, dagster_home: Path, backup_dir: Path, extra: dict | None = None) -> dict:
    """The environment of a measured command: only ``development`` (DATABASE_URL), the given
    folders, this worktree on PYTHONPATH, no Slack, no S3 unless ``extra`` adds it."""
    env = {key: value for key, value in os.environ.items()
           if key not in _DROPPED and not key.startswith(_DROPPED_PREFIXES)}
    env.update({"DATABASE_URL": database_url, "DAGSTER_HOME": str(dagster_home), "BACKUP_DIR": str(backup_dir),
                "PYTHONPATH": str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")})
    env.update(extra or {})
    return env


class Hung(RuntimeError):
    """A measured process made no end within its timeout and was killed (its whole group)."""

    def __init__(self, what: str, seconds: float, output: str = "", peak_rss_kib: int | None = None):
        super().__init__(f"{what} did not finish within {seconds:.0f} s and was killed")
        self.seconds = seconds
        self.output = output
        self.peak_rss_kib = peak_rss_kib


def group_peak_rss_kib(group: int) -> int | None:
    """The largest VmHWM among the live processes of process group ``group``."""
    peaks = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != group:  # field 5 of /proc/PID/stat: the process group
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]))
        except (OSError, IndexError, ValueError):
            continue
    return max(peaks) if peaks else None


def run_group(command: list[str], *, timeout: float, what: str, **popen) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a new session, so a timeout kills the whole group (GNU time's child,
    pg_restore, ...), not only the direct child. Raises Hung on timeout."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                               **popen)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        peak = group_peak_rss_kib(process.pid)
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise Hung(what, timeout, (stdout + stderr).decode(errors="replace")[-3000:], peak) from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_cli(args: list[str], env: dict, *, timeout: float = 3600) -> dict:
    """``ops-platform *args`` under GNU time; wall clock from this side of the fork to its exit.
    Raises Hung (after killing its process group) when it has not finished within ``timeout``."""
    with tempfile.NamedTemporaryFile("r", prefix="ops_bench_time_", suffix=".txt") as timing:
        command = [*OPS_PLATFORM, *args]
        if TIME:
            command = [TIME, "-o", timing.name, "-f", "%M %U %S", *command]
        started_unix, started = time.time(), time.monotonic()
        process = run_group(command, timeout=timeout, what=f"ops-platform {' '.join(args)}", cwd=ROOT, env=env)
        wall = time.monotonic() - started
        ended_unix = started_unix + wall
        fields = timing.read().strip().splitlines()[-1:] if TIME else []
    stdout, stderr = process.stdout.decode(errors="replace"), process.stderr.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"ops-platform {' '.join(args)} exited with {process.returncode}:\n"
                           f"{stdout[-1500:]}\n{stderr[-3000:]}")
    result = {"wall_seconds": wall, "started_unix": started_unix, "ended_unix": ended_unix,
              "stdout": stdout, "stderr": stderr, "run_id": None, "peak_rss_kib": None, "cpu_seconds": None}
    for line in reversed(stdout.splitlines()):
        if line.startswith("run "):
            result["run_id"] = line.split()[1]
            break
    if fields:
        values = fields[0].split()
        if len(values) == 3 and values[0].isdigit():
            result["peak_rss_kib"] = int(values[0])
            result["cpu_seconds"] = float(values[1]) + float(values[2])
    return result


def run_log(dagster_home: Path, run_id: str) -> dict:
    """The run's timeline and metadata, read from its instance by ``bench._dagster_probe``."""
    process = subprocess.run([sys.executable, "-m", "bench._dagster_probe", "runlog", str(dagster_home), run_id],
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=300, check=False)
    if process.returncode != 0:
        raise RuntimeError(f"reading run {run_id} failed: {process.stderr.decode(errors='replace')[-2000:]}")
    return json.loads(process.stdout.decode().strip().splitlines()[-1])


def breakdown(run: dict, log: dict) -> dict:
    """Split the wall time of a command into before the run, each step, the run's own overhead and
    after the run (see the module docstring)."""
    steps = {name: step["seconds"] for name, step in log["steps"].items()}
    in_steps = sum(steps.values())
    run_seconds = log["run_end"] - log["run_start"]
    return {
        "wall_seconds": run["wall_seconds"],
        "before_run": log["run_start"] - run["started_unix"],
        "steps": steps,
        "steps_total": in_steps,
        "run_overhead": run_seconds - in_steps,
        "after_run": run["ended_unix"] - log["run_end"],
        "outside_steps": run["wall_seconds"] - in_steps,
    }


def startup_probe(env: dict, job: str) -> dict:
    """Start-up costs measured one after the other in a fresh process (see ``bench._dagster_probe``),
    plus a bare interpreter for reference."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    bare = time.monotonic() - started
    started_unix, started = time.time(), time.monotonic()
    process = subprocess.run([sys.executable, "-m", "bench._dagster_probe", "startup", job], cwd=ROOT, env=env,
                             capture_output=True, timeout=300, check=False)
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"start-up probe failed: {process.stderr.decode(errors='replace')[-2000:]}")
    result = json.loads(process.stdout.decode().strip().splitlines()[-1])
    result["python_bare_seconds"] = bare
    result["process_wall_seconds"] = wall
    result["interpreter_start_seconds"] = result["begin_unix"] - started_unix
    result["interpreter_exit_seconds"] = started_unix + wall - result["end_unix"]
    return result

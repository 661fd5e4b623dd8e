"""What ``make dev`` runs: ``python -m ops_platform.dev [--host H] [--port P]``.

1. The instance home (``$DAGSTER_HOME``, given the project's ``deploy/dagster.yaml`` if it has none),
   its storage created before anything else opens it.
2. With no database URL set, the demo database (``lib/demo.py``): created and filled when missing,
   so the first backup from the UI has something to back up.
3. ``dagster-webserver`` and ``dagster-daemon run`` side by side, from the project's folder (its
   ``pyproject.toml`` names the code location), until Ctrl-C or SIGTERM; if one stops, so does the other.

These are the two processes a deployment runs. ``dagster dev`` would start the same two, but it is
superseded by ``dg dev`` and says so on every start, and ``dg dev`` (dagster-dg-cli) brings some
twenty more packages (the Dagster+ CLI, a GitHub client, GitPython) to end in the same code.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ops_platform.cli.runs import ensure_dagster_home
from ops_platform.config import (
    DEFAULT_DATABASE_URL,
    load_environments,
    uses_default_database,
)
from ops_platform.lib.demo import DemoDatabaseError, ensure_demo_database

EXIT_BAD_SETUP = 2
STOP_WAIT_SECONDS = 30


def project_root() -> Path:
    """The folder holding this checkout's pyproject.toml (its [tool.dg.project] names the code location)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").exists() else Path.cwd()


def _program(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def _say(line: str) -> None:
    print(f"ops_platform dev: {line}", flush=True)


def _create_instance_storage() -> None:
    """Create (or migrate) the instance's storage once, before the webserver, the daemon and their
    code servers open it: on a new $DAGSTER_HOME, four processes creating SQLite storage at once
    race, and a code server fails with "alembic_version has more than one head"."""
    import dagster as dg

    with dg.DagsterInstance.get():
        pass


def prepare() -> int:
    """The instance home and the development database; 0, or 2 with one line saying what to do."""
    home = ensure_dagster_home()
    _create_instance_storage()
    _say(f"instance in {home}")
    if uses_default_database():
        try:
            demo = ensure_demo_database(DEFAULT_DATABASE_URL)
        except DemoDatabaseError as error:
            print(f"ops_platform dev: error: {error}. Start PostgreSQL on 127.0.0.1:5432 (user postgres, "
                  "trust auth), or set DATABASE_URL to the database to back up (README, Quick start).",
                  file=sys.stderr, flush=True)
            return EXIT_BAD_SETUP
        _say(f"development is {demo.describe()}; no database URL is set (set DATABASE_URL to back up "
             "your own database)")
    else:
        _say("environments: " + ", ".join(load_environments()))
    if not shutil.which("pg_dump"):
        _say("warning: pg_dump is not on PATH, so backups will fail at their first step "
             "(Debian/Ubuntu: apt-get install postgresql-client)")
    return 0


def _stop(processes: list[subprocess.Popen], interrupted: bool) -> None:
    """A clean shutdown: Ctrl-C for each (a terminal's Ctrl-C has already reached them: they get a
    moment first), then SIGTERM, then SIGKILL for one that does not stop."""
    steps = ([(None, 5)] if interrupted else []) + [(signal.SIGINT, STOP_WAIT_SECONDS),
                                                      (signal.SIGTERM, STOP_WAIT_SECONDS), (signal.SIGKILL, 5)]
    for sig, wait in steps:
        alive = [process for process in processes if process.poll() is None]
        if not alive:
            return
        for process in alive:
            if sig is not None:
                process.send_signal(sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(process.poll() is None for process in alive):
            time.sleep(0.2)


def serve(host: str, port: int) -> int:
    root = project_root()
    commands = {
        "dagster-webserver": [_program("dagster-webserver"), "-h", host, "-p", str(port)],
        "dagster-daemon": [_program("dagster-daemon"), "run"],
    }
    processes: list[subprocess.Popen] = []
    received: list[int] = []

    def on_signal(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for command in commands.values():
            processes.append(subprocess.Popen(command, cwd=root))
        _say(f"the UI is at http://{host}:{port} (Ctrl-C stops the webserver and the daemon)")
        while True:
            for name, process in zip(commands, processes):
                if process.poll() is not None:
                    print(f"ops_platform dev: error: {name} stopped (exit code {process.returncode}); "
                          "stopping the other", file=sys.stderr, flush=True)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop(processes, interrupted=signal.SIGINT in received)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops_platform.dev",
                                     description="Run the platform locally: the Dagster UI and daemon.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    code = prepare()
    return code if code else serve(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())

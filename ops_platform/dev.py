"""What ``make dev`` runs: ``python -m ops_platform.dev [--host H] [--port P]``.

1. The instance home (``$DAGSTER_HOME``, given the project's ``dagster.yaml`` if it has none),
   its storage created before anything else opens it.
2. With no database URL set, the demo database (``lib/demo.py``): created and filled when missing,
   so the first backup from the UI has something to back up.
3. One code server for the code location (the entry of the project's ``workspace.yaml``: its module
   and its name), then ``dagster-webserver`` and ``dagster-daemon run`` using it, until Ctrl-C or
   SIGTERM; if one stops, so do the others.

This is what ``dagster dev`` does, and how a deployment runs (a code server, a webserver and a
daemon). ``dagster dev`` itself is superseded by ``dg dev`` and says so on every start, and ``dg dev``
(dagster-dg-cli) brings some twenty more packages (the Dagster+ CLI, a GitHub client, GitPython) to
end in the same code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from ops_platform.cli.errors import CommandError
from ops_platform.cli.runs import ensure_dagster_home, instance_storage
from ops_platform.config import (
    DEFAULT_DATABASE_URL,
    load_environments,
    uses_default_database,
)
from ops_platform.lib.demo import DemoDatabaseError, ensure_demo_database
from ops_platform.lib.dev_log import DevLogFilter
from ops_platform.lib.slack import slack_configured

EXIT_BAD_SETUP = 2
STOP_WAIT_SECONDS = 30


def project_root() -> Path:
    """The folder holding this checkout's workspace.yaml (it names the code location)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "workspace.yaml").exists() else Path.cwd()


def _program(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


_OUTPUT = threading.Lock()


def _say(line: str) -> None:
    with _OUTPUT:
        print(f"ops_platform dev: {line}", flush=True)


def _show(stream, log_filter: DevLogFilter | None) -> None:
    """Copy a child's output to ours, through the filter (None: everything), line by line."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace")
        shown = log_filter.feed(line) if log_filter else line
        if shown is not None:
            with _OUTPUT:
                sys.stdout.write(shown)
                sys.stdout.flush()
    stream.close()


def _create_instance_storage() -> None:
    """Create (or migrate) the instance's storage once, before the webserver, the daemon and their
    code servers open it: on a new $DAGSTER_HOME, four processes creating SQLite storage at once
    race, and a code server fails with "alembic_version has more than one head". It is the CLI's
    setup, under its lock, so a CLI command started meanwhile waits for it. The environments and
    the file's targets are registered as partitions now, so the UI offers them at once (the
    discovery sensor adds the databases it finds on the servers within a minute)."""
    from ops_platform.defs.environments import ensure_partitions
    from ops_platform.lib.targets import load_targets

    with instance_storage() as instance:
        ensure_partitions(instance, load_targets(discover=False).names)


def prepare() -> int:
    """The instance home and the development database; 0, or 2 with one line saying what to do."""
    home = ensure_dagster_home()
    try:
        _create_instance_storage()
    except CommandError as error:
        print(f"ops_platform dev: error: {error}", file=sys.stderr, flush=True)
        return EXIT_BAD_SETUP
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
    if not slack_configured(os.environ):
        _say("Slack is not configured (set SLACK_WEBHOOK_URL, or SLACK_BOT_TOKEN and SLACK_CHANNEL): alerts and "
             "reports go to the run logs only")
    if not shutil.which("pg_dump"):
        _say("warning: pg_dump is not on PATH, so backups will fail at their first step "
             "(Debian/Ubuntu: apt-get install postgresql-client)")
    return 0


def _stop(processes: list[subprocess.Popen], interrupted: bool) -> None:
    """A clean shutdown, last started first: Ctrl-C for each (a terminal's Ctrl-C has already reached
    them: they get a moment first), then SIGTERM, then SIGKILL for one that does not stop."""
    steps = ([(None, 5)] if interrupted else []) + [(signal.SIGINT, STOP_WAIT_SECONDS),
                                                      (signal.SIGTERM, STOP_WAIT_SECONDS), (signal.SIGKILL, 5)]
    for sig, wait in steps:
        alive = [process for process in reversed(processes) if process.poll() is None]
        if not alive:
            return
        for process in alive:
            if sig is not None:
                process.send_signal(sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(process.poll() is None for process in alive):
            time.sleep(0.2)


def code_location(root: Path) -> tuple[str, str]:
    """(name, module) of the code location, from the python_module entry of the project's workspace.yaml,
    the file dagster-webserver and dagster-daemon read with -w: the two never disagree."""
    with open(root / "workspace.yaml") as handle:
        [entry] = yaml.safe_load(handle)["load_from"]
    module = entry["python_module"]
    return module["location_name"], module["module_name"]


def _wait_until_serving(socket_path: Path, server: subprocess.Popen, timeout: float = 180) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        check = subprocess.run([_program("dagster"), "api", "grpc-health-check", "-s", str(socket_path)],
                               capture_output=True, text=True, check=False)
        if check.returncode == 0:
            return True
        time.sleep(1)
    return False


def serve(host: str, port: int, verbose: bool = False) -> int:
    """One code server for the code location, and dagster-webserver and dagster-daemon both using it
    (as dagster dev does): code is loaded once, "Reload definitions" in the UI reloads it for the
    daemon too, and the daemon does not restart a code server of its own every minute (each old one
    logs "No heartbeat received in 20 seconds, shutting down"). Their output (and the runs') is
    shown through ``DevLogFilter`` unless ``verbose``."""
    root = project_root()
    name, module = code_location(root)
    scratch = Path(tempfile.mkdtemp(prefix="ops_platform_dev_"))
    socket_path = scratch / "code.sock"
    workspace = scratch / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - grpc_server:\n      socket: {socket_path}\n      location_name: {name}\n")
    commands = {
        "the code server": [_program("dagster"), "code-server", "start", "-s", str(socket_path), "-m", module,
                            "--location-name", name],
        "dagster-webserver": [_program("dagster-webserver"), "-h", host, "-p", str(port), "-w", str(workspace)],
        "dagster-daemon": [_program("dagster-daemon"), "run", "-w", str(workspace)],
    }
    processes: list[subprocess.Popen] = []
    received: list[int] = []

    def on_signal(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        for label, command in commands.items():
            process = subprocess.Popen(command, cwd=root, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            threading.Thread(target=_show, args=(process.stdout, None if verbose else DevLogFilter()),
                             name=f"output of {label}", daemon=True).start()
            processes.append(process)
            if label == "the code server" and not _wait_until_serving(socket_path, processes[0]):
                print("ops_platform dev: error: the code server did not start (see the lines above)",
                      file=sys.stderr, flush=True)
                return 1
        _say(f"the UI is at http://{host}:{port} (Ctrl-C stops the webserver, the daemon and the code server)")
        while True:
            for label, process in zip(commands, processes):
                if process.poll() is not None:
                    print(f"ops_platform dev: error: {label} stopped (exit code {process.returncode}); "
                          "stopping the others", file=sys.stderr, flush=True)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop(processes, interrupted=signal.SIGINT in received)
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops_platform.dev",
                                     description="Run the platform locally: the Dagster UI and daemon.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--verbose", action="store_true",
                        help="show every line the webserver, the daemon and the runs log (default: warnings, "
                             "errors and one line per run started and finished)")
    args = parser.parse_args(argv)
    code = prepare()
    return code if code else serve(args.host, args.port, args.verbose)


if __name__ == "__main__":
    sys.exit(main())

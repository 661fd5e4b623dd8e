"""A dagster-webserver process on the project's workspace.yaml, and the Chromium that drives it:
started, waited for and stopped the same way by the UI tests and the UI benchmark."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = ROOT / "workspace.yaml"  # the code location, under its name, as every webserver loads it
BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_webserver(env: dict, log: Path | None, *options: str) -> tuple[str, subprocess.Popen]:
    """dagster-webserver on a free loopback port, loading the project's workspace.yaml (not yet up: see
    ``wait_until_up``)."""
    port = free_port()
    with open(log if log else "/dev/null", "w") as stderr:
        process = subprocess.Popen([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                                    "-w", str(WORKSPACE), *options],
                                   cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    return f"http://127.0.0.1:{port}", process


def wait_until_up(url: str, timeout: float = 120, process: subprocess.Popen | None = None) -> bool:
    """Whether the server at ``url`` answered within ``timeout`` seconds (False at once if
    ``process`` exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (process is None or process.poll() is None):
        try:
            if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def stop(processes) -> None:
    """Terminate the processes; kill one that has not stopped within 30 s."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

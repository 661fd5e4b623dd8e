"""deploy/ read as systemd reads it: the units' settings, the environment each unit's process gets, and
its command line with the host's paths and ports replaced by a test's own (processes on loopback
instead of units)."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
INSTALL = "/opt/ops_platform"  # where the units expect the checkout and its .venv
BIN = Path(sys.executable).parent
PLATFORM_UNITS = ("ops-platform-code-server.service", "ops-platform-daemon.service",
                  "ops-platform-webserver.service", "ops-platform-webserver-readonly.service")
WEBSERVER_UNITS = ("ops-platform-webserver.service", "ops-platform-webserver-readonly.service")
# A machine's share of the fleet's backups: fleet_backup_job's steps, from the Celery broker.
WORKER_UNIT = "ops-platform-celery-worker.service"
# CI's way in: no Dagster, no instance, no secret of the platform.
GATEWAY_UNIT = "ops-platform-gateway.service"
# The files the units read (EnvironmentFile=) and what deploy/ ships for each. ops_platform.env holds
# the platform's settings and secrets: .env.example's variables.
ENV_FILES = {
    "/etc/ops_platform/ops_platform.env": ROOT / ".env.example",
    "/etc/ops_platform/instance.env": DEPLOY / "env" / "instance.env.example",
    "/etc/ops_platform/viewer.env": DEPLOY / "env" / "viewer.env.example",
    "/etc/ops_platform/gateway.env": DEPLOY / "env" / "gateway.env.example",
}


def unit(name: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, values in order (a key may repeat)."""
    found: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def env_file(path: Path) -> dict[str, str]:
    """A KEY=value file as systemd's EnvironmentFile= reads it: lines starting with # or ; are
    comments; a value in quotes loses them; an unquoted value keeps everything up to its trailing
    whitespace, a "# comment" included."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith(("#", ";")):
            key, value = line.split("=", 1)
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            values[key.strip()] = value
    return values


def expand(text: str, specifiers: dict[str, str]) -> str:
    return re.sub(r"%([a-zA-Z%])", lambda match: specifiers[match.group(1)], text)


def unit_environment(name: str, files: dict[str, dict[str, str]], specifiers: dict[str, str],
                     base: dict[str, str]) -> dict[str, str]:
    """The environment of the unit's process: ``base`` (what systemd gives every service), its
    Environment= lines, then its EnvironmentFile= files in order (they win over Environment=, and a
    later file over an earlier one). ``files`` maps each file the unit reads to its variables."""
    env = dict(base)
    for line in unit(name).get("Environment", []):
        key, value = line.split("=", 1)
        env[key] = expand(value, specifiers)
    for path in unit(name).get("EnvironmentFile", []):
        env.update(files[path.lstrip("-")])
    return env


def command(line: str, specifiers: dict[str, str], ports: dict[str, str],
            replacements: dict[str, str] | None = None) -> list[str]:
    """An Exec*= line as argv, wherever in it they appear: the test's files (``replacements``), the
    checkout instead of /opt/ops_platform, and the test's ports (``ports``: the unit's -> the test's)
    after -p, --port and in loopback addresses (127.0.0.1:3000)."""
    text = expand(line, specifiers)
    for path, replacement in (replacements or {}).items():
        text = text.replace(path, replacement)
    text = text.replace(f"{INSTALL}/.venv/bin/", f"{BIN}/").replace(f"{INSTALL}/", f"{ROOT}/")
    text = re.sub(r"(?:(?<=-p )|(?<=--port )|(?<=--port=)|(?<=127\.0\.0\.1:))(\d+)\b",
                  lambda match: ports.get(match.group(1), match.group(1)), text)
    return shlex.split(text)

"""Who can reach the UI: `make dev` binds to loopback, and deploy/ shows the production shape (each
webserver on loopback behind its own oauth2-proxy, a --read-only webserver for people who should
see but not launch, no secret in any example file)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
NEEDS_SERVICES = False


def test_make_dev_binds_the_ui_to_loopback():
    output = subprocess.run(["make", "-n", "dev"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=True).stdout
    starts = [line for line in output.splitlines() if re.search(r"\bdagster dev\b|dagster-webserver|-m ops_platform\.dev\b", line)]
    assert starts, output
    for line in starts:
        words = shlex.split(line)
        host = words[words.index("-h") + 1] if "-h" in words else words[words.index("--host") + 1]
        assert host == "127.0.0.1", line
    assert "0.0.0.0" not in output


def unit(name: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def cfg(name: str) -> dict[str, str]:
    text = (DEPLOY / "oauth2-proxy" / name).read_text()
    return {key: value.strip() for key, value in re.findall(r"^(\w+)[ \t]*=[ \t]*(.+)$", text, re.MULTILINE)}


def test_each_webserver_listens_on_loopback_behind_its_own_proxy():
    operators = unit("ops-platform-webserver.service")["ExecStart"][0].split()
    viewers = unit("ops-platform-webserver-readonly.service")["ExecStart"][0].split()
    assert operators[0].endswith("/dagster-webserver") and viewers[0].endswith("/dagster-webserver")
    assert "--read-only" not in operators and "--read-only" in viewers
    for argv in (operators, viewers):
        assert argv[argv.index("-h") + 1] == "127.0.0.1"
    ports = {"operators.cfg": operators[operators.index("-p") + 1], "viewers.cfg": viewers[viewers.index("-p") + 1]}
    for name, port in ports.items():
        config = cfg(name)
        assert config["upstreams"] == f'["http://127.0.0.1:{port}/"]', name
        assert config["http_address"].startswith('"127.0.0.1:')
        assert config["cookie_secure"] == "true"
    assert cfg("operators.cfg")["authenticated_emails_file"], "operators are named one by one"
    for name in ("ops-platform-webserver.service", "ops-platform-webserver-readonly.service",
                 "ops-platform-daemon.service"):
        assert unit(name)["UMask"] == ["0077"], name
    assert unit("ops-platform-daemon.service")["ExecStart"][0].endswith("dagster-daemon run")


def test_no_example_holds_a_secret():
    for path in (DEPLOY / "oauth2-proxy").iterdir():
        for key, value in re.findall(r"^[ \t]*(\w+)[ \t]*=[ \t]*(.*)$", path.read_text(), re.MULTILINE):
            if re.search(r"secret|password|token$", key, re.IGNORECASE):
                assert path.name.endswith(".env.example") and value == "", (path.name, key)
    assert "EnvironmentFile=/etc/oauth2-proxy/%i.env" in (DEPLOY / "systemd" / "oauth2-proxy@.service").read_text()

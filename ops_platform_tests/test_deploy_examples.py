"""Who can reach the UI, and what each process of the production shape may do: `make dev` binds to
loopback, and deploy/ (read here as files, everywhere; test_deploy_shape.py starts it) is one code
server and its clients, every unit sandboxed (checked with systemd-analyze), each webserver on loopback
behind its own oauth2-proxy, the operators' proxy admitting only whom it names, and no secret in any
example file."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from ops_platform.config import ENVIRONMENT_PREFIXES

from ops_platform_tests.deploy_units import (
    DEPLOY,
    ENV_FILES,
    GATEWAY_UNIT,
    PLATFORM_UNITS,
    ROOT,
    UNITS,
    WEBSERVER_UNITS,
    WORKER_UNIT,
    env_file,
    unit,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: dagster requires tomli
    import tomli as tomllib

NEEDS_SERVICES = False
ALL_UNITS = (*PLATFORM_UNITS, WORKER_UNIT, GATEWAY_UNIT, "oauth2-proxy@.service")
GRPC_WORKSPACE = "/opt/ops_platform/deploy/workspace.grpc.yaml"
SECURITY_EXPOSURE_MAX = 2.0  # systemd-analyze security: 0 (locked down) .. 10 (exposed); 1.2-1.4 measured


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


def cfg(name: str) -> dict:
    return tomllib.loads((DEPLOY / "oauth2-proxy" / name).read_text())


def argv(name: str) -> list[str]:
    return shlex.split(unit(name)["ExecStart"][0])


def option(words: list[str], *names: str) -> str:
    index = next(i for i, word in enumerate(words) if word in names)
    return words[index + 1]


def test_each_webserver_listens_on_loopback_behind_its_own_proxy():
    operators, viewers = argv("ops-platform-webserver.service"), argv("ops-platform-webserver-readonly.service")
    assert operators[0].endswith("/dagster-webserver") and viewers[0].endswith("/dagster-webserver")
    assert "--read-only" not in operators and "--read-only" in viewers
    ports = {"operators.cfg": option(operators, "-p"), "viewers.cfg": option(viewers, "-p")}
    for name, port in ports.items():
        config = cfg(name)
        assert config["upstreams"] == [f"http://127.0.0.1:{port}/"], name
        assert config["http_address"].startswith("127.0.0.1:") and config["cookie_secure"] is True
        assert config["trusted_proxy_ips"] == ["127.0.0.1/32", "::1/128"], "only the host's reverse proxy"
    for words in (operators, viewers):
        assert option(words, "-h") == "127.0.0.1"


def test_one_code_server_serves_the_webservers_and_the_daemon():
    """The code server loads workspace.yaml's entry under its name, on the port of workspace.grpc.yaml,
    which is how the webservers and the daemon (loading no code) reach it; only the code server reads
    the platform's settings; the read-only webserver runs as a user of its own with the viewer role."""
    [entry] = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    [grpc] = yaml.safe_load((DEPLOY / "workspace.grpc.yaml").read_text())["load_from"]
    server = argv("ops-platform-code-server.service")
    assert server[0].endswith("/dagster") and server[1:3] == ["code-server", "start"]
    assert option(server, "-m") == entry["python_module"]["module_name"]
    assert option(server, "--location-name") == entry["python_module"]["location_name"] == grpc["grpc_server"]["location_name"]
    assert option(server, "-h") == grpc["grpc_server"]["host"] == "127.0.0.1"
    assert int(option(server, "-p")) == grpc["grpc_server"]["port"]
    assert unit("ops-platform-code-server.service")["KillSignal"] == ["SIGINT"]
    daemon = argv("ops-platform-daemon.service")
    assert daemon[0].endswith("/dagster-daemon") and daemon[1] == "run"
    for words in (daemon, *(argv(name) for name in WEBSERVER_UNITS)):
        assert option(words, "-w") == GRPC_WORKSPACE, words

    files = {name: unit(name)["EnvironmentFile"] for name in PLATFORM_UNITS}
    assert files["ops-platform-code-server.service"] == ["/etc/ops_platform/ops_platform.env", "/etc/ops_platform/instance.env"]
    assert files["ops-platform-daemon.service"] == files["ops-platform-webserver.service"] == ["/etc/ops_platform/instance.env"]
    assert files["ops-platform-webserver-readonly.service"] == ["/etc/ops_platform/viewer.env"]
    assert all(path in ENV_FILES and ENV_FILES[path].exists() for paths in files.values() for path in paths)
    readonly = unit("ops-platform-webserver-readonly.service")
    assert readonly["DynamicUser"] == ["yes"] and "User" not in readonly
    for name in PLATFORM_UNITS:  # the instance's password: a credential, never a variable
        settings = unit(name)
        [passfile] = [line.split("=", 1)[1] for line in settings["Environment"] if line.startswith("PGPASSFILE=")]
        [credential] = settings["LoadCredential"]
        assert passfile == f"%d/{credential.split(':')[0]}" and credential.split(":")[1].startswith("/etc/ops_platform/"), name


def test_the_gateway_is_on_loopback_as_a_user_of_its_own_with_only_the_token_digests():
    """CI's way in: the deployment gateway listens on loopback (the host's TLS proxy in front), launches
    through the operators' webserver on loopback rather than through oauth2-proxy, runs as a user of
    its own that may talk to loopback only, and gets nothing but the CI tokens' digests and the
    operators' public URL for run links: no instance, no credential, none of the platform's settings."""
    words = argv(GATEWAY_UNIT)
    assert words[0] == "/opt/ops_platform/.venv/bin/python" and words[1:3] == ["-m", "ops_platform.gateway"]
    assert option(words, "--host") == "127.0.0.1"
    operators_port = option(argv("ops-platform-webserver.service"), "-p")
    assert option(words, "--webserver") == f"http://127.0.0.1:{operators_port}"
    port = option(words, "--port")
    others = {option(argv(name), "-p") for name in PLATFORM_UNITS if "-p" in argv(name)}
    proxies = {cfg(name)["http_address"].rsplit(":", 1)[1] for name in ("operators.cfg", "viewers.cfg")}
    assert port not in others | proxies, "a port of its own"
    settings = unit(GATEWAY_UNIT)
    assert settings["DynamicUser"] == ["yes"] and "User" not in settings and "Group" not in settings
    assert settings["IPAddressDeny"] == ["any"] and settings["IPAddressAllow"] == ["localhost"]
    for key in ("LoadCredential", "Environment", "StateDirectory", "ReadWritePaths", "ExecStartPre"):
        assert key not in settings, key
    assert settings["EnvironmentFile"] == ["/etc/ops_platform/gateway.env"]
    variables = env_file(ENV_FILES["/etc/ops_platform/gateway.env"])
    digests = {f"{prefix}DEPLOY_TOKEN_SHA256" for prefix in ENVIRONMENT_PREFIXES.values()}
    assert set(variables) == digests | {"DAGSTER_WEBSERVER_URL"}, set(variables)
    assert all(variables[name] == "" for name in digests), "each host sets its own"
    assert urlsplit(variables["DAGSTER_WEBSERVER_URL"]).scheme == "https"


def test_the_celery_worker_runs_the_platforms_app_with_the_broker_in_its_environment_only():
    words = argv(WORKER_UNIT)
    assert words[:4] == ["/opt/ops_platform/.venv/bin/celery", "-A", "ops_platform.celery_app", "worker"]
    assert not [word for word in words if "://" in word or "@" in word and not word.startswith("backups@")]
    settings = unit(WORKER_UNIT)
    assert settings["EnvironmentFile"] == ["/etc/ops_platform/ops_platform.env", "/etc/ops_platform/instance.env"]
    assert settings["LoadCredential"] == ["instance.pgpass:/etc/ops_platform/instance.pgpass"]
    example = env_file(ENV_FILES["/etc/ops_platform/ops_platform.env"])
    assert {"OPS_PLATFORM_EXECUTOR", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CELERY_QUEUE"} <= set(example)


def test_every_unit_is_sandboxed():
    for name in ALL_UNITS:
        settings = unit(name)
        single = {key: values[-1] for key, values in settings.items()}
        assert single["ProtectSystem"] == "strict", name
        assert single["ProtectHome"] == "yes" and single["PrivateDevices"] == "yes", name
        assert single["PrivateTmp"] == "yes" and single["NoNewPrivileges"] == "yes", name
        assert single["CapabilityBoundingSet"] == "", name
        assert set(single["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}, name
        assert settings["SystemCallFilter"][0] == "@system-service", name
        assert single["UMask"] == "0077", name
        if name in (*PLATFORM_UNITS, WORKER_UNIT):  # they write their instance home (code server, workers: backups)
            assert settings["ReadWritePaths"], name
            assert "StateDirectory" in settings, name


def test_systemd_analyze_verifies_the_units_and_scores_them(tmp_path):
    """`systemd-analyze verify` on the shipped units (in a root of their own, with stand-ins for the
    programs they start) has nothing to say, and `systemd-analyze security` rates each one OK."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd (.ci/run installs it)"
    root = tmp_path / "root"
    system = root / "etc" / "systemd" / "system"
    system.mkdir(parents=True)
    (root / "usr" / "lib" / "systemd" / "system").mkdir(parents=True)
    for target in [*Path("/usr/lib/systemd/system").glob("*.target"), *Path("/usr/lib/systemd/system").glob("*.slice")]:
        shutil.copyfile(target, root / "usr" / "lib" / "systemd" / "system" / target.name)
    for name in ALL_UNITS:
        shutil.copy(UNITS / name, system / name)
        for key in ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecStop", "ExecReload"):
            for line in unit(name).get(key, []):
                program = root / shlex.split(line)[0].lstrip("+-!@:").lstrip("/")
                program.parent.mkdir(parents=True, exist_ok=True)
                program.write_text("#!/bin/sh\n")
                program.chmod(0o755)
    scores = {}
    for name in ALL_UNITS:
        loaded = f"/etc/systemd/system/{name.replace('@.', '@operators.')}"
        verify = subprocess.run([analyze, "verify", f"--root={root}", loaded], capture_output=True, text=True, timeout=120)
        assert verify.returncode == 0 and (verify.stdout + verify.stderr).strip() == "", (name, verify.stdout, verify.stderr)
        security = subprocess.run([analyze, "security", "--offline=true", f"--root={root}", loaded],
                                  capture_output=True, text=True, timeout=120)
        found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
        assert found, security.stdout + security.stderr
        scores[name] = float(found.group(1))
    print("systemd-analyze security exposure:", scores)
    assert max(scores.values()) <= SECURITY_EXPOSURE_MAX, scores


# oauth2-proxy settings that let a request through on something other than a person's login: a bearer
# token (skip_jwt_bearer_tokens, extra_jwt_issuers, oidc_extra_audiences, bearer_token_login_fallback),
# a route or an address that needs no login, a password file, an unverified email or issuer, an
# unchecked certificate.
ADMITS_WITHOUT_LOGIN = re.compile(r"jwt|bearer|extra_audiences|skip_auth|trusted_ips|htpasswd|basic_auth|"
                                  r"insecure|unverified|skip_verify")
GITHUB_SUBJECT = re.compile(r"repo:[^\s:]+/[^\s:]+:")


def test_the_operators_proxy_admits_only_the_people_it_names():
    """email_domains = ["*"] makes oauth2-proxy admit any account, and ignore the emails file. A bearer
    token (a GitHub Actions OIDC token, which any workflow of any repository can get for an audience)
    would give CI everything an operator can do, restores included: CI reaches only the deployment
    gateway. So: no wildcard anywhere, no way in but a person's login, the operators named one by one
    by their email address, and no CI subject."""
    for name in ("operators.cfg", "viewers.cfg"):
        config = cfg(name)
        for key in ("email_domains", "allowed_groups", "allowed_roles", "whitelist_domains"):
            values = config.get(key, [])
            for value in values if isinstance(values, list) else [values]:
                assert value.strip() and "*" not in value, (name, key, value)
        assert [key for key in config if ADMITS_WITHOUT_LOGIN.search(key)] == [], name
        assert config["provider"] == "oidc" and config["oidc_issuer_url"] == "https://accounts.google.com", name
    operators = cfg("operators.cfg")
    assert "email_domains" not in operators, "any email_domains would admit a whole domain, not the listed people"
    assert operators["authenticated_emails_file"] == "/etc/oauth2-proxy/operators.txt"
    assert "token.actions.githubusercontent.com" not in (DEPLOY / "oauth2-proxy" / "operators.cfg").read_text()
    listed = (DEPLOY / "oauth2-proxy" / "operators.txt.example").read_text()
    entries = [line.strip() for line in listed.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert entries, "the example names its operators"
    for entry in entries:
        assert re.fullmatch(r"[^@\s*:]+@[^@\s*:]+\.[a-z]+", entry), entry
    assert not GITHUB_SUBJECT.search(listed), "a CI subject in the operators' list"
    assert cfg("viewers.cfg")["email_domains"] == ["yourstore.com"]


def test_no_example_holds_a_secret():
    for path in (*(DEPLOY / "oauth2-proxy").iterdir(), *(DEPLOY / "env").iterdir()):
        for key, value in re.findall(r"^[ \t]*(\w+)[ \t]*=[ \t]*(.*)$", path.read_text(), re.MULTILINE):
            if re.search(r"secret|password|token$", key, re.IGNORECASE):
                assert path.name.endswith(".env.example") and value == "", (path.name, key)
    for path in (DEPLOY / "env").iterdir():
        for key, value in env_file(path).items():
            assert not re.search(r"://[^/@]*:[^/@]*@", value), (path.name, key, "a password in a URL")
    assert "EnvironmentFile=/etc/oauth2-proxy/%i.env" in (DEPLOY / "systemd" / "oauth2-proxy@.service").read_text()

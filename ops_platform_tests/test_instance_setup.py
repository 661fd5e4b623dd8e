"""Commands started together on a new ``$DAGSTER_HOME`` (two backups at once, a backup beside a
health check) all get the instance; none fails creating its storage."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time

import pytest

from ops_platform.cli import runs
from ops_platform.cli.errors import CommandError

NEEDS_SERVICES = False

OPEN_INSTANCE = """
import time, sys
from ops_platform.cli.runs import instance_storage
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
with instance_storage() as instance:
    print(instance.get_runs_count())
"""


def test_commands_started_together_on_a_new_instance_all_open_it(tmp_path):
    for attempt in range(2):
        home = tmp_path / f"home-{attempt}"
        env = {**os.environ, "DAGSTER_HOME": str(home)}
        start_at = str(time.time() + 4)
        commands = [subprocess.Popen([sys.executable, "-c", OPEN_INSTANCE, start_at], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for _ in range(4)]
        for command in commands:
            out, err = command.communicate(timeout=120)
            assert command.returncode == 0, err
            assert out.strip() == "0", out


def test_a_command_stuck_opening_the_instance_holds_the_next_one_a_bounded_time(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setattr(runs, "STORAGE_SETUP_WAIT_SECONDS", 1)
    holder = os.open(home / ".storage-setup.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        started = time.monotonic()
        with pytest.raises(CommandError, match="another command has been opening the Dagster instance"):
            with runs.instance_storage():
                pass
        assert time.monotonic() - started < 10
    finally:
        os.close(holder)
    with runs.instance_storage() as instance:
        assert instance.get_runs_count() == 0

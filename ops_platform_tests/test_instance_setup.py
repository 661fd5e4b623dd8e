"""Commands started together on a new ``$DAGSTER_HOME`` (two backups at once, a backup beside a
health check) all get the instance; none fails creating its storage."""

from __future__ import annotations

import os
import subprocess
import sys
import time

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

"""The rollback hook's limits: its timeout holds even when a child escapes the process group,
and a secret is never cut in half before it is redacted."""

from __future__ import annotations

import time

from ops_platform.config import EnvironmentConfig
from ops_platform.lib import deploy
from ops_platform.lib.redact import Redactor
from ops_platform_tests.conftest import database_url


def production(command: str) -> EnvironmentConfig:
    return EnvironmentConfig(name="production", database_url=database_url("production"), rollback_command=command)


def test_timeout_holds_when_a_child_keeps_the_output_open():
    started = time.monotonic()
    outcome = deploy.run_rollback(production("echo rolling back; setsid sleep 30 & sleep 30"), "1.2.3", None,
                                  "unhealthy", timeout_seconds=1)
    elapsed = time.monotonic() - started
    assert not outcome.ok and "timed out after 1s" in outcome.summary
    assert elapsed < 10, f"the rollback took {elapsed:.1f}s despite a 1 s timeout"


def test_output_is_redacted_before_it_is_cut_to_its_tail():
    secret = "S" + "x" * 60 + "-rollback-secret"
    redactor = Redactor([secret])
    # 20 lines of 197 characters after the secret: the kept tail (4,000 characters) starts 40
    # characters before the end of the secret's line, inside the secret.
    command = f"echo 'token {secret} used'; for i in $(seq 20); do printf '%0197d\\n' 0; done"
    outcome = deploy.run_rollback(production(command), "1.2.3", None, "unhealthy", redactor=redactor)
    assert outcome.ok and outcome.output.endswith("0" * 197)
    assert "rollback-secret" not in outcome.output and "x" * 10 not in outcome.output

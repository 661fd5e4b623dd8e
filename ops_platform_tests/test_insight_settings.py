"""Insight settings: the INSIGHT rows of lib/settings.py, the InsightSettings resource and
.env.example agree; a bad value is one line and never stops the code location from loading."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from ops_platform.config import ConfigError
from ops_platform.defs.resources import build_resources
from ops_platform.defs.settings import InsightSettings
from ops_platform.lib import settings
from ops_platform.lib.insight.conditions import ConditionAlertSettings, StatsThresholds
from ops_platform.lib.insight.database_stats import StatsCollectionSettings

NEEDS_SERVICES = False


def _example_variables() -> set[str]:
    text = open(os.path.join(os.path.dirname(__file__), "..", ".env.example")).read()
    return {line.split("=", 1)[0].strip() for line in text.splitlines() if "=" in line and not line.startswith("#")}


def test_the_table_the_resource_and_env_example_agree():
    fields = InsightSettings.model_fields
    for setting in settings.INSIGHT:
        assert setting.field in fields, setting.field
        assert fields[setting.field].default == setting.default, setting.field
        assert setting in settings.ALL
    assert {s.variable for s in settings.INSIGHT} <= _example_variables()
    resource = InsightSettings()
    assert resource.collection() == StatsCollectionSettings.from_environ({})
    assert resource.thresholds() == StatsThresholds.from_environ({})
    assert resource.alert_settings() == ConditionAlertSettings.from_environ({})


@pytest.mark.parametrize("variable,raw,line", [
    ("STATS_CONNECTIONS_PERCENT", "eighty", "STATS_CONNECTIONS_PERCENT must be a number, got 'eighty'"),
    ("STATS_CONNECTIONS_PERCENT", "120", "STATS_CONNECTIONS_PERCENT must be <= 100, got 120"),
    ("STATS_DEAD_TUPLES_MIN", "10k", "STATS_DEAD_TUPLES_MIN must be an integer, got '10k'"),
    ("STATS_XID_AGE_FRACTION", "-0.1", "STATS_XID_AGE_FRACTION must be >= 0, got -0.1"),
    ("STATS_LOCK_TIMEOUT_MS", "0", "STATS_LOCK_TIMEOUT_MS must be >= 1, got 0"),
    ("DIGEST_SILENCE_QUIET_DAYS", "2", "DIGEST_SILENCE_QUIET_DAYS must be <= 1, got 2"),
])
def test_a_bad_value_is_one_line_listed_by_the_resource(variable, raw, line):
    setting = next(s for s in settings.INSIGHT if s.variable == variable)
    with pytest.raises(ConfigError) as error:
        settings.value_of(setting, {variable: raw})
    assert str(error.value) == line
    resource = build_resources({variable: raw, "STATS_TOP_TABLES": "5", "STATS_GROWTH_PERCENT": "35.5"})[
        "insight_settings"]
    assert resource.invalid_settings == [line]
    assert resource.top_tables == dg.EnvVar.int("STATS_TOP_TABLES") and resource.growth_percent == 35.5
    with pytest.raises(dg.Failure, match=f"^operations report: {line}"):
        resource.require_valid("operations report")


def test_code_location_loads_with_a_bad_threshold():
    env = dict(os.environ, STATS_CONNECTIONS_PERCENT="eighty", DIGEST_SILENCE_QUIET_DAYS="x")
    code = ("from ops_platform.definitions import defs; d = defs(); "
            "print(sorted(j.name for j in d.jobs if not j.name.startswith('__'))); "
            "print(sorted(s.name for s in d.sensors))")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "database_stats_job" in result.stdout and "database_condition_sensor" in result.stdout

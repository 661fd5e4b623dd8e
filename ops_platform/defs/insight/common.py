"""What the insight definitions share: the group, links into the UI, partitioned check specs."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from urllib.parse import quote

import dagster as dg

from ops_platform.defs.environments import environment_partitions

INSIGHT_GROUP = "insight"


def asset_url(key: str, partition: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """A link to an asset's page in the UI, when ``DAGSTER_WEBSERVER_URL`` is set."""
    environ = os.environ if environ is None else environ
    base = environ.get("DAGSTER_WEBSERVER_URL", "").strip().rstrip("/")
    if not base:
        return None
    return f"{base}/assets/{quote(key)}" + (f"?partition={quote(partition)}" if partition else "")


def partitioned_check_spec(name: str, asset: dg.AssetKey, description: str) -> dg.AssetCheckSpec:
    """A check with one result per environment partition, so the UI shows production's
    connections check apart from staging's. (Partitioned checks are a preview feature of Dagster
    1.13; the warning it gives once per spec is silenced here, where the choice is made.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, description=description, partitions_def=environment_partitions)


def one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"

"""Corrupt copies found by retention are alerted once, not on every daily run.

A small JSON file in the environment's backup folder (``.retention-alerted.json``, a name
retention never touches) remembers which copies (backup id and location) were already posted.
An entry is dropped when its backup is gone or its copy is re-checked and found intact, so a copy
that goes bad again is alerted again. Only alerting depends on it: every run still re-checks,
reports and keeps a corrupt backup whatever the file says.
"""

from __future__ import annotations

import json
from pathlib import Path

from ops_platform.lib.retention.policy import RetentionPlan
from ops_platform.lib.stores import write_atomically

STATE_NAME = ".retention-alerted.json"


def state_path(local, environment: str) -> Path:
    return local.path(environment, STATE_NAME)


def _key(check: dict) -> str:
    return f"{check['id']} {check['location']}"


def load(path: Path) -> dict[str, str]:
    """Copy key -> what was wrong when alerted. A missing or unreadable file is an empty state
    (at worst one repeated alert)."""
    try:
        alerted = json.loads(path.read_text()).get("alerted", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(key): str(value) for key, value in alerted.items()} if isinstance(alerted, dict) else {}


def new_corruption(plan: RetentionPlan, alerted: dict[str, str]) -> tuple[list[dict], dict[str, str]]:
    """The corrupt copies of this plan that were not alerted before, and the state to save once
    they are posted."""
    present = {item.id for item in plan.items}
    checked = {_key(check): check for check in plan.rechecks}
    new = [check for key, check in checked.items() if check["status"] == "corrupt" and key not in alerted]
    state = {key: detail for key, detail in alerted.items()
             if key.split(" ")[0] in present and checked.get(key, {}).get("status") != "ok"}
    state.update({key: check["detail"] for key, check in checked.items() if check["status"] == "corrupt"})
    return new, state


def save(path: Path, alerted: dict[str, str]) -> None:
    write_atomically(path, (json.dumps({"alerted": alerted}, indent=2, sort_keys=True) + "\n").encode())

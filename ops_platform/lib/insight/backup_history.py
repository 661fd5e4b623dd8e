"""What the backups of one environment have been doing: a pure summary of manifests, backup run
outcomes and restore-drill results.

- ``made`` counts committed backups (manifests) created in the window, of every kind;
  ``verified`` those whose verification passed. ``failed`` counts failed backup runs (from the
  run history: a failed run leaves no manifest, so manifests alone cannot show it).
- Size and duration trends compare the newest backup in the window with the oldest one.
- Bytes held are the stored sizes of the backups present locally (a location that is not
  ``s3://``) and in S3 (``s3://`` locations), counted once per place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from ops_platform.lib.artifacts import Manifest, utc_iso
from ops_platform.lib.insight import known_fields

DEFAULT_WINDOW_DAYS = (1, 7, 30)


@dataclass(frozen=True)
class BackupRun:
    """The outcome of one backup run (from the Dagster run history)."""

    at: datetime
    environment: str
    success: bool
    reason: str = ""
    backup_id: str | None = None


@dataclass(frozen=True)
class DrillResult:
    """The outcome of one restore drill."""

    at: datetime
    environment: str
    success: bool
    backup_id: str | None = None
    duration_seconds: float | None = None
    reason: str = ""


@dataclass
class BackupWindow:
    days: int
    made: int
    verified: int
    failed: int
    newest_bytes: int | None = None
    size_change_percent: float | None = None
    mean_duration_seconds: float | None = None
    duration_change_percent: float | None = None
    last_failure_reason: str | None = None


@dataclass
class BackupHistory:
    """One environment's backup figures at ``generated_at`` (UTC ISO-8601 strings throughout)."""

    environment: str
    generated_at: str
    windows: list[BackupWindow] = field(default_factory=list)
    newest_verified_id: str | None = None
    newest_verified_age_seconds: float | None = None
    newest_id: str | None = None
    newest_is_verified: bool | None = None
    local_bytes: int = 0
    local_count: int = 0
    s3_bytes: int = 0
    s3_count: int = 0
    last_drill_at: str | None = None
    last_drill_success: bool | None = None
    last_drill_reason: str | None = None
    last_successful_drill_at: str | None = None
    last_successful_drill_backup: str | None = None

    def window(self, days: int) -> BackupWindow | None:
        """The figures over the last ``days`` days, if that window was summarized."""
        return next((w for w in self.windows if w.days == days), None)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> BackupHistory:
        """The inverse of ``to_dict``; unknown keys are ignored, so older readers accept newer data."""
        values = known_fields(cls, data)
        values["windows"] = [BackupWindow(**known_fields(BackupWindow, window)) for window in data.get("windows") or []]
        return cls(**values)


def _change(first: float | None, last: float | None) -> float | None:
    if not first or last is None:
        return None
    return round(100.0 * (last - first) / first, 2)


def summarize_window(manifests: list[Manifest], runs: list[BackupRun], now: datetime, days: int) -> BackupWindow:
    """Backups made, verified and failed in the ``days`` before ``now``, with size and duration trends."""
    since = now - timedelta(days=days)
    made = sorted((m for m in manifests if since <= m.created <= now), key=lambda m: m.created)
    failures = sorted((r for r in runs if not r.success and since <= r.at <= now), key=lambda r: r.at)
    window = BackupWindow(days, len(made), sum(1 for m in made if m.verified), len(failures))
    if made:
        window.newest_bytes = made[-1].stored_bytes
        window.size_change_percent = _change(made[0].stored_bytes, made[-1].stored_bytes)
        window.mean_duration_seconds = round(sum(m.duration_seconds for m in made) / len(made), 2)
        window.duration_change_percent = _change(made[0].duration_seconds, made[-1].duration_seconds)
    if failures:
        window.last_failure_reason = failures[-1].reason or "no reason recorded"
    return window


def summarize_backups(environment: str, manifests: Iterable[Manifest], runs: Iterable[BackupRun],
                      drills: Iterable[DrillResult], now: datetime,
                      window_days: Iterable[int] = DEFAULT_WINDOW_DAYS) -> BackupHistory:
    """The environment's ``BackupHistory``; items of other environments are ignored."""
    manifests = [m for m in manifests if m.environment == environment]
    runs = [r for r in runs if r.environment == environment]
    drills = sorted((d for d in drills if d.environment == environment and d.at <= now), key=lambda d: d.at)
    history = BackupHistory(environment, utc_iso(now),
                            [summarize_window(manifests, runs, now, days) for days in window_days])
    present = [m for m in manifests if m.created <= now]
    if present:
        newest = max(present, key=lambda m: m.created)
        history.newest_id, history.newest_is_verified = newest.id, bool(newest.verified)
    verified = [m for m in present if m.verified]
    if verified:
        newest = max(verified, key=lambda m: m.created)
        history.newest_verified_id = newest.id
        history.newest_verified_age_seconds = (now - newest.created).total_seconds()
    for manifest in manifests:
        if any(not location.startswith("s3://") for location in manifest.locations):
            history.local_bytes += manifest.stored_bytes
            history.local_count += 1
        if any(location.startswith("s3://") for location in manifest.locations):
            history.s3_bytes += manifest.stored_bytes
            history.s3_count += 1
    if drills:
        last = drills[-1]
        history.last_drill_at, history.last_drill_success = utc_iso(last.at), last.success
        history.last_drill_reason = last.reason or None
    good = [d for d in drills if d.success]
    if good:
        history.last_successful_drill_at = utc_iso(good[-1].at)
        history.last_successful_drill_backup = good[-1].backup_id
    return history

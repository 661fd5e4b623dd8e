"""Deployment verifications over a period: how many, and how they ended."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

SUCCEEDED, FAILED, ROLLED_BACK, ROLLBACK_FAILED = "succeeded", "failed", "rolled_back", "rollback_failed"


@dataclass(frozen=True)
class DeploymentRecord:
    """One ``verify-deployment`` run. ``outcome``: succeeded; failed (no rollback configured);
    rolled_back; rollback_failed."""

    at: datetime
    environment: str
    version: str
    outcome: str
    reason: str = ""


@dataclass
class DeploymentSummary:
    environment: str
    days: float
    verifications: int = 0
    succeeded: int = 0
    failed: int = 0
    rolled_back: int = 0
    rollback_failed: int = 0
    failures: list[dict] = field(default_factory=list)


def summarize_deployments(environment: str, records: Iterable[DeploymentRecord], now: datetime,
                          days: float = 7) -> DeploymentSummary:
    """Counts per outcome in the ``days`` before ``now``; ``failures`` lists every one that did not
    succeed (newest first: at, version, outcome, reason)."""
    since = now - timedelta(days=days)
    summary = DeploymentSummary(environment, days)
    chosen = sorted((r for r in records if r.environment == environment and since <= r.at <= now),
                    key=lambda r: r.at, reverse=True)
    for record in chosen:
        summary.verifications += 1
        if record.outcome == SUCCEEDED:
            summary.succeeded += 1
            continue
        summary.failed += 1
        summary.rolled_back += record.outcome == ROLLED_BACK
        summary.rollback_failed += record.outcome == ROLLBACK_FAILED
        summary.failures.append({"at": record.at.isoformat(), "version": record.version,
                                 "outcome": record.outcome, "reason": record.reason})
    return summary

"""Checks on a database snapshot, and a pure alert state machine for the ones that fail.

The checks follow postgres_exporter's mixin alerts (PostgreSQLHighConnections, PostgresTablesNotVaccumed,
PostgresHasTooManyDeadTuples, ...), each with a severity and a threshold that can be changed
through the environment (``StatsThresholds.from_environ``):

| check                  | severity | fails when                                                             | variable (default)                   |
|------------------------|----------|------------------------------------------------------------------------|--------------------------------------|
| connections            | error    | client connections > N % of max_connections - reserved slots          | STATS_CONNECTIONS_PERCENT (80)       |
| xid_wraparound         | error    | any database's xid or multixact age > fraction × 2^31                 | STATS_XID_AGE_FRACTION (0.5)         |
| idle_in_transaction    | error    | a session has been idle in a transaction for more than N minutes       | STATS_IDLE_IN_TRANSACTION_MINUTES (10) |
| long_transaction       | warn     | a client transaction has been open for more than N minutes             | STATS_LONG_TRANSACTION_MINUTES (60)  |
| dead_tuples            | warn     | a table has >= N dead tuples, >= P % of its tuples, and no (auto)vacuum for D days | STATS_DEAD_TUPLES_MIN (10000), STATS_DEAD_TUPLES_PERCENT (10), STATS_VACUUM_MAX_DAYS (7) |
| replication_slot_wal   | error    | a slot retains more than N GB of WAL, or has lost WAL                  | STATS_SLOT_RETAINED_GB (10)          |
| database_growth        | warn     | the database grew more than N % since the size a day ago               | STATS_GROWTH_PERCENT (20)            |
| snapshot               | error    | the statistics could not be read (unreachable, timeout, bad setting)   | -                                    |

``ConditionTracker`` turns results into alerts the way ``lib/incidents.py`` does for health: one
``started`` event when a check starts failing, a ``reminder`` every ``STATS_REMINDER_MINUTES``
(240) while it still fails, and one ``cleared`` when it passes again. Only severities in
``alert_severities`` alert (errors; warnings too with ``STATS_ALERT_WARNINGS=1``). Its state is a
JSON-compatible dict for a sensor cursor; a snapshot no newer than the last one it saw is ignored,
so replaying one after a restart repeats nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime

from ops_platform.lib import settings as settings_table
from ops_platform.lib.artifacts import parse_utc
from ops_platform.lib.formatting import human_bytes, human_duration
from ops_platform.lib.insight import known_fields
from ops_platform.lib.insight.database_stats import (
    XID_LIMIT,
    DatabaseSnapshot,
    SessionInfo,
)

ERROR, WARN = "error", "warn"
STARTED, REMINDER, CLEARED = "started", "reminder", "cleared"
GIB = 1024 ** 3

SNAPSHOT = "snapshot"
SEVERITIES = {
    SNAPSHOT: ERROR,
    "connections": ERROR,
    "xid_wraparound": ERROR,
    "idle_in_transaction": ERROR,
    "long_transaction": WARN,
    "dead_tuples": WARN,
    "replication_slot_wal": ERROR,
    "database_growth": WARN,
}

# variable -> (field, documentation), from the settings table (lib/settings.py, INSIGHT_THRESHOLDS).
THRESHOLD_VARIABLES = {setting.variable: (setting.field, setting.description)
                       for setting in settings_table.INSIGHT_THRESHOLDS}


@dataclass(frozen=True)
class StatsThresholds:
    """The changeable limits of the checks (see the module table)."""

    connections_percent: float = 80.0
    xid_age_fraction: float = 0.5
    idle_in_transaction_minutes: float = 10.0
    long_transaction_minutes: float = 60.0
    dead_tuples_min: int = 10_000
    dead_tuples_percent: float = 10.0
    vacuum_max_days: float = 7.0
    slot_retained_gb: float = 10.0
    growth_percent: float = 20.0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> StatsThresholds:
        """Thresholds from the ``INSIGHT_THRESHOLDS`` rows of ``lib/settings.py``; a non-numeric or
        out-of-range value raises a one-line ConfigError naming the variable."""
        return cls(**settings_table.values(settings_table.INSIGHT_THRESHOLDS, environ))


@dataclass
class ConditionResult:
    """One check's outcome. ``description`` is one line for people; ``metadata`` holds the figures."""

    name: str
    passed: bool
    severity: str
    description: str
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> ConditionResult:
        return cls(**known_fields(cls, data))


def _result(name: str, failed: bool, description: str, **metadata) -> ConditionResult:
    return ConditionResult(name, not failed, SEVERITIES[name], description, metadata)


def _minutes(value: float) -> str:
    return human_duration(value * 60)


def check_connections(snapshot: DatabaseSnapshot, thresholds: StatsThresholds) -> ConditionResult:
    """Client connections against the usable limit (max_connections minus reserved slots)."""
    stats = snapshot.connections
    failed = stats.percent > thresholds.connections_percent
    return _result("connections", failed,
                   f"{stats.used} of {stats.limit} usable connections in use ({stats.percent:.1f} %, "
                   f"limit {thresholds.connections_percent:g} %)",
                   used=stats.used, limit=stats.limit, percent=round(stats.percent, 2), by_state=dict(stats.by_state),
                   threshold_percent=thresholds.connections_percent)


def check_xid_wraparound(snapshot: DatabaseSnapshot, thresholds: StatsThresholds) -> ConditionResult:
    """The oldest unfrozen transaction ID (or multixact) of any database against a fraction of 2^31."""
    limit = int(thresholds.xid_age_fraction * XID_LIMIT)
    worst = max(snapshot.database_ages, key=lambda a: max(a.xid_age, a.mxid_age or 0), default=None)
    if worst is None:
        return _result("xid_wraparound", False, "no database ages were readable", limit=limit)
    age = max(worst.xid_age, worst.mxid_age or 0)
    kind = "multixact" if (worst.mxid_age or 0) > worst.xid_age else "transaction ID"
    return _result("xid_wraparound", age > limit,
                   f"oldest {kind} age {age:,} in {worst.database} ({100 * age / XID_LIMIT:.1f} % of 2^31, "
                   f"limit {100 * thresholds.xid_age_fraction:g} %)",
                   database=worst.database, xid_age=worst.xid_age, mxid_age=worst.mxid_age, limit=limit)


def _session_text(session: SessionInfo) -> str:
    who = [f"application {session.application_name}" if session.application_name else "",
           f"user {session.user}" if session.user else ""]
    who = ", ".join(part for part in who if part)
    return f"pid {session.pid}" + (f" ({who})" if who else "")


def check_idle_in_transaction(snapshot: DatabaseSnapshot, thresholds: StatsThresholds) -> ConditionResult:
    """The session idle in a transaction for longest (it holds locks and blocks vacuum)."""
    session = snapshot.oldest_idle_in_transaction
    limit = thresholds.idle_in_transaction_minutes * 60
    if session is None or session.idle_seconds is None:
        return _result("idle_in_transaction", False, "no session is idle in a transaction", limit_seconds=limit)
    return _result("idle_in_transaction", session.idle_seconds > limit,
                   f"{_session_text(session)} idle in transaction for {human_duration(session.idle_seconds)} "
                   f"(limit {_minutes(thresholds.idle_in_transaction_minutes)})",
                   session=asdict(session), limit_seconds=limit)


def check_long_transaction(snapshot: DatabaseSnapshot, thresholds: StatsThresholds) -> ConditionResult:
    """The oldest open client transaction."""
    session = snapshot.oldest_transaction
    limit = thresholds.long_transaction_minutes * 60
    if session is None or session.transaction_seconds is None:
        return _result("long_transaction", False, "no open transactions", limit_seconds=limit)
    return _result("long_transaction", session.transaction_seconds > limit,
                   f"oldest transaction: {_session_text(session)}, open for "
                   f"{human_duration(session.transaction_seconds)} (limit {_minutes(thresholds.long_transaction_minutes)})",
                   session=asdict(session), limit_seconds=limit)


def check_dead_tuples(snapshot: DatabaseSnapshot, thresholds: StatsThresholds, now: datetime) -> ConditionResult:
    """Tables with many dead tuples that no vacuum has visited for ``vacuum_max_days``."""
    bloated = []
    for table in snapshot.dead_tuple_tables:
        dead, live = table.dead_tuples or 0, table.live_tuples or 0
        percent = 100.0 * dead / (dead + live) if dead + live else 0.0
        vacuumed = table.last_vacuumed
        days = (now - parse_utc(vacuumed)).total_seconds() / 86400 if vacuumed else None
        if dead >= thresholds.dead_tuples_min and percent >= thresholds.dead_tuples_percent and (
                days is None or days > thresholds.vacuum_max_days):
            bloated.append({"table": table.qualified_name, "dead_tuples": dead, "dead_percent": round(percent, 1),
                            "last_vacuumed": vacuumed})
    if not bloated:
        return _result("dead_tuples", False, f"no table has {thresholds.dead_tuples_min:,}+ dead tuples unvacuumed "
                       f"for {thresholds.vacuum_max_days:g} days", tables=[])
    first = bloated[0]
    since = f"last vacuumed {first['last_vacuumed']}" if first["last_vacuumed"] else "never vacuumed"
    more = f" and {len(bloated) - 1} more" if len(bloated) > 1 else ""
    return _result("dead_tuples", True,
                   f"{first['table']} has {first['dead_tuples']:,} dead tuples ({first['dead_percent']:g} %), "
                   f"{since}{more}", tables=bloated)


def check_replication_slots(snapshot: DatabaseSnapshot, thresholds: StatsThresholds) -> ConditionResult:
    """Replication slots retaining too much WAL (the disk fills) or that have lost WAL."""
    limit = int(thresholds.slot_retained_gb * GIB)
    bad = [slot for slot in snapshot.replication_slots
           if slot.wal_status == "lost" or (slot.retained_bytes or 0) > limit]
    slots = [asdict(slot) for slot in snapshot.replication_slots]
    if not snapshot.replication_slots:
        return _result("replication_slot_wal", False, "no replication slots", slots=[], limit_bytes=limit)
    if not bad:
        return _result("replication_slot_wal", False,
                       f"{len(slots)} replication slots, each within {thresholds.slot_retained_gb:g} GB of WAL",
                       slots=slots, limit_bytes=limit)
    worst = bad[0]
    state = "has lost WAL" if worst.wal_status == "lost" else f"retains {human_bytes(worst.retained_bytes or 0)} of WAL"
    active = "active" if worst.active else "inactive"
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    return _result("replication_slot_wal", True,
                   f"replication slot {worst.name} ({active}) {state} (limit {thresholds.slot_retained_gb:g} GB){more}",
                   slots=slots, limit_bytes=limit)


def check_growth(snapshot: DatabaseSnapshot, thresholds: StatsThresholds, size_a_day_ago: int | None) -> ConditionResult:
    """Growth since the size a day ago (from the snapshot history), as a percentage."""
    if not size_a_day_ago:
        return _result("database_growth", False, "no size from a day ago to compare with yet",
                       size_bytes=snapshot.size_bytes, size_a_day_ago=size_a_day_ago)
    growth = 100.0 * (snapshot.size_bytes - size_a_day_ago) / size_a_day_ago
    return _result("database_growth", growth > thresholds.growth_percent,
                   f"database {snapshot.database} is {human_bytes(snapshot.size_bytes)}, {growth:+.1f} % in a day "
                   f"(limit {thresholds.growth_percent:g} %)",
                   size_bytes=snapshot.size_bytes, size_a_day_ago=size_a_day_ago, growth_percent=round(growth, 2))


def snapshot_result(error: str | None, **metadata) -> ConditionResult:
    """The snapshot itself as a check: it fails, with ``error`` as its one line, when the statistics
    could not be read at all (then no other check has a result)."""
    if error:
        return _result(SNAPSHOT, True, error, **metadata)
    return _result(SNAPSHOT, False, "the statistics were read", **metadata)


def evaluate(snapshot: DatabaseSnapshot, thresholds: StatsThresholds, size_a_day_ago: int | None,
             now: datetime | None = None) -> list[ConditionResult]:
    """Every check on one snapshot, in a fixed order. ``now`` (for vacuum ages) defaults to the
    snapshot's own time."""
    now = now or snapshot.collected
    return [
        check_connections(snapshot, thresholds),
        check_xid_wraparound(snapshot, thresholds),
        check_idle_in_transaction(snapshot, thresholds),
        check_long_transaction(snapshot, thresholds),
        check_dead_tuples(snapshot, thresholds, now),
        check_replication_slots(snapshot, thresholds),
        check_growth(snapshot, thresholds, size_a_day_ago),
    ]


# --- alerts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConditionAlertSettings:
    reminder_seconds: float = 4 * 3600.0
    alert_severities: tuple[str, ...] = (ERROR,)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ConditionAlertSettings:
        """``STATS_REMINDER_MINUTES`` (240) and ``STATS_ALERT_WARNINGS`` (0; 1 alerts on warnings too),
        rows of ``lib/settings.py``. A bad value raises a one-line ConfigError."""
        values = settings_table.values(settings_table.INSIGHT_ALERTS, environ)
        return cls.from_values(values["alert_reminder_minutes"], values["alert_warnings"])

    @classmethod
    def from_values(cls, reminder_minutes: float, alert_warnings: int) -> ConditionAlertSettings:
        return cls(reminder_seconds=reminder_minutes * 60.0,
                   alert_severities=(ERROR, WARN) if alert_warnings else (ERROR,))


@dataclass
class ConditionEvent:
    """What to announce about one check of one environment."""

    kind: str
    environment: str
    name: str
    severity: str
    description: str
    at: float
    started_at: float
    duration_seconds: float | None = None


class ConditionTracker:
    """Started / reminder / cleared events from successive check results, per environment."""

    def __init__(self, settings: ConditionAlertSettings | None = None, state: dict | None = None):
        self.settings = settings or ConditionAlertSettings()
        self.state = state if state is not None else {"environments": {}}

    @classmethod
    def from_json(cls, text: str | None, settings: ConditionAlertSettings | None = None) -> ConditionTracker:
        """A tracker from a cursor string; empty or unreadable text starts fresh."""
        try:
            state = json.loads(text) if text else None
        except ValueError:
            state = None
        return cls.from_state(state, settings)

    @classmethod
    def from_state(cls, state, settings: ConditionAlertSettings | None = None) -> ConditionTracker:
        """A tracker from a state dict; anything malformed starts fresh."""
        if not isinstance(state, dict) or not isinstance(state.get("environments"), dict):
            return cls(settings)
        return cls(settings, state)

    def to_json(self) -> str:
        return json.dumps(self.state, sort_keys=True, separators=(",", ":"))

    def failing(self, environment: str) -> dict[str, dict]:
        """The conditions announced and not yet cleared: name -> {since, severity, description}."""
        return dict(self.state["environments"].get(environment, {}).get("conditions", {}))

    def observe(self, environment: str, results: list[ConditionResult], at: float) -> list[ConditionEvent]:
        """Apply one snapshot's results (taken at ``at``, epoch seconds) and return the events.
        A check missing from ``results`` keeps its state; results no newer than the last are ignored."""
        env = self.state["environments"].setdefault(environment, {"conditions": {}, "last_at": None})
        if env["last_at"] is not None and at <= env["last_at"]:
            return []
        env["last_at"] = at
        conditions = env["conditions"]
        events = []
        for result in sorted(results, key=lambda r: r.name):
            entry = conditions.get(result.name)
            failing = not result.passed and result.severity in self.settings.alert_severities
            if failing and entry is None:
                conditions[result.name] = {"since": at, "last_notice_at": at, "severity": result.severity,
                                           "description": result.description}
                events.append(ConditionEvent(STARTED, environment, result.name, result.severity,
                                             result.description, at, at))
            elif failing:
                entry["description"] = result.description
                if at - entry["last_notice_at"] >= self.settings.reminder_seconds:
                    entry["last_notice_at"] = at
                    events.append(ConditionEvent(REMINDER, environment, result.name, result.severity,
                                                 result.description, at, entry["since"], at - entry["since"]))
            elif entry is not None:
                del conditions[result.name]
                events.append(ConditionEvent(CLEARED, environment, result.name, entry["severity"],
                                             result.description, at, entry["since"], at - entry["since"]))
        return events

"""The morning digest and the weekly operations report, per environment.

- ``render_digest``: a short Slack message listing only what needs attention (failed or missing
  backups, a failed restore drill, open incidents, failing ERROR database checks, failed
  deployments, insight data that is missing or stale). On a good day it is one line, or None when
  quiet days are silenced.
- ``render_weekly_report``: Markdown (uptime and incidents, deployments, backups and drills,
  database growth and its biggest tables, slowest statements) plus a Slack-sized summary.

Both stay readable with a fleet of 100 targets: beyond the three environments' worth
(``LIST_EVERY_TARGET_UP_TO``), the quiet targets are one line ("97 targets backed up on schedule,
all verified", a table in the weekly Markdown), and only the targets needing attention are
listed, the most urgent first (an open incident, then failed, missed or stale backups and failed
deployments, then failed drills and database checks, then unverified backups). The Slack message
lists at most ``SLACK_LISTED_TARGETS`` of them and stays within Slack's block limits.

Every text passes through a ``Redactor`` as the last step, so a secret that found its way into a
reason or a statement can not reach Slack or the stored report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ops_platform.lib import settings as settings_table
from ops_platform.lib.artifacts import parse_utc, utc_iso
from ops_platform.lib.formatting import human_bytes, human_duration
from ops_platform.lib.insight.backup_history import BackupHistory
from ops_platform.lib.insight.conditions import ERROR, ConditionResult
from ops_platform.lib.insight.database_stats import DatabaseSnapshot, activity_since
from ops_platform.lib.insight.deployments import ROLLBACK_FAILED, ROLLED_BACK, DeploymentSummary
from ops_platform.lib.insight.open_incidents import OpenIncident
from ops_platform.lib.insight.uptime import ComponentUptime
from ops_platform.lib.messages.common import RUN_LINK_TEXT, sectioned_message, slack_message
from ops_platform.lib.redact import Redactor
from ops_platform.lib.slack import SlackMessage
from ops_platform.lib.sql_text import sanitize_statement

BIGGEST_TABLES = 10
SLOWEST_STATEMENTS = 5
CELL_CHARS = 160
LIST_EVERY_TARGET_UP_TO = 3
SLACK_LISTED_TARGETS = 20
NAMES_SHOWN = 12
INCIDENT, BACKUP, CHECK, UNVERIFIED, DATA = range(5)
_OUTCOME_TEXT = {ROLLED_BACK: "failed and was rolled back", ROLLBACK_FAILED: "failed and the rollback failed"}


@dataclass(frozen=True)
class DigestSettings:
    silence_quiet_days: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> DigestSettings:
        """``DIGEST_SILENCE_QUIET_DAYS`` (0; 1 posts nothing on a good day), a row of
        ``lib/settings.py``. A bad value raises a one-line ConfigError."""
        values = settings_table.values(settings_table.INSIGHT_ALERTS, environ)
        return cls(bool(values["digest_silence_quiet_days"]))


@dataclass
class EnvironmentReport:
    """What is known about one environment; every part is optional. ``backup_expected_after``:
    a verified backup made before it is stale (the backup freshness rule: the last scheduled
    backup time minus its grace; None for an environment without a backup schedule).
    ``data_problems``: insight data that is missing or stale, one line each."""

    environment: str
    backup_expected_after: datetime | None = None
    data_problems: list[str] = field(default_factory=list)
    backups: BackupHistory | None = None
    deployments: DeploymentSummary | None = None
    open_incidents: list[OpenIncident] = field(default_factory=list)
    checks: list[ConditionResult] = field(default_factory=list)
    uptime: list[ComponentUptime] = field(default_factory=list)
    snapshot: DatabaseSnapshot | None = None
    snapshot_before: DatabaseSnapshot | None = None


@dataclass
class WeeklyReport:
    markdown: str
    slack: SlackMessage


def _slack(text: str, link: str | None = None, link_text: str = RUN_LINK_TEXT) -> SlackMessage:
    return slack_message([text], link, link_text)


def _one_line(text: str | None, limit: int = 200) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def _date(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d")


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def _percent(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f} %"


# --- digest -------------------------------------------------------------------------------------


def ranked_backup_items(backups: BackupHistory, now: datetime, expected_after: datetime | None = None
                        ) -> list[tuple[int, str]]:
    """``backup_items`` with each item's urgency (lower is more urgent)."""
    items = []
    day = backups.window(1)
    if day and day.failed:
        items.append((BACKUP, f":x: {_plural(day.failed, 'backup run')} failed in the last 24 h: "
                              f"{_one_line(day.last_failure_reason)}"))
    age = backups.newest_verified_age_seconds
    if expected_after is not None:
        if age is None:
            items.append((BACKUP, ":hourglass: there is no verified backup at all"))
        else:
            created = parse_utc(backups.generated_at) - timedelta(seconds=age)
            if created < expected_after:
                items.append((BACKUP, f":hourglass: the newest verified backup `{backups.newest_verified_id}` is "
                                      f"{human_duration((now - created).total_seconds())} old; one was expected "
                                      f"after {utc_iso(expected_after)}"))
    if backups.last_drill_success is False and backups.last_drill_at:
        drill_at = parse_utc(backups.last_drill_at)
        if now - drill_at <= timedelta(days=1):
            items.append((CHECK, ":x: the restore drill failed: "
                                 f"{_one_line(backups.last_drill_reason) or 'no reason recorded'}"))
    if backups.newest_id and backups.newest_is_verified is False:
        items.append((UNVERIFIED, f":warning: the newest backup `{backups.newest_id}` is not verified"))
    return items


def backup_items(backups: BackupHistory, now: datetime, expected_after: datetime | None = None) -> list[str]:
    """Failed backups in the last day, a missing fresh verified backup (when one is expected:
    made at or after ``expected_after``), a drill that failed in the last day, a newest backup
    that is not verified."""
    return [text for _, text in ranked_backup_items(backups, now, expected_after)]


def ranked_items(report: EnvironmentReport, now: datetime) -> list[tuple[int, str]]:
    """Every line of one target's digest with its urgency (lower is more urgent), in report order."""
    items = [(DATA, f":grey_question: {_one_line(problem)}") for problem in report.data_problems]
    if report.backups:
        items += ranked_backup_items(report.backups, now, report.backup_expected_after)
    for incident in report.open_incidents:
        parts = "; ".join(f"{name}: {_one_line(reason, 120)}" if reason else name
                          for name, reason in sorted(incident.components.items()))
        items.append((INCIDENT, f":rotating_light: incident open for "
                                f"{human_duration(now.timestamp() - incident.started_at)}: {parts}"))
    for check in report.checks:
        if not check.passed and check.severity == ERROR:
            items.append((CHECK, f":warning: database check *{check.name}*: {_one_line(check.description)}"))
    if report.deployments:
        for failure in report.deployments.failures:
            outcome = _OUTCOME_TEXT.get(failure["outcome"], "failed")
            reason = _one_line(failure.get("reason"), 150)
            items.append((BACKUP, f":x: deployment of `{failure['version']}` {outcome}"
                                  + (f": {reason}" if reason else "")))
    return items


def attention_items(report: EnvironmentReport, now: datetime) -> list[str]:
    """Every line of one environment's digest; empty when nothing needs attention."""
    return [text for _, text in ranked_items(report, now)]


def by_urgency(reports: Sequence[EnvironmentReport], now: datetime
               ) -> tuple[list[tuple[EnvironmentReport, list[str]]], list[EnvironmentReport]]:
    """The targets needing attention, most urgent first (their most urgent item, then how many
    items, then the name), each with its items most urgent first; and the quiet ones, in order."""
    attention, quiet = [], []
    for report in reports:
        items = ranked_items(report, now)
        if items:
            ordered = sorted(items, key=lambda item: item[0])
            attention.append((ordered[0][0], -len(items), report.environment, report, [text for _, text in ordered]))
        else:
            quiet.append(report)
    attention.sort(key=lambda entry: entry[:3])
    return [(entry[3], entry[4]) for entry in attention], quiet


def _names(names: Sequence[str], shown: int = NAMES_SHOWN) -> str:
    if len(names) <= shown:
        return ", ".join(names)
    return ", ".join(names[:shown]) + f" and {len(names) - shown} more"


def quiet_summary(quiet: Sequence[EnvironmentReport]) -> str:
    """The quiet targets in one line: how many are backed up on schedule (the newest backup
    verified), and how many have no backup schedule or no backup history."""
    scheduled = sum(1 for report in quiet if report.backup_expected_after is not None and report.backups)
    parts = []
    if scheduled:
        parts.append(f"{_plural(scheduled, 'target')} backed up on schedule, all verified")
    unscheduled = [report for report in quiet if report.backup_expected_after is None and report.backups
                   and report.backups.newest_id]
    if unscheduled:
        parts.append(f"{_plural(len(unscheduled), 'target')} without a backup schedule, newest backups verified")
    rest = len(quiet) - scheduled - len(unscheduled)
    if rest:
        parts.append(f"{_plural(rest, 'target')} without a schedule or a backup, nothing failed")
    return "; ".join(parts)


def render_digest(reports: Sequence[EnvironmentReport], now: datetime, *, redactor: Redactor | None = None,
                  silence_quiet_days: bool = False, link: str | None = None) -> SlackMessage | None:
    """The morning digest: what needs attention per target; one line on a good day, or None
    when ``silence_quiet_days``. Up to ``LIST_EVERY_TARGET_UP_TO`` targets each get a line; with
    more, the quiet ones are one line and the others are listed most urgent first, at most
    ``SLACK_LISTED_TARGETS`` of them (the rest named, the full list in the stored report at ``link``)."""
    redactor = redactor or Redactor.from_environ()
    attention, quiet = by_urgency(reports, now)
    total = sum(len(items) for _, items in attention)
    every = len(reports) <= LIST_EVERY_TARGET_UP_TO
    names = _names([report.environment for report in reports]) or "no environments"
    if not total:
        if silence_quiet_days:
            return None
        scope = names if every else f"{len(reports)} targets: {quiet_summary(quiet)}"
        return _slack(redactor(f":white_check_mark: Ops digest for {_date(now)}: nothing needs attention ({scope})."))
    noun = "item needs" if total == 1 else "items need"
    lines = [f":sunrise: *Ops digest for {_date(now)}*: {total} {noun} attention"]
    if every:
        for report in reports:
            items = next((found for candidate, found in attention if candidate is report), [])
            if items:
                lines.append(f"*{report.environment}*")
                lines.extend(f"• {item}" for item in items)
            else:
                lines.append(f"*{report.environment}*: nothing needs attention")
        return _slack(redactor("\n".join(lines)))
    lines[0] += f" in {_plural(len(attention), 'target')} of {len(reports)}"
    if quiet:
        lines.append(f":white_check_mark: {quiet_summary(quiet)}")
    for report, items in attention[:SLACK_LISTED_TARGETS]:
        lines.append(f"*{report.environment}*")
        lines.extend(f"• {item}" for item in items)
    rest = [report.environment for report, _ in attention[SLACK_LISTED_TARGETS:]]
    if rest:
        lines.append(f"…and {_plural(len(rest), 'more target')} needing attention: {_names(rest)}")
    return sectioned_message([redactor(line) for line in lines], link if rest else None, "Full digest in Dagster")


def _markdown_item(item: str) -> str:
    """A digest line for Markdown: Slack's *bold* becomes **bold**; emoji codes stay as text."""
    words = item.split(" ", 1)
    text = words[1] if len(words) == 2 and words[0].startswith(":") and words[0].endswith(":") else item
    return text.replace("*", "**")


def render_digest_markdown(reports: Sequence[EnvironmentReport], now: datetime, *,
                           redactor: Redactor | None = None) -> str:
    """The same digest as a Markdown document (what ``ops_report`` keeps on a digest day), every
    target needing attention listed; beyond ``LIST_EVERY_TARGET_UP_TO`` targets the quiet ones
    are one line naming them."""
    redactor = redactor or Redactor.from_environ()
    lines = [f"# Morning digest, {_date(now)}", ""]
    attention, quiet = by_urgency(reports, now)
    if len(reports) <= LIST_EVERY_TARGET_UP_TO:
        for report in reports:
            items = attention_items(report, now)
            lines += [f"## {report.environment}", ""]
            lines += [f"- {_markdown_item(item)}" for item in items] or ["Nothing needs attention."]
            lines.append("")
    else:
        for report, items in attention:
            lines += [f"## {report.environment}", ""]
            lines += [f"- {_markdown_item(item)}" for item in items]
            lines.append("")
        if quiet:
            lines += ["## Nothing needs attention", "", f"{quiet_summary(quiet)}: "
                      + ", ".join(report.environment for report in quiet) + ".", ""]
    if not reports:
        lines.append("No environments are configured.")
    return redactor("\n".join(lines).rstrip() + "\n")


# --- weekly report ------------------------------------------------------------------------------


def _cell(text: object) -> str:
    return _one_line(str(text), CELL_CHARS).replace("|", "\\|").replace("`", "'")


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return lines


def _seconds(value: float | None) -> str:
    return "–" if value is None else human_duration(value)


def _latency(value: float | None) -> str:
    return "–" if value is None else f"{value * 1000:.0f} ms"


def uptime_section(report: EnvironmentReport, window: str, now: datetime) -> list[str]:
    """Availability per component over 24 h / 7 d / 30 d, and the window's outages and latency."""
    lines = ["### Uptime and incidents", ""]
    by_component: dict[str, dict[str, ComponentUptime]] = {}
    for item in report.uptime:
        by_component.setdefault(item.component, {})[item.window] = item
    if not by_component:
        lines.append("No health-check history.")
    else:
        labels = sorted({item.window for item in report.uptime}, key=lambda l: next(
            u.window_seconds for u in report.uptime if u.window == l))
        rows = []
        for component, windows in sorted(by_component.items()):
            main = windows.get(window) or next(iter(windows.values()))
            rows.append([component, *(windows[label].availability_percent if label in windows else "–"
                                      for label in labels),
                         main.incidents, _seconds(main.longest_downtime_seconds or None), _seconds(main.down_seconds or None),
                         _seconds(main.mean_time_to_recover_seconds), _latency(main.latency_p50),
                         _latency(main.latency_p95), f"{100 * main.coverage:.0f} %"])
        lines += _table(["component", *labels, f"incidents ({window})", "longest down", "total down",
                         "time to recover", "p50", "p95", "observed"], rows)
    for incident in report.open_incidents:
        names = ", ".join(sorted(incident.components))
        lines += ["", f"Open incident: {names}, for {human_duration(now.timestamp() - incident.started_at)}."]
    return lines + [""]


def deployments_section(summary: DeploymentSummary | None) -> list[str]:
    lines = ["### Deployments", ""]
    if summary is None:
        return lines + ["No deployment history.", ""]
    if not summary.verifications:
        return lines + [f"No deployments verified in {summary.days:g} days.", ""]
    lines.append(f"{_plural(summary.verifications, 'deployment')} verified: {summary.succeeded} succeeded, "
                 f"{summary.failed} failed ({summary.rolled_back} rolled back, "
                 f"{_plural(summary.rollback_failed, 'rollback')} failed).")
    for failure in summary.failures:
        outcome = _OUTCOME_TEXT.get(failure["outcome"], "failed")
        lines.append(f"- {failure['at'][:16].replace('T', ' ')}: `{_cell(failure['version'])}` {outcome}: "
                     f"{_one_line(failure.get('reason')) or 'no reason recorded'}")
    return lines + [""]


def backups_section(backups: BackupHistory | None) -> list[str]:
    lines = ["### Backups and drills", ""]
    if backups is None:
        return lines + ["No backup history.", ""]
    windows = [w for w in backups.windows if w.days > 1] or backups.windows
    lines += _table(["", *(f"{w.days} d" for w in windows)],
                    [["made", *(w.made for w in windows)], ["verified", *(w.verified for w in windows)],
                     ["failed runs", *(w.failed for w in windows)],
                     ["newest size", *(human_bytes(w.newest_bytes) if w.newest_bytes is not None else "–"
                                       for w in windows)],
                     ["size change", *(_percent(w.size_change_percent) for w in windows)],
                     ["mean duration", *(_seconds(w.mean_duration_seconds) for w in windows)],
                     ["duration change", *(_percent(w.duration_change_percent) for w in windows)]])
    lines.append("")
    if backups.newest_verified_id:
        lines.append(f"Newest verified backup: `{backups.newest_verified_id}`, "
                     f"{human_duration(backups.newest_verified_age_seconds or 0)} old.")
    else:
        lines.append("**No verified backup.**")
    lines.append(f"Held: {human_bytes(backups.local_bytes)} locally ({backups.local_count} backups), "
                 f"{human_bytes(backups.s3_bytes)} in S3 ({backups.s3_count} backups).")
    if backups.last_successful_drill_at:
        lines.append(f"Last successful restore drill: {backups.last_successful_drill_at} "
                     f"(backup `{backups.last_successful_drill_backup or '?'}`).")
    else:
        lines.append("**No successful restore drill on record.**")
    if backups.last_drill_success is False:
        lines.append(f"The latest drill ({backups.last_drill_at}) failed: "
                     f"{_one_line(backups.last_drill_reason) or 'no reason recorded'}.")
    return lines + [""]


def _growth(now: int | None, before: int | None) -> str:
    if now is None or not before:
        return "–"
    return f"{human_bytes(now - before)} ({100.0 * (now - before) / before:+.1f} %)" if now >= before else \
        f"-{human_bytes(before - now)} ({100.0 * (now - before) / before:+.1f} %)"


def database_section(report: EnvironmentReport) -> list[str]:
    """Size and growth, biggest tables and their growth, week activity, failing checks."""
    lines = ["### Database", ""]
    snapshot, before = report.snapshot, report.snapshot_before
    if snapshot is None:
        return lines + ["No database snapshot.", ""]
    growth = f", {_growth(snapshot.size_bytes, before.size_bytes)} since {before.collected:%Y-%m-%dT%H:%M:%SZ}" if before else ""
    lines.append(f"`{snapshot.database}` (PostgreSQL {snapshot.server_version}): "
                 f"{human_bytes(snapshot.size_bytes)}{growth}; {snapshot.table_count:,} tables.")
    activity, _ = activity_since(before, snapshot) if before else (None, None)
    if activity:
        ratio = activity.cache_hit_ratio
        lines.append(f"Over the period: cache hit ratio {'n/a' if ratio is None else f'{100 * ratio:.2f} %'}, "
                     f"{activity.deadlocks} deadlocks, {human_bytes(activity.temp_bytes)} of temporary files"
                     + (" (statistics were reset in between)" if activity.stats_reset else "") + ".")
    earlier = {t.qualified_name: t for t in before.tables} if before else {}
    rows = [[table.qualified_name,
             human_bytes(table.total_bytes) if table.total_bytes is not None else "locked",
             _growth(table.total_bytes, earlier[table.qualified_name].total_bytes)
             if table.qualified_name in earlier else ("new in the top list" if before else "–"),
             "–" if table.estimated_rows is None else f"{table.estimated_rows:,}"]
            for table in snapshot.tables[:BIGGEST_TABLES]]
    if rows:
        lines += ["", *_table(["table", "size", "growth", "rows (est.)"], rows)]
    failing = [check for check in report.checks if not check.passed]
    lines.append("")
    if failing:
        lines += [f"- **{check.name}** ({check.severity}): {_one_line(check.description)}" for check in failing]
    elif report.checks:
        lines.append("All database checks pass.")
    lines += [f"- note: {_one_line(note)}" for note in snapshot.notes if not note.startswith("first snapshot")]
    return lines + [""]


def statements_section(snapshot: DatabaseSnapshot | None, redactor: Redactor) -> list[str]:
    """The slowest statements, each text masked and redacted again (a snapshot stored by an older
    version may hold more) before it is cut to a table cell."""
    lines = ["### Slowest statements", ""]
    if snapshot is None:
        return lines + ["No database snapshot.", ""]
    if not snapshot.statements:
        return lines + [_one_line(snapshot.statements_note) or "No statements recorded.", ""]
    lines.append("By total execution time since pg_stat_statements was last reset:")
    lines.append("")
    rows = [[human_duration(s.total_ms / 1000), f"{s.calls:,}", f"{s.mean_ms:.1f} ms",
             f"`{_cell(sanitize_statement(s.query, CELL_CHARS, redactor))}`"]
            for s in snapshot.statements[:SLOWEST_STATEMENTS]]
    lines += ["| total | calls | mean | statement |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def summary_line(report: EnvironmentReport, window: str) -> str:
    """One Slack line for an environment's week."""
    parts = []
    uptime = [u for u in report.uptime if u.window == window and u.availability is not None]
    if uptime:
        worst = min(uptime, key=lambda u: u.availability)
        incidents = sum(u.incidents for u in uptime)
        parts.append(f"lowest availability {worst.availability_percent} ({worst.component}), "
                     f"{_plural(incidents, 'incident')}")
    if report.open_incidents:
        parts.append(f"{_plural(len(report.open_incidents), 'incident')} still open")
    if report.deployments:
        d = report.deployments
        parts.append(f"{_plural(d.verifications, 'deployment')} ({d.failed} failed, {d.rolled_back} rolled back)")
    if report.backups and report.backups.window(7):
        w = report.backups.window(7)
        parts.append(f"backups {w.verified}/{w.made} verified, {_plural(w.failed, 'failed run')}")
        if report.backups.last_successful_drill_at:
            parts.append(f"last good drill {report.backups.last_successful_drill_at[:10]}")
        else:
            parts.append("no good drill on record")
    if report.snapshot:
        growth = ""
        if report.snapshot_before and report.snapshot_before.size_bytes:
            change = 100.0 * (report.snapshot.size_bytes - report.snapshot_before.size_bytes) / report.snapshot_before.size_bytes
            growth = f" ({change:+.1f} %)"
        parts.append(f"database {human_bytes(report.snapshot.size_bytes)}{growth}")
    failing = [c.name for c in report.checks if not c.passed]
    if failing:
        parts.append("failing checks: " + ", ".join(failing))
    if report.data_problems:
        parts.append(_plural(len(report.data_problems), "data problem"))
    return f"*{report.environment}*: " + ("; ".join(parts) if parts else "no data")


def weekly_needs_attention(report: EnvironmentReport, now: datetime) -> bool:
    """A target the weekly report shows in full: something needs attention now, or a backup run
    failed, a check failed or it was down, during the week."""
    week = report.backups.window(7) if report.backups else None
    return bool(attention_items(report, now) or (week and week.failed)
                or any(not check.passed for check in report.checks)
                or any(item.incidents for item in report.uptime if item.window == "7d"))


def quiet_table(reports: Sequence[EnvironmentReport]) -> list[str]:
    """The quiet targets of a fleet, one row each."""
    rows = []
    for report in reports:
        week = report.backups.window(7) if report.backups else None
        rows.append([report.environment,
                     f"{week.verified}/{week.made}" if week else "–",
                     human_duration(report.backups.newest_verified_age_seconds)
                     if report.backups and report.backups.newest_verified_age_seconds is not None else "–",
                     (report.backups.last_successful_drill_at or "none")[:10] if report.backups else "–",
                     human_bytes(report.snapshot.size_bytes) if report.snapshot else "–",
                     _lowest_availability(report.uptime)])
    return _table(["target", "backups verified/made (7 d)", "newest verified", "last good drill",
                   "database", "available (7 d)"], rows)


def _lowest_availability(uptime: Sequence[ComponentUptime], window: str = "7d") -> str:
    observed = [item for item in uptime if item.window == window and item.availability is not None]
    return min(observed, key=lambda item: item.availability).availability_percent if observed else "–"


def render_weekly_report(reports: Sequence[EnvironmentReport], now: datetime, *, redactor: Redactor | None = None,
                         days: int = 7, link: str | None = None) -> WeeklyReport:
    """The weekly operations report as Markdown, and a Slack summary of it (ending with ``link``
    to the full report, when given). Beyond ``LIST_EVERY_TARGET_UP_TO`` targets, the quiet ones
    are a table in the Markdown and one line in Slack; the others have their sections and
    lines, most urgent first."""
    redactor = redactor or Redactor.from_environ()
    window = f"{days}d"
    period = f"{_date(now - timedelta(days=days))} – {_date(now)}"
    lines = [f"# Weekly operations report, {period}", ""]
    if len(reports) <= LIST_EVERY_TARGET_UP_TO:
        shown, quiet = list(reports), []
    else:
        attention, rest = by_urgency(reports, now)
        ordered = [report for report, _ in attention] + rest
        shown = [report for report in ordered if weekly_needs_attention(report, now)]
        shown_ids = {id(report) for report in shown}
        quiet = [report for report in reports if id(report) not in shown_ids]
    for report in shown:
        lines += [f"## {report.environment}", ""]
        if report.data_problems:
            lines += ["> **Insight data missing or stale:**", ">"]
            lines += [f"> - {_one_line(problem)}" for problem in report.data_problems] + [""]
        lines += uptime_section(report, window, now)
        lines += deployments_section(report.deployments)
        lines += backups_section(report.backups)
        lines += database_section(report)
        lines += statements_section(report.snapshot, redactor)
    if quiet:
        lines += [f"## {_plural(len(quiet), 'quiet target')}", "", quiet_summary(quiet) + ".", ""]
        lines += quiet_table(quiet) + [""]
    if not reports:
        lines.append("No environments are configured.")
    summary = [f":bar_chart: *Weekly operations report, {period}*"]
    if quiet:
        summary.append(f":white_check_mark: {quiet_summary(quiet)}")
    summary += [summary_line(report, window) for report in shown[:SLACK_LISTED_TARGETS]]
    rest = [report.environment for report in shown[SLACK_LISTED_TARGETS:]]
    if rest:
        summary.append(f"…and {_plural(len(rest), 'more target')} to look at: {_names(rest)}")
    markdown = redactor("\n".join(lines).rstrip() + "\n")
    if len(reports) <= LIST_EVERY_TARGET_UP_TO:
        return WeeklyReport(markdown=markdown, slack=_slack(redactor("\n".join(summary)), link,
                                                            "Full report in Dagster"))
    return WeeklyReport(markdown=markdown, slack=sectioned_message([redactor(line) for line in summary], link,
                                                                   "Full report in Dagster"))

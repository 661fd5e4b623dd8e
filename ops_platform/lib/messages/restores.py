"""Slack messages for restores and restore drills."""

from __future__ import annotations

from ops_platform.lib.formatting import human_duration
from ops_platform.lib.messages.common import slack_message
from ops_platform.lib.restore.plan import RestoreState
from ops_platform.lib.slack import SlackMessage

STEP_NAMES = {"resolve": "resolve", "fetch": "fetch and check the backup", "safety_backup": "safety backup",
              "scratch": "prepare the scratch database", "pg_restore": "pg_restore", "migrate": "migrations",
              "verify": "verification", "swap": "swap"}


def _origin(state: RestoreState) -> str:
    if state.source_environment != state.environment:
        return f" (from *{state.source_environment}*'s backup)"
    return ""


def restore_started(state: RestoreState, run_url: str | None = None) -> SlackMessage:
    how = "in place (the role cannot create databases)" if state.in_place else "into a scratch copy, then swap"
    lines = [f":hourglass_flowing_sand: *Restore started* ({state.environment}): `{state.backup_id}`{_origin(state)} "
             f"into {state.describe_target()}, {how}"]
    lines += [f":warning: {warning}" for warning in state.warnings]
    return slack_message(lines, run_url)


def restore_succeeded(state: RestoreState, run_url: str | None = None) -> SlackMessage:
    steps = ", ".join(f"{STEP_NAMES.get(step, step)} {human_duration(seconds)}" for step, seconds in state.seconds.items())
    lines = [f":white_check_mark: *Restore succeeded* ({state.environment}): {state.describe_target()} now holds "
             f"`{state.backup_id}`{_origin(state)}",
             f"• verified: {state.tables_verified} tables, {state.rows_verified} rows match the manifest",
             f"• steps: {steps}"]
    if state.older_than_newest:
        lines.insert(1, f":rotating_light: *{state.older_than_newest}*")
    if state.safety_backup_id:
        lines.append(f"• safety backup: `{state.safety_backup_id}`")
    if state.kept_database:
        lines.append(f"• the previous database is kept as `{state.kept_database}`")
    lines += [f":warning: {warning}" for warning in state.warnings]
    return slack_message(lines, run_url)


def restore_failed(environment: str, step: str, error: str, left_as_it_was: str,
                   backup_id: str | None = None, run_url: str | None = None) -> SlackMessage:
    lines = [f":x: *Restore failed* ({environment}) at {STEP_NAMES.get(step, step)}",
             f"• {error.strip()[:1500]}", f"• {left_as_it_was}"]
    if backup_id:
        lines.insert(1, f"• backup: `{backup_id}`")
    return slack_message(lines, run_url)


def drill_failed(environment: str, error: str, backup_id: str | None, run_url: str | None = None,
                 step: str | None = None) -> SlackMessage:
    what = f"`{backup_id}`" if backup_id else "the latest verified backup"
    outcome = ("restored, but another copy of it is not intact" if step == "copies"
               else "did not restore cleanly")
    return slack_message([f":rotating_light: *Restore drill failed* ({environment}): {what} {outcome}",
                          f"• {error.strip()[:1500]}"], run_url)


def swap_recovered(environment: str, action: str, message: str, stopped_run: str | None,
                   run_url: str | None = None) -> SlackMessage:
    """A swap that a stopped restore left half done, finished or undone by the next run (or not)."""
    icon = ":rotating_light:" if action == "unclear" else ":warning:"
    title = {"finished": "finished", "undone": "undone"}.get(action, "needs a person")
    lines = [f"{icon} *Interrupted restore swap {title}* ({environment})", f"• {message}"]
    if stopped_run:
        lines.append(f"• the restore that stopped: run `{stopped_run}`")
    return slack_message(lines, run_url)

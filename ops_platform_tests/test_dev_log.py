"""What make dev shows of its processes' output (``lib/dev_log.py``), on lines as Dagster 1.13 prints
them (colors included); the real log is checked end to end in test_first_hour_ui.py."""

from __future__ import annotations

from ops_platform.lib.dev_log import DevLogFilter

NEEDS_SERVICES = False
RUN = "a4d586f2-152d-477a-866b-f2eec5e545a8"


def _line(time: str, logger: str, level: str, message: str) -> str:
    return f"\x1b[32m2026-12-03 {time} +0000\x1b[0m - {logger} - \x1b[34m{level}\x1b[0m - {message}\n"


def shown(lines: list[str]) -> list[str]:
    log_filter = DevLogFilter()
    return [kept for line in lines if (kept := log_filter.feed(line)) is not None]


def test_routine_daemon_and_run_lines_are_dropped_and_each_run_is_one_line_started_and_one_finished():
    lines = [
        _line("11:33:04", "dagster.daemon", "INFO", "Instance is configured with the following daemons: ['AssetDaemon']"),
        _line("11:33:04", "dagster.daemon.EventLogConsumerDaemon", "WARNING",
              "No cursor for event type DagsterEventType.RUN_FAILURE, ignoring older events"),
        _line("11:33:40", "dagster.daemon.SensorDaemon", "INFO", "Checking for new runs for sensor: dead_run_sensor"),
        _line("11:33:40", "dagster.daemon.AssetDaemon", "INFO", "Prefetching asset records for 2 records."),
        _line("11:35:18", "dagster", "DEBUG", f'health_check_job - {RUN} - 18144 - RUN_START - Started execution '
                                              'of run for "health_check_job".'),
        _line("11:35:18", "dagster", "DEBUG", f'health_check_job - {RUN} - 18144 - health_checks - '
                                              'STEP_WORKER_STARTING - Launching subprocess for "health_checks".'),
        _line("11:35:27", "dagster", "INFO", f"health_check_job - {RUN} - health_checks - Slack is not configured; "
                                             "message: backup done"),
        "size 44.9 KB, a second line of the message\n",
        _line("11:35:27", "dagster", "WARNING", f"health_check_job - {RUN} - health_checks - development postgres: "
                                                "degraded: slow"),
        _line("11:35:29", "dagster", "DEBUG", f'health_check_job - {RUN} - 18144 - RUN_SUCCESS - Finished execution '
                                              'of run for "health_check_job".'),
    ]
    assert shown(lines) == [
        "2026-12-03 11:35:18 +0000 - run a4d586f2 health_check_job started\n",
        lines[8],
        "2026-12-03 11:35:29 +0000 - run a4d586f2 health_check_job succeeded in 11.0s\n",
    ]


def test_errors_keep_their_traceback_and_a_failed_run_says_why():
    lines = [
        _line("12:00:00", "dagster.daemon.SensorDaemon", "ERROR", "Sensor dead_run_sensor failed"),
        "Traceback (most recent call last):\n",
        '  File "x.py", line 1, in <module>\n',
        _line("12:00:01", "dagster.daemon.SensorDaemon", "INFO", "Sensor health_alert_sensor skipped: read 0"),
        "  a continuation of that INFO line\n",
        _line("12:00:02", "dagster", "ERROR", f'backup_job - {RUN} - 999 - RUN_FAILURE - Execution of run for '
                                              '"backup_job" failed. Steps failed: [\'database_backup\'].'),
        "/usr/lib/python3/dist-packages/x.py:3: UserWarning: something\n",
        "  warnings.warn(\n",
    ]
    assert shown(lines) == [
        lines[0], lines[1], lines[2],
        "2026-12-03 12:00:02 +0000 - run a4d586f2 backup_job failed: Execution of run for \"backup_job\" failed. "
        "Steps failed: ['database_backup'].\n",
        lines[6], lines[7],
    ]


def test_a_step_that_failed_on_purpose_is_its_one_line_without_dagsters_frames():
    """A refused restore (dg.Failure with its description): the reason, not 50 lines of Dagster's
    own frames; an unexpected error keeps its traceback (the test above)."""
    lines = [
        _line("12:00:00", "dagster", "ERROR", f'restore_job - {RUN} - 999 - resolve_restore - STEP_FAILURE - '
                                              'Execution of step "resolve_restore" failed.'),
        "\n",
        "dagster._core.definitions.events.Failure: restore of development was refused: replacing ... needs "
        "confirm: 'x'; nothing was touched\n",
        "\n",
        "Stack Trace:\n",
        '  File "/venv/dagster/_core/execution/plan/execute_plan.py", line 243, in dagster_event_sequence_for_step\n',
        "    yield from check.generator(step_events)\n",
        '  File "/work/ops_platform/defs/restores/jobs.py", line 160, in restore_step\n',
        _line("12:00:01", "dagster", "ERROR", f'backup_job - {RUN} - 999 - database_backup - STEP_FAILURE - '
                                              'Execution of step "database_backup" failed.'),
        "ValueError: boom\n",
        "Stack Trace:\n",
        '  File "x.py", line 1, in <module>\n',
    ]
    assert shown(lines) == lines[:4] + lines[8:]


def test_what_is_not_a_dagster_log_line_is_shown():
    assert shown(["ops_platform dev: the UI is at http://127.0.0.1:3000\n"]) == [
        "ops_platform dev: the UI is at http://127.0.0.1:3000\n"]

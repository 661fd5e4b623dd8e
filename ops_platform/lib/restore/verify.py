"""Step 6: check the restored database against the backup's manifest, before any swap.

- every table of ``table_row_counts`` exists and ``SELECT count(*) FROM ONLY`` it equals the
  manifest (inheritance parents do not count their children; partitioned tables' rows live in
  their leaf partitions, which is where pg_dump COPYs them; a table with no columns counts too);
- every sequence has the value and ``is_called`` the source had at dump time
  (``sequence_values``, read from the dump's own ``setval`` lines);
- optional operator SQL checks, each of which must return a single ``true``.

The copy is compared with the source, not with rules the source itself may break: a sequence
behind the column it feeds (explicit values inserted into an identity column) is behind in the
source too, since its value matches; it is a note, never a failure, and ``fix_sequences`` moves it
forward on request. (A manifest from before sequences were recorded has no values to compare:
then only the note is given.)

Manifest keys come from ``ops_platform.lib.verify.count_copy_rows``, which reads the COPY line
(``COPY public."Odd.Name" (...) FROM stdin;``) and drops every double quote. Relations are mapped
back by rebuilding that COPY line from ``format('%I.%I', nspname, relname)`` and running it
through the same function, so both sides transform a name the same way, whatever it contains.
"""

from __future__ import annotations

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from ops_platform.lib.artifacts import Manifest
from ops_platform.lib.formatting import describe
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore.databases import connect, redactor_for
from ops_platform.lib.restore.errors import one_line, step_error
from ops_platform.lib.verify import count_copy_rows

SHOWN_PER_KIND = 5


@dataclass
class RowCountMismatch:
    table: str
    expected: int
    actual: int

    def __str__(self) -> str:
        return f"{self.table} has {self.actual} rows, the manifest says {self.expected}"


@dataclass
class SequenceState:
    """A sequence that feeds ``table.column``; ``next_value`` is what nextval() would return."""

    sequence: str
    table: str
    column: str
    next_value: int
    column_limit: int

    def __str__(self) -> str:
        return f"{self.sequence} would return {self.next_value} but {self.table}.{self.column} reaches {self.column_limit}"


@dataclass
class CheckResult:
    number: int
    statement: str
    passed: bool
    detail: str

    def __str__(self) -> str:
        return f"check #{self.number} ({one_line(self.statement, 80)}) {self.detail}"


def _listed(label: str, items: list) -> str:
    shown = "; ".join(str(item) for item in items[:SHOWN_PER_KIND])
    more = f" (+{len(items) - SHOWN_PER_KIND} more)" if len(items) > SHOWN_PER_KIND else ""
    return f"{len(items)} {label}: {shown}{more}"


@dataclass
class VerificationReport:
    """What verification found; ``ok`` only when nothing is missing or different from the
    source. Each part (tables and rows, sequences, SQL checks) has its own verdict and line."""

    database: str
    tables_checked: int = 0
    rows_verified: int = 0
    missing_tables: list[str] = field(default_factory=list)
    row_mismatches: list[RowCountMismatch] = field(default_factory=list)
    ambiguous_tables: list[str] = field(default_factory=list)
    sequences_checked: int = 0
    sequences_compared: int = 0
    sequence_mismatches: list[str] = field(default_factory=list)
    sequences_behind: list[SequenceState] = field(default_factory=list)
    sequences_fixed: list[SequenceState] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [check for check in self.checks if not check.passed]

    @property
    def rows_ok(self) -> bool:
        return not (self.missing_tables or self.row_mismatches)

    @property
    def sequences_ok(self) -> bool:
        return not self.sequence_mismatches

    @property
    def ok(self) -> bool:
        return self.rows_ok and self.sequences_ok and not self.failed_checks

    def rows_summary(self) -> str:
        if self.rows_ok:
            return f"{self.tables_checked} tables, {self.rows_verified} rows as in the source"
        return " | ".join(_listed(label, items) for label, items in (
            ("missing table(s)", self.missing_tables), ("row count mismatch(es)", self.row_mismatches)) if items)

    def sequences_summary(self) -> str:
        if not self.sequences_ok:
            return _listed("sequence(s) differ from the source", self.sequence_mismatches)
        compared = (f"{self.sequences_compared} sequences as in the source" if self.sequences_compared
                    else f"{self.sequences_checked} sequences (the manifest has no values to compare)")
        return compared + "".join(f"; {note}" for note in self.sequence_notes())

    def checks_summary(self) -> str:
        if self.failed_checks:
            return _listed("failed SQL check(s)", self.failed_checks)
        return f"{len(self.checks)} SQL checks passed" if self.checks else "no SQL checks configured"

    def sequence_notes(self) -> list[str]:
        """What an operator should know but that is no failure: sequences behind their column
        (as in the source), and those moved forward on request."""
        notes = []
        if self.sequences_behind:
            notes.append(_listed("sequence(s) behind their column, as in the source (fix_sequences moves them "
                                 "forward)", self.sequences_behind))
        if self.sequences_fixed:
            notes.append(_listed("sequence(s) moved forward", self.sequences_fixed))
        return notes

    def summary(self) -> str:
        """One line: what was verified, or every kind of failure with its first few cases."""
        if self.ok:
            return (f"verified {self.database}: {self.tables_checked} tables, {self.rows_verified} rows, "
                    f"{self.sequences_summary()}, {len(self.checks)} SQL checks")
        parts = [summary() for verdict, summary in ((self.rows_ok, self.rows_summary),
                                                    (self.sequences_ok, self.sequences_summary),
                                                    (not self.failed_checks, self.checks_summary)) if not verdict]
        return f"verification of {self.database} failed: " + " | ".join(parts)

    def raise_for_failure(self, redactor: Redactor | None = None) -> None:
        """Raise RestoreStepError("verify") with the one-line summary unless ``ok``."""
        if not self.ok:
            raise step_error("verify", self.summary(), redactor)


def manifest_key(qualified: str) -> str:
    """The ``table_row_counts`` key pg_dump's COPY line for ``qualified`` (as written by
    ``format('%I.%I')``) produces, through the same parser that wrote the manifest."""
    keys = list(count_copy_rows([f"COPY {qualified} (x) FROM stdin;\n".encode(), b"\\.\n"]))
    return keys[0] if keys else qualified


_TABLES = """
SELECT c.oid, format('%I.%I', n.nspname, c.relname), n.nspname, c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
"""


def map_manifest_tables(connection: psycopg.Connection, keys) -> tuple[dict[str, list[tuple]], list[str]]:
    """For each manifest key, the relations (schema, name, relkind, qualified) it may denote,
    and the keys that denote none."""
    by_key: dict[str, list[tuple]] = defaultdict(list)
    for _oid, qualified, schema, name, relkind in connection.execute(_TABLES):
        by_key[manifest_key(qualified)].append((schema, name, relkind, qualified))
    found, missing = {}, []
    for key in keys:
        if key in by_key:
            found[key] = by_key[key]
        else:
            missing.append(key)
    return found, missing


def _count(connection: psycopg.Connection, schema: str, name: str, relkind: str) -> int:
    only = sql.SQL("") if relkind == "p" else sql.SQL("ONLY ")
    statement = sql.SQL("SELECT count(*) FROM {}{}.{}").format(only, sql.Identifier(schema), sql.Identifier(name))
    return connection.execute(statement).fetchone()[0]


def count_rows(url: str, database: str, relations: list[tuple[str, str, str]], *, jobs: int = 2,
               statement_timeout: float = 3600) -> dict[tuple[str, str], int]:
    """Exact row counts (``FROM ONLY``) of ``relations`` (schema, name, relkind), on up to ``jobs``
    connections at once."""
    jobs = max(1, min(jobs, len(relations)))
    batches = [relations[index::jobs] for index in range(jobs)]

    def work(batch):
        with connect(url, database, statement_timeout=statement_timeout) as connection:
            return {(schema, name): _count(connection, schema, name, relkind) for schema, name, relkind in batch}

    counts: dict[tuple[str, str], int] = {}
    if not relations:
        return counts
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="verify-count") as pool:
        for result in pool.map(work, batches):
            counts.update(result)
    return counts


def check_row_counts(url: str, database: str, manifest: Manifest, report: VerificationReport, *,
                     jobs: int = 2, statement_timeout: float = 3600) -> None:
    """Fill ``report`` with missing tables and row-count mismatches against the manifest."""
    with connect(url, database) as connection:
        found, missing = map_manifest_tables(connection, manifest.table_row_counts)
    report.missing_tables = sorted(missing)
    relations = sorted({(schema, name, relkind) for candidates in found.values()
                        for schema, name, relkind, _ in candidates})
    counts = count_rows(url, database, relations, jobs=jobs, statement_timeout=statement_timeout)
    for key, candidates in sorted(found.items()):
        expected = manifest.table_row_counts[key]
        actual = [counts[(schema, name)] for schema, name, _, _ in candidates]
        report.tables_checked += 1
        if len(candidates) > 1:
            report.ambiguous_tables.append(f"{key} ({', '.join(c[3] for c in candidates)})")
        if expected in actual:
            report.rows_verified += expected
        else:
            report.row_mismatches.append(RowCountMismatch(candidates[0][3], expected, actual[0]))


_SEQUENCES = """
SELECT s.oid, format('%I.%I', sn.nspname, s.relname), tn.nspname, t.relname, format('%I.%I', tn.nspname, t.relname),
       a.attname, ps.seqincrement, sn.nspname, s.relname
FROM pg_depend d
JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_sequence ps ON ps.seqrelid = s.oid
JOIN pg_class t ON t.oid = d.refobjid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0 AND NOT a.attisdropped
ORDER BY 2
"""


_ALL_SEQUENCES = """
SELECT format('%I.%I', n.nspname, c.relname), n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


def compare_sequences(url: str, database: str, expected: dict[str, list], report: VerificationReport, *,
                      statement_timeout: float = 3600) -> None:
    """Every sequence the source had (``expected``: name -> [last_value, is_called]) has the
    same state here."""
    if not expected:
        return
    with connect(url, database, statement_timeout=statement_timeout) as connection:
        present = {name: (schema, relname) for name, schema, relname in connection.execute(_ALL_SEQUENCES)}
        for name, (value, called) in sorted(expected.items()):
            report.sequences_compared += 1
            if name not in present:
                report.sequence_mismatches.append(f"{name} is missing")
                continue
            actual = connection.execute(sql.SQL("SELECT last_value, is_called FROM {}.{}").format(
                *(sql.Identifier(part) for part in present[name]))).fetchone()
            if (actual[0], actual[1]) != (value, called):
                report.sequence_mismatches.append(f"{name} is at {actual[0]} (called: {actual[1]}), the source was "
                                                  f"at {value} (called: {called})")


def check_sequences(url: str, database: str, report: VerificationReport, *, fix: bool = False,
                    statement_timeout: float = 3600) -> None:
    """Note sequences whose next value is not past the largest (or, descending, smallest) value
    of the column they feed; with ``fix``, move them forward with setval() instead."""
    with connect(url, database, statement_timeout=statement_timeout) as connection:
        for oid, sequence, schema, table, qualified, column, increment, seq_schema, seq_name in \
                connection.execute(_SEQUENCES).fetchall():
            report.sequences_checked += 1
            last_value, is_called = connection.execute(sql.SQL("SELECT last_value, is_called FROM {}.{}").format(
                sql.Identifier(seq_schema), sql.Identifier(seq_name))).fetchone()
            aggregate = sql.SQL("max" if increment > 0 else "min")
            limit = connection.execute(sql.SQL("SELECT {}({}) FROM {}.{}").format(
                aggregate, sql.Identifier(column), sql.Identifier(schema), sql.Identifier(table))).fetchone()[0]
            if limit is None:
                continue
            next_value = last_value + increment if is_called else last_value
            behind = next_value <= limit if increment > 0 else next_value >= limit
            if not behind:
                continue
            state = SequenceState(sequence, qualified, column, next_value, int(limit))
            if fix:
                connection.execute("SELECT setval(%s::oid::regclass, %s, true)", (oid, limit))
                report.sequences_fixed.append(state)
            else:
                report.sequences_behind.append(state)


def split_sql(text: str) -> list[str]:
    """Statements of an SQL file separated by ``;``, respecting quotes, dollar quotes and
    comments. Statements holding only comments are dropped."""
    statements, current, index, length = [], [], 0, len(text)
    meaningful = False
    while index < length:
        char = text[index]
        if text.startswith("--", index):
            end = text.find("\n", index)
            end = length if end < 0 else end
            current.append(text[index:end])
            index = end
            continue
        if text.startswith("/*", index):
            end = text.find("*/", index + 2)
            end = length if end < 0 else end + 2
            current.append(text[index:end])
            index = end
            continue
        if char in ("'", '"'):
            end = index + 1
            while end < length:
                if text[end] == char:
                    if text[end + 1:end + 2] == char:
                        end += 2
                        continue
                    break
                end += 1
            current.append(text[index:end + 1])
            meaningful = True
            index = end + 1
            continue
        if char == "$":
            tag_end = text.find("$", index + 1)
            tag = text[index:tag_end + 1] if tag_end > 0 else ""
            if tag and (tag == "$$" or tag[1:-1].replace("_", "a").isalnum() and not tag[1].isdigit()):
                end = text.find(tag, tag_end + 1)
                end = length if end < 0 else end + len(tag)
                current.append(text[index:end])
                meaningful = True
                index = end
                continue
        if char == ";":
            if meaningful:
                statements.append("".join(current).strip())
            current, meaningful = [], False
            index += 1
            continue
        if not char.isspace():
            meaningful = True
        current.append(char)
        index += 1
    if meaningful:
        statements.append("".join(current).strip())
    return statements


def run_sql_checks(url: str, database: str, statements: list[str], report: VerificationReport, *,
                   statement_timeout: float = 300, redactor: Redactor | None = None) -> None:
    """Run each operator check in a read-only transaction; it passes when it returns exactly one
    row with one column that is ``true``."""
    redactor = redactor_for(url, redactor)
    with connect(url, database, statement_timeout=statement_timeout) as connection:
        for number, statement in enumerate(statements, start=1):
            try:
                with connection.transaction():
                    connection.execute("SET TRANSACTION READ ONLY")
                    rows = connection.execute(statement).fetchall()
            except psycopg.Error as error:
                report.checks.append(CheckResult(number, statement, False, redactor(f"raised: {describe(error)}")))
                continue
            if len(rows) == 1 and len(rows[0]) == 1 and rows[0][0] is True:
                report.checks.append(CheckResult(number, statement, True, "returned true"))
            else:
                shown = one_line(repr(rows[:3]), 80)
                report.checks.append(CheckResult(number, statement, False, redactor(f"returned {shown}, not one true")))


def verify_restored_database(url: str, database: str, manifest: Manifest, *, checks_file: Path | str | None = None,
                             fix_sequences: bool = False, jobs: int = 2, statement_timeout: float = 3600,
                             redactor: Redactor | None = None) -> VerificationReport:
    """Run every verification against ``database`` (on the URL's server) and return the report;
    call ``report.raise_for_failure()`` to stop a restore on it. Raises RestoreStepError("verify")
    only when the checks cannot run at all (connection lost, unreadable checks file)."""
    redactor = redactor_for(url, redactor)
    started = time.monotonic()
    report = VerificationReport(database)
    try:
        statements = split_sql(Path(checks_file).read_text()) if checks_file else []
    except (OSError, UnicodeDecodeError) as error:
        raise step_error("verify", f"cannot read the SQL checks file: {describe(error)}", redactor) from None
    try:
        check_row_counts(url, database, manifest, report, jobs=jobs, statement_timeout=statement_timeout)
        compare_sequences(url, database, manifest.sequence_values, report, statement_timeout=statement_timeout)
        check_sequences(url, database, report, fix=fix_sequences, statement_timeout=statement_timeout)
        if statements:
            run_sql_checks(url, database, statements, report, redactor=redactor)
    except psycopg.Error as error:
        raise step_error("verify", f"verification of {database} could not run: {describe(error)}", redactor) from None
    report.seconds = time.monotonic() - started
    return report

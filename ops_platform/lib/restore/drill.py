"""The restore drill: prove that an environment's newest verified backup restores, without touching
anything that serves traffic. The backup is fetched and checked like a real restore, restored with
``pg_restore --exit-on-error`` into a throwaway database (``<db>__drill__restore_<stamp>``),
verified against its manifest, and dropped. Every other stored copy of that backup (S3, each
off-site destination) is then read back in full and checked as a restore's fetch checks it (sizes,
sha256, decompression): the bytes are the ones just restored, so an intact copy restores too. The
result is written into the backup's manifest (``drill``), so ``backups list`` shows which backups
were proven restorable.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from collections.abc import Sequence
from pathlib import Path

from ops_platform.config import EnvironmentConfig
from ops_platform.lib.artifacts import Manifest, utc_iso
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore import databases
from ops_platform.lib.restore.errors import RestoreStepError
from ops_platform.lib.restore.fetch import FetchedDump, fetch_candidate, fetch_restorable, make_work_dir
from ops_platform.lib.restore.pg_restore import restore_into
from ops_platform.lib.restore.resolve import Resolution, resolve_backup
from ops_platform.lib.restore.verify import VerificationReport, verify_restored_database
from ops_platform.lib.stores import LocalStore, S3Store

DRILL_SUFFIX = "__drill"
INTACT = "intact"


@dataclass
class DrillOutcome:
    """What the drill proved. ``restored`` is false when pg_restore (or anything before it) failed;
    ``report`` is None then."""

    environment: str
    backup_id: str | None = None
    manifest: Manifest | None = None
    restored: bool = False
    report: VerificationReport | None = None
    error: str | None = None
    failed_step: str | None = None
    newest_unusable: str | None = None
    copies: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """The newest backup restored and verified; restoring an older one proves less."""
        return (self.restored and self.report is not None and self.report.ok and not self.newest_unusable
                and not self.bad_copies)

    @property
    def bad_copies(self) -> dict[str, str]:
        """The other copies of the drilled backup that failed their read-back, and why."""
        return {place: result for place, result in self.copies.items() if result != INTACT}

    @property
    def total_seconds(self) -> float:
        return round(float(sum(self.seconds.values())), 2)

    def record(self, run_id: str | None = None, now: datetime | None = None) -> dict:
        """The ``drill`` entry written into the backup's manifest."""
        return {"at": utc_iso(now or datetime.now(timezone.utc)), "passed": self.passed,
                "seconds": self.total_seconds, "run_id": run_id, "copies": dict(self.copies),
                "summary": self.report.summary() if self.report else (self.error or "")}


def drill_database(environment: EnvironmentConfig) -> str:
    """The base name of an environment's throwaway drill databases (also its lock's name)."""
    return databases.database_name(environment.database_url) + DRILL_SUFFIX


def run_drill(environment: EnvironmentConfig, local: LocalStore, s3: S3Store | None, work_root: Path, *,
              jobs: int = 2, timeout: float = 6 * 3600, redactor: Redactor | None = None,
              destinations: Sequence[S3Store] = ()) -> DrillOutcome:
    """Restore the newest verified backup into a throwaway database, verify it, drop it, then read
    back every other copy of it (``destinations`` are the off-site ones). Never raises for a failed
    drill: the outcome says what failed. Holds the drill's own lock, so two drills of one
    environment never overlap, and drops what a stopped drill left behind."""
    redactor = redactor or Redactor.from_environ()
    url = environment.database_url
    base = drill_database(environment)
    outcome = DrillOutcome(environment.name)
    started, scratch, work_dir = time.monotonic(), None, None

    def finish_step(name: str) -> None:
        nonlocal started
        outcome.seconds[name] = round(time.monotonic() - started, 2)
        started = time.monotonic()

    try:
        with databases.restore_lock(url, base, redactor=redactor) as lock:
            outcome.warnings += [f"dropped {name}, left by a stopped drill"
                                 for name in databases.drop_stale_scratch(url, base, lock, redactor=redactor)]
            resolution = resolve_backup(environment.name, "latest", local, s3, redactor=redactor,
                                        destinations=destinations)
            outcome.backup_id, outcome.manifest = resolution.first.backup_id, resolution.first.manifest
            finish_step("resolve")
            work_dir = make_work_dir(Path(work_root) / base)
            fetched = fetch_restorable(resolution, work_dir, s3, redactor=redactor, destinations=destinations)
            outcome.backup_id, outcome.manifest = fetched.candidate.backup_id, fetched.candidate.manifest
            outcome.warnings += fetched.warnings
            outcome.newest_unusable = fetched.older_than_newest
            finish_step("fetch")
            scratch = databases.scratch_name(base, databases.make_stamp())
            databases.create_database(url, scratch, like=databases.database_name(url), redactor=redactor)
            run = restore_into(url, scratch, fetched.path, jobs=jobs, timeout=timeout, redactor=redactor)
            outcome.restored = True
            outcome.warnings += run.warnings
            finish_step("pg_restore")
            outcome.report = verify_restored_database(url, scratch, outcome.manifest,
                                                      checks_file=environment.restore_checks_file, jobs=jobs,
                                                      redactor=redactor)
            finish_step("verify")
            fetched.path.unlink(missing_ok=True)
            outcome.copies = read_back_other_copies(resolution, fetched, work_dir, s3, destinations, redactor)
            finish_step("copies")
    except RestoreStepError as error:
        outcome.error, outcome.failed_step = str(error), error.step
    finally:
        if scratch:
            try:
                databases.drop_database(url, scratch, redactor=redactor)
            except RestoreStepError as error:
                outcome.warnings.append(f"could not drop {scratch} (the next drill drops it): {error}")
        if work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    if outcome.error is None and outcome.report is not None and not outcome.report.ok:
        outcome.error, outcome.failed_step = outcome.report.summary(), "verify"
    if outcome.error is None and outcome.newest_unusable:
        outcome.error, outcome.failed_step = outcome.newest_unusable, "fetch"
    if outcome.error is None and outcome.bad_copies:
        outcome.error, outcome.failed_step = "; ".join(outcome.bad_copies.values()), "copies"
    return outcome


def read_back_other_copies(resolution: Resolution, restored: FetchedDump, work_dir: Path, s3: S3Store | None,
                           destinations: Sequence[S3Store], redactor: Redactor) -> dict[str, str]:
    """Each copy of the restored backup, by place: INTACT, or why it is not (the one restored is
    intact). A copy is fetched in full into ``work_dir`` and checked as a restore checks it, then
    deleted."""
    results = {restored.candidate.source: INTACT}
    for copy in resolution.candidates:
        if copy.backup_id != restored.candidate.backup_id or copy.source in results:
            continue
        try:
            fetch_candidate(copy, work_dir, s3, redactor=redactor, destinations=destinations).path.unlink()
            results[copy.source] = INTACT
        except RestoreStepError as error:
            results[copy.source] = str(error)
    return results


def record_drill(manifest: Manifest, entry: dict, local: LocalStore, s3: S3Store | None) -> list[str]:
    """Write the drill's result into the backup's manifest wherever that manifest is stored.
    Returns warnings for the stores that could not be updated (the drill's result stands)."""
    manifest.drill = entry
    warnings = []
    if local.path(manifest.environment, manifest.id + ".manifest.json").exists():
        try:
            local.write_manifest(manifest)
        except OSError as error:
            warnings.append(f"could not record the drill in the local manifest: {error}")
    if s3 is not None:
        try:
            if s3.has(manifest.environment, manifest.id + ".manifest.json"):
                s3.write_manifest(manifest)
        except Exception as error:  # noqa: BLE001 - the local record and the run's result stand
            warnings.append(f"could not record the drill in the S3 manifest: {type(error).__name__}: {error}")
    return warnings

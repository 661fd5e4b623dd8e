"""One backup from start to commit: dump, verify, then write the manifest last."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ops_platform.config import EnvironmentConfig
from ops_platform.lib import s3_encryption
from ops_platform.lib.artifacts import (
    BACKUP_KINDS,
    Manifest,
    artifact_name,
    make_backup_id,
    utc_iso,
)
from ops_platform.lib.dump import (
    BackupStepError,
    Compression,
    DumpResult,
    Progress,
    S3Leg,
    S3LegResult,
    abort_multipart,
    run_dump,
    transfer_config,
    wait_while_progressing,
)
from ops_platform.lib.postgres import client_version, server_version
from ops_platform.lib.redact import Redactor
from ops_platform.lib.stores import LocalStore, S3Store, s3_checksum_of
from ops_platform.lib.formatting import describe
from ops_platform.lib.verify import DecodeResult, decode_artifact

SIZE_DROP_RATIO = 0.5


@dataclass(frozen=True)
class BackupLimits:
    """How long each wait of a backup may last (the settings BACKUP_LOCK_WAIT_TIMEOUT_SECONDS,
    BACKUP_TIMEOUT_MINUTES and BACKUP_S3_STALL_SECONDS)."""

    lock_wait_seconds: float = 300.0
    timeout_seconds: float = 3 * 3600.0
    s3_stall_seconds: float = 30.0


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    blocking: bool
    description: str
    metadata: dict = field(default_factory=dict)
    severity: str = "error"

    def as_record(self) -> dict:
        return {"passed": self.passed, "blocking": self.blocking, "severity": self.severity,
                "description": self.description}


@dataclass
class BackupOutcome:
    manifest: Manifest
    dump: DumpResult
    checks: list[CheckOutcome]
    warnings: list[str]

    def check(self, name: str) -> CheckOutcome:
        return next(check for check in self.checks if check.name == name)


_TRANSIENT = re.compile(
    r"server closed the connection unexpectedly|terminating connection|terminated abnormally|PQgetCopyData|"
    r"could not receive data|"
    r"connection refused|could not connect|connection to server .* failed|Connection timed out|timeout expired|"
    r"the database system is (starting up|shutting down|in recovery mode)|SSL SYSCALL error|"
    r"no connection to the server|could not translate host name|Temporary failure in name resolution|"
    r"could not lock table|could not obtain lock", re.IGNORECASE)
_NOT_TRANSIENT = re.compile(r"password authentication failed|does not exist|permission denied|no pg_hba.conf entry",
                            re.IGNORECASE)


def is_transient(step: str, message: str) -> bool:
    """A failure worth retrying: the connection or the server went away (a restart, a failover), or
    a table lock was busy. A failed verification, a bad password or a full disk is not."""
    if step not in ("connect", "pg_dump", "lock-wait", "pg_restore"):
        return False
    return step == "lock-wait" or (bool(_TRANSIENT.search(message)) and not _NOT_TRANSIENT.search(message))


def previous_verified(local: LocalStore, environment: str, before_id: str) -> Manifest | None:
    for manifest in local.list_manifests(environment).manifests:
        if manifest.verified and manifest.id != before_id:
            return manifest
    return None


def check_decodes(dump: DumpResult, compression: Compression,
                  timeout: float | None = None) -> tuple[CheckOutcome, DecodeResult]:
    """What pg_restore made of the stored bytes: read in the dump's own pass, or else now."""
    decoded = dump.decode or decode_artifact(dump.local_path, compression.name, timeout)
    description = (f"pg_restore read the whole archive: {len(decoded.table_row_counts)} tables"
                   if decoded.ok else f"the stored archive does not decode: {decoded.error}")
    return CheckOutcome("decodes_completely", decoded.ok, True, description,
                        {"tables": len(decoded.table_row_counts)}), decoded


def check_not_empty(dump: DumpResult, row_counts: dict[str, int], blocking: bool = True) -> CheckOutcome:
    passed = dump.stored_bytes > 0 and len(row_counts) > 0
    if passed:
        description = f"{len(row_counts)} tables, {sum(row_counts.values())} rows"
    elif dump.stored_bytes == 0:
        description = "the stored file is empty"
    else:
        description = "the backup contains no tables"
    return CheckOutcome("not_empty", passed, blocking, description,
                        {"stored_bytes": dump.stored_bytes, "rows": sum(row_counts.values())})


def check_s3_copy(dump: DumpResult, s3: S3Store | None, environment: str, name: str,
                  redactor: Redactor) -> CheckOutcome | None:
    if s3 is None or dump.s3 is None:
        return None
    return check_copy_read_back(dump, dump.s3, s3, environment, name, redactor)


def check_copy_read_back(dump: DumpResult, leg: S3LegResult, s3: S3Store, environment: str, name: str,
                         redactor: Redactor) -> CheckOutcome:
    """The copy ``leg`` uploaded to ``s3`` (the main bucket or a destination), read back in full:
    its sha256 and size against the dump's, and the checksum S3 keeps for it. The check is
    ``s3_copy_matches`` for the main bucket, ``copy_<name>`` for a destination."""
    check_name = "s3_copy_matches" if s3.name == "s3" else f"copy_{s3.name}"
    label = "S3" if s3.name == "s3" else f"destination {s3.name}"
    if not leg.ok:
        return CheckOutcome(check_name, False, False, f"{label} upload failed: {leg.error}")
    try:
        remote_sha, remote_size = s3.object_sha256(environment, name)
        head = s3.head(environment, name)
    except Exception as error:  # noqa: BLE001 - reported as the check's reason
        return CheckOutcome(check_name, False, False,
                            redactor(f"could not read back the {label} copy: {type(error).__name__}: {error}"))
    s3_checksum = s3_checksum_of(head)
    same_bytes = remote_sha == dump.sha256 and remote_size == dump.stored_bytes
    unencrypted = s3.encryption_problem(head)
    passed = same_bytes and unencrypted is None
    retried = (f" (uploaded from the finished file after the streamed upload was given up: {leg.first_error})"
               if leg.retried_from_file else "")
    if not same_bytes:
        description = (f"{label} copy differs: sha256 {remote_sha[:12]} vs {dump.sha256[:12]}, {remote_size} vs "
                       f"{dump.stored_bytes} bytes")
    elif unencrypted:
        description = (f"{label} copy is not encrypted as configured: {unencrypted} (a bucket policy or the store dropped "
                       "it?); the copy is not committed, retention removes it after a day")
    else:
        description = f"{label} holds the same bytes (sha256 matches){retried}"
        if s3.encryption:
            description += f", encrypted with {s3.encryption.describe()}"
        if s3_checksum is None:
            description += "; the store keeps no checksum for it, so later checks compare its size only"
    return CheckOutcome(check_name, passed, False, description,
                        {"s3_sha256": remote_sha, "s3_checksum": s3_checksum if passed else None,
                         "s3_encryption": s3_encryption.reported(head) if s3.encryption else None})


def check_size_drop(dump: DumpResult, previous: Manifest | None) -> CheckOutcome:
    """Compares the uncompressed dump (raw_bytes), so a change of compression or level neither
    fakes nor hides a drop."""
    if previous is None:
        return CheckOutcome("size_not_dropped", True, False, "no earlier verified backup to compare with",
                            severity="warn")
    ratio = dump.raw_bytes / previous.raw_bytes if previous.raw_bytes else 1.0
    passed = ratio >= SIZE_DROP_RATIO
    description = (f"uncompressed dump size is {ratio:.0%} of the previous verified backup {previous.id}" if passed else
                   f"uncompressed dump size dropped to {ratio:.0%} of the previous verified backup {previous.id} "
                   f"({dump.raw_bytes} vs {previous.raw_bytes} bytes before compression)")
    return CheckOutcome("size_not_dropped", passed, False, description,
                        {"previous_id": previous.id, "ratio": round(ratio, 4), "raw_bytes": dump.raw_bytes,
                         "previous_raw_bytes": previous.raw_bytes}, severity="warn")


def perform_backup(
    environment: EnvironmentConfig,
    local: LocalStore,
    s3: S3Store | None,
    *,
    compression: Compression = Compression(),
    kind: str = "manual",
    run_id: str | None = None,
    redactor: Redactor | None = None,
    progress: Callable[[Progress], None] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    limits: BackupLimits = BackupLimits(),
    destinations: Sequence[S3Store] = (),
    unusable_places: Mapping[str, str] | None = None,
    min_copies: int = 0,
    count_copies: bool = False,
    keep_local: bool = True,
) -> BackupOutcome:
    """Dump, verify and commit one backup. Raises BackupStepError naming the failed step.

    ``keep_local=False`` (a worker without BACKUP_DIR): the local file is only the scratch the
    copies are checked against. It is removed once the backup is committed in S3, and no local
    manifest is written; S3 and the destinations are then the backup's only copies.

    The dump streams once to the local file, ``s3`` and every store of ``destinations`` (the
    off-site copies of ops_platform.yaml); each copy is read back, and the manifest's ``copies``
    records which were verified. With ``count_copies``, the check ``enough_copies`` fails (it never
    blocks) when fewer than ``min_copies`` (0: every configured place, ``unusable_places`` included)
    are verified, naming each missing copy."""
    if kind not in BACKUP_KINDS:
        raise BackupStepError("prepare", f"unknown backup kind '{kind}'; expected one of {', '.join(BACKUP_KINDS)}")
    if not keep_local and s3 is None:
        raise BackupStepError("prepare", "no local copy is kept on this machine (BACKUP_DIR is unset) and no S3 bucket "
                                         "is configured: set AWS_S3_BUCKET, or BACKUP_DIR to keep the backup here")
    redactor = redactor or Redactor.from_environ()
    started = time.monotonic()
    try:
        version = server_version(environment.database_url)
    except Exception as error:  # noqa: BLE001 - the message is what the operator needs
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BackupStepError("connect", redactor(f"cannot connect to the {environment.name} database: {first_line}")) from None
    properties, roles_sql, notes = database_globals(environment.database_url, redactor)
    created = unused_time(local, environment.name, now())
    backup_id = make_backup_id(environment.name, created)
    name = artifact_name(backup_id, compression.name)
    s3_leg = S3Leg(s3.client, s3.bucket, s3.key(environment.name, name), s3.encryption) if s3 else None
    destination_legs = [S3Leg(store.client, store.bucket, store.key(environment.name, name), store.encryption,
                              store.name) for store in destinations]
    dump = run_dump(environment.database_url, local.path(environment.name, name), compression=compression,
                    s3=s3_leg, destinations=destination_legs, redactor=redactor, progress=progress, lock_wait_timeout=limits.lock_wait_seconds,
                    timeout=limits.timeout_seconds, s3_stall_seconds=limits.s3_stall_seconds)

    decodes, decoded = check_decodes(dump, compression,
                                     max(60.0, limits.timeout_seconds - (time.monotonic() - started)))
    row_counts = decoded.table_row_counts
    _upload_failed_legs(dump, s3_leg, destination_legs, decodes.passed, redactor, limits.s3_stall_seconds,
                        max(60.0, limits.timeout_seconds - (time.monotonic() - started)))
    # A safety backup before a restore may well be of an emptied database: that is the disaster.
    checks = [decodes, check_not_empty(dump, row_counts, blocking=kind != "pre-restore")]
    s3_check = check_s3_copy(dump, s3, environment.name, name, redactor)
    if s3_check:
        checks.append(s3_check)
    checks.append(check_size_drop(dump, previous_verified(local, environment.name, backup_id)))
    copy_checks = {store.name: (store, check_copy_read_back(dump, dump.destinations[store.name], store,
                                                            environment.name, name, redactor))
                   for store in destinations}
    verified = all(check.passed for check in checks if check.blocking)
    copies = {"local": {"name": "local", "location": local.location(environment.name, name),
                        "verified": decodes.passed}} if keep_local else {}
    if s3 is not None:
        copies["s3"] = _copy_record("s3", s3.location(environment.name, name), s3_check)
    for store, check in copy_checks.values():
        copies[store.name] = _copy_record(store.name, store.location(environment.name, name), check)

    manifest = Manifest(
        id=backup_id,
        environment=environment.name,
        kind=kind,
        created_at=utc_iso(created),
        database=_database_name(environment.database_url),
        server_version=version,
        pg_dump_version=client_version("pg_dump"),
        compression=compression.name,
        compression_level=compression.level,
        artifact=name,
        raw_bytes=dump.raw_bytes,
        stored_bytes=dump.stored_bytes,
        sha256=dump.sha256,
        duration_seconds=round(time.monotonic() - started, 3),
        table_row_counts=row_counts,
        verification={check.name: check.as_record() for check in checks},
        verified=verified,
        locations=[local.location(environment.name, name)] if keep_local else [],
        dagster_run_id=run_id,
        s3_checksum=s3_check.metadata.get("s3_checksum") if s3_check else None,
        sequence_values=decoded.sequence_values,
        database_properties=properties,
        roles_sql=roles_sql,
        notes=notes,
        copies=list(copies.values()),
    )
    warnings = [check.description for check in checks if not check.passed and not check.blocking] + notes
    warnings += [check.description for _, check in copy_checks.values() if not check.passed]
    if s3 and s3_check and s3_check.passed:
        manifest.locations.append(s3.location(environment.name, name))
        try:
            s3.write_manifest(manifest)
        except Exception as error:  # noqa: BLE001 - the local copy stands; the S3 leg is reported
            manifest.locations.pop()
            problem = redactor(f"S3 manifest upload failed: {type(error).__name__}: {error}")
            copies["s3"].update(verified=False, detail=problem)
            warnings.append(problem)
    for store, check in copy_checks.values():
        if not check.passed:
            continue
        manifest.locations.append(store.location(environment.name, name))
        try:
            store.write_manifest(manifest)
        except Exception as error:  # noqa: BLE001 - the other copies stand; this one is reported missing
            manifest.locations.pop()
            problem = redactor(f"destination {store.name}: manifest upload failed: {type(error).__name__}: {error}")
            copies[store.name].update(verified=False, detail=problem)
            warnings.append(problem)
    if count_copies:
        enough = check_enough_copies(copies, dict(unusable_places or {}), min_copies)
        checks.append(enough)
        manifest.verification[enough.name] = enough.as_record()
        if not enough.passed:
            warnings.insert(0, enough.description)
    if not keep_local:
        return _without_local_copy(manifest, dump, checks, warnings, redactor)
    try:
        local.write_manifest(manifest)
    except OSError as error:
        raise BackupStepError("manifest", redactor(
            f"the backup {backup_id} was dumped and checked but its manifest could not be written "
            f"({type(error).__name__}: {error}); it is not committed and retention will remove it")) from None
    return BackupOutcome(manifest, dump, checks, warnings)


def _without_local_copy(manifest: Manifest, dump: DumpResult, checks: list[CheckOutcome], warnings: list[str],
                        redactor: Redactor) -> BackupOutcome:
    """Remove the scratch file of a backup kept in S3 only. A backup that no S3 place committed
    (its S3 copy failed) is not verified: it has no copy at all."""
    dump.local_path.unlink(missing_ok=True)
    if manifest.verified and not manifest.locations:
        manifest.verified = False
        problem = redactor(f"no copy of {manifest.id} could be committed: the S3 copies failed and no local copy "
                           "is kept on this machine (BACKUP_DIR is unset)")
        checks.append(CheckOutcome("committed_somewhere", False, True, problem))
        warnings.insert(0, problem)
    return BackupOutcome(manifest, dump, checks, warnings)


def _copy_record(name: str, location: str, check: CheckOutcome) -> dict:
    return {"name": name, "location": location, "verified": check.passed,
            "s3_checksum": check.metadata.get("s3_checksum") if check.passed else None,
            "detail": None if check.passed else check.description}


def _upload_failed_legs(dump: DumpResult, s3_leg: S3Leg | None, destination_legs: list[S3Leg], local_ok: bool,
                        redactor: Redactor, stall_seconds: float, timeout: float) -> None:
    """Each leg whose streamed upload was given up gets the finished file uploaded instead (all at
    once, so a slow one delays no other), when the local copy decoded; then whatever the given-up
    streams left under their keys is aborted."""
    from concurrent.futures import ThreadPoolExecutor

    failed = [(leg, dump.s3 if leg is s3_leg else dump.destinations[leg.name])
              for leg in ([s3_leg] if s3_leg else []) + destination_legs]
    failed = [(leg, result) for leg, result in failed if result is not None and not result.ok]
    if not failed:
        return
    if local_ok:
        with ThreadPoolExecutor(max_workers=len(failed), thread_name_prefix="s3-retry") as pool:
            retried = list(pool.map(lambda pair: upload_finished_file(pair[0], dump.local_path, pair[1], redactor,
                                                                      stall_seconds, timeout), failed))
        for (leg, _), result in zip(failed, retried):
            if leg is s3_leg:
                dump.s3 = result
            else:
                dump.destinations[leg.name] = result
    for leg, _ in failed:
        abort_multipart(leg)


def check_enough_copies(copies: dict[str, dict], unusable: dict[str, str], min_copies: int) -> CheckOutcome:
    """At least ``min_copies`` copies verified (0: every configured place, those that could not be
    used at all included). Its description names each missing copy and why."""
    places = [*copies, *unusable]  # copies: by name, in order
    required = min_copies or len(places)
    verified = [name for name, record in copies.items() if record.get("verified")]
    missing = {name: record.get("detail") or "not verified" for name, record in copies.items()
               if not record.get("verified")} | unusable
    missing_text = "; ".join(f"{name}: {reason}" for name, reason in missing.items())
    passed = len(verified) >= required
    if passed:
        description = f"{len(verified)} of {len(places)} copies verified ({', '.join(verified)}), {required} required"
        if missing:
            description += f"; missing {missing_text}"
    else:
        description = (f"only {len(verified)} verified copies ({', '.join(verified) or 'none'}) of the {required} "
                       f"required (BACKUP_MIN_COPIES): missing {missing_text or 'places that are not configured'}")
    return CheckOutcome("enough_copies", passed, False, description,
                        {"verified_copies": verified, "missing_copies": sorted(missing), "required": required})


def database_globals(database_url: str, redactor: Redactor) -> tuple[dict | None, str | None, list[str]]:
    """What a restore onto another database or server needs beside the dump: the database's own
    properties (comment, settings, grants, connection limit) and the cluster's roles. Either one
    that cannot be read is a note, never a failed backup."""
    from ops_platform.lib.restore.databases import connect, read_database_properties
    from ops_platform.lib.roles import dump_roles

    notes, properties = [], None
    try:
        with connect(database_url, _database_name(database_url)) as connection:
            properties = read_database_properties(connection, _database_name(database_url))
    except Exception as error:  # noqa: BLE001 - the dump goes on; the restore says what it lacks
        notes.append(redactor(f"the database's properties could not be read: {describe(error)}"))
    roles_sql, problem = dump_roles(database_url, redactor=redactor)
    if problem:
        notes.append(problem)
    return properties, roles_sql, notes


def clear_leftovers(local: LocalStore, s3: S3Store | None, environment: str, wait_seconds: float = 5.0) -> list[str]:
    """Remove what a dead backup of the environment left: hidden ``.partial`` files, and (waiting
    at most ``wait_seconds`` on S3) incomplete multipart uploads under its folder. Only call it
    while holding the environment's lock: then nothing alive is writing them."""
    done = []
    folder = local.env_dir(environment)
    for partial in sorted(folder.glob(".*.partial")) if folder.is_dir() else []:
        partial.unlink(missing_ok=True)
        done.append(f"removed {partial.name}")
    if s3 is not None:
        aborted = s3.abort_incomplete_uploads_within(s3.key(environment, ""), wait_seconds)
        done += [f"aborted the upload of {key}" for key in aborted]
    return done


def unused_time(local: LocalStore, environment: str, moment: datetime) -> datetime:
    """``moment``, or the next free second when a backup of that second already exists locally
    (two backups started within one second get distinct ids)."""
    moment = moment.replace(microsecond=0)
    while any(local.env_dir(environment).glob(f"*{make_backup_id(environment, moment)}*")):
        moment += timedelta(seconds=1)
    return moment


def upload_finished_file(leg: S3Leg, path, failed: S3LegResult, redactor: Redactor, stall_seconds: float = 30.0,
                         timeout: float = 3 * 3600.0) -> S3LegResult:
    """The streamed upload was given up (an error, or S3 stalled): upload the finished, verified
    file instead, for as long as S3 keeps taking data (``stall_seconds`` without progress gives
    up) and at most ``timeout``. Returns the first failure when this fails too."""
    import threading

    result: list[str] = []
    progress = [time.monotonic()]

    def upload() -> None:
        try:
            leg.client.upload_file(str(path), leg.bucket, leg.key, Config=transfer_config(),
                                   ExtraArgs=leg.upload_args(),
                                   Callback=lambda _: progress.__setitem__(0, time.monotonic()))
            result.append("ok")
        except Exception as error:  # noqa: BLE001 - reported as the S3 check's reason
            result.append(redactor(f"{type(error).__name__}: {error}"))

    thread = threading.Thread(target=upload, name="s3-upload-file", daemon=True)
    thread.start()
    wait_while_progressing(thread, lambda: progress[0], stall_seconds, timeout)
    if result == ["ok"]:
        return S3LegResult(failed.location, ok=True, error=None, retried_from_file=True, first_error=failed.error)
    again = result[0] if result else f"S3 took no data for {stall_seconds:g}s"
    return S3LegResult(failed.location, ok=False,
                       error=f"{failed.error}; uploading the finished file failed too: {again}")


def _database_name(database_url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(database_url)
    return params.get("dbname") or params.get("user") or ""

"""Step 2: turn one stored copy into a seekable raw dump file that ``pg_restore -j`` can read.

The stored bytes are streamed once (a local file, or S3 through boto3's transfer manager into a
writable sink), hashed and decompressed on the way, and written to a private file (0600 in a 0700
folder). Only when the sha256 and sizes match the manifest is the file handed on; anything else
deletes it and raises before any database is touched: CopyUnusable when the copy is proven bad
(size, sha256, decompression), RestoreStepError("fetch") when it could not be read (S3 down or
stalled, no space). Only a proven-bad backup lets ``latest`` fall back to an older one. The archive's
table of contents then gets its data positions (``archive_offsets``), which a dump streamed
through a pipe lacks, so ``pg_restore -j`` workers seek straight to their tables.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from ops_platform.lib.codecs import READ_CHUNK, StreamDecoder
from ops_platform.lib.dump import S3_PART_SIZE, wait_while_progressing
from ops_platform.lib.files import PRIVATE_DIR, open_private, private_dir
from ops_platform.lib.formatting import describe, human_bytes
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore.archive_offsets import ArchiveLayoutError, DataOffsetScan
from ops_platform.lib.restore.errors import CopyUnusable, RestoreStepError, step_error
from ops_platform.lib.restore.resolve import BackupCandidate, PassedOver, Resolution
from ops_platform.lib.stores import S3Store, new_boto3_session

S3_STALL_SECONDS = 120.0
SPACE_MARGIN_BYTES = 64 << 20

ProgressCallback = Callable[[int, int], None]


@dataclass
class FetchedDump:
    """A verified raw (uncompressed) custom-format archive, private to this restore."""

    path: Path
    candidate: BackupCandidate
    raw_bytes: int
    stored_bytes: int
    sha256: str
    seconds: float
    warnings: list[str] = field(default_factory=list)
    passed_over: list[PassedOver] = field(default_factory=list)

    @property
    def older_than_newest(self) -> str | None:
        """What an operator must not miss when this is not the newest backup:
        ``restored OLDER backup X: newest Y failed its checksum``; None when it is the newest."""
        if not self.passed_over:
            return None
        newest = self.passed_over[0]
        more = f" (and {len(self.passed_over) - 1} more newer backup(s) were unusable)" if len(self.passed_over) > 1 else ""
        return f"restored OLDER backup {self.candidate.backup_id}: newest {newest.backup_id} {newest.reason}{more}"

    def remove(self) -> None:
        """Delete the raw file (and its work folder when that is now empty)."""
        self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()


def make_work_dir(parent: Path | str | None = None) -> Path:
    """A fresh folder readable only by this user (0700 whatever the umask), in a private parent."""
    base = Path(parent) if parent else Path(tempfile.gettempdir())
    if parent:
        private_dir(base)
    folder = Path(tempfile.mkdtemp(prefix="ops_platform_restore_", dir=base))
    os.chmod(folder, PRIVATE_DIR)
    return folder


class _Sink(io.RawIOBase):
    """The stored bytes arrive here, in order: hashed, decompressed, written, reported."""

    def __init__(self, decoder: StreamDecoder, total: int, progress: ProgressCallback | None, interval: float):
        self.decoder = decoder
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.total = total
        self.progress = progress
        self.interval = interval
        self._last = 0.0
        self.last_write = time.monotonic()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data) -> int:
        data = bytes(data)
        self.last_write = time.monotonic()
        self.digest.update(data)
        self.bytes += len(data)
        self.decoder.write(data)
        if self.progress:
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self.progress(self.bytes, self.total)
        return len(data)


def fetch_candidate(candidate: BackupCandidate, work_dir: Path, s3: S3Store | None = None, *,
                    progress: ProgressCallback | None = None, progress_interval: float = 1.0,
                    redactor: Redactor | None = None, s3_concurrency: int = 4,
                    s3_stall_seconds: float = S3_STALL_SECONDS,
                    destinations: Sequence[S3Store] = ()) -> FetchedDump:
    """Stream one copy into ``work_dir`` as a raw archive, checked against its manifest (an S3
    copy through ``s3``, a destination's through its store in ``destinations``). Leaves no file behind on any error: raises CopyUnusable when the copy is
    proven bad, RestoreStepError("fetch") when it could not be read or stored."""
    redactor = redactor or Redactor.from_environ()
    manifest = candidate.manifest
    work_dir = Path(work_dir)
    _check_space(work_dir, candidate, redactor)
    store = next((item for item in ([s3] if s3 is not None else []) + list(destinations)
                  if item.name == candidate.source), None)
    if candidate.source != "local" and store is None:
        what = "no bucket is configured" if candidate.source == "s3" else "no such destination is configured"
        raise step_error("fetch", f"{candidate.describe()} could not be fetched: {what}", redactor)
    destination = work_dir / f"{manifest.id}.dump"
    started = time.monotonic()
    scan = None
    try:
        with open_private(destination, buffering=0) as handle:
            scan = DataOffsetScan(destination, handle)
            decoder = StreamDecoder(manifest.compression, scan)
            sink = _Sink(decoder, manifest.stored_bytes, progress, progress_interval)
            if candidate.source == "local":
                _stream_local(Path(candidate.location), sink)
            else:
                _stream_s3(candidate, store, sink, s3_concurrency, s3_stall_seconds)
            decoder.finish()
        problems = _compare(manifest, sink, decoder)
        if problems:
            raise CopyUnusable("fetch", "; ".join(problems))
        warnings = _write_data_offsets(scan)
    except BaseException as error:
        if scan is not None:
            scan.cancel()
        destination.unlink(missing_ok=True)
        if isinstance(error, CopyUnusable | zstandard.ZstdError | zlib.error):
            raise step_error("fetch", f"{candidate.describe()} is unusable: {_error_text(error)}", redactor,
                             CopyUnusable) from None
        if isinstance(error, Exception):
            raise step_error("fetch", f"{candidate.describe()} could not be fetched: {_error_text(error)}",
                             redactor) from None
        raise
    if progress:
        progress(sink.bytes, manifest.stored_bytes)
    return FetchedDump(destination, candidate, decoder.raw_bytes, sink.bytes, sink.digest.hexdigest(),
                       time.monotonic() - started, warnings)


def _write_data_offsets(scan: DataOffsetScan) -> list[str]:
    """Positions in the TOC make pg_restore faster but are not needed: an archive this cannot
    read is restored as it is, with a warning."""
    try:
        scan.finish()
    except ArchiveLayoutError as error:
        return [f"pg_restore will search the archive for each table's data ({error})"]
    return []


def fetch_restorable(resolution: Resolution, work_dir: Path, s3: S3Store | None = None, *,
                     progress: ProgressCallback | None = None, redactor: Redactor | None = None,
                     on_fallback: Callable[[str], None] | None = None,
                     s3_stall_seconds: float = S3_STALL_SECONDS,
                     destinations: Sequence[S3Store] = ()) -> FetchedDump:
    """The first backup of ``resolution`` with an intact copy, fetched. The other copy of the same
    backup is tried when one fails, for any reason. An older backup is tried only when every copy
    of the newer one is proven bad (CopyUnusable); the result's ``passed_over`` then says which
    and why. When a copy could not be read (S3 down or stalled, no space) and no copy of that
    backup was fetched, raises RestoreStepError("fetch") naming the backup, the reason and how to
    restore an older one on purpose: a resource problem never brings back an older backup.
    Each fallback is named in the result's warnings and passed to ``on_fallback``."""
    redactor = redactor or Redactor.from_environ()
    if not resolution.candidates:
        raise RestoreStepError("fetch", "no backup copy to fetch")
    backups = _by_backup(resolution.candidates)
    passed_over, notes, rejected = list(resolution.passed_over), [], []

    def note(text: str) -> None:
        notes.append(text)
        if on_fallback:
            on_fallback(text)

    for index, copies in enumerate(backups):
        unusable, unavailable = [], []
        for number, copy in enumerate(copies):
            try:
                fetched = fetch_candidate(copy, work_dir, s3, progress=progress, redactor=redactor,
                                          s3_stall_seconds=s3_stall_seconds, destinations=destinations)
            except RestoreStepError as error:
                (unusable if isinstance(error, CopyUnusable) else unavailable).append(str(error))
                if number + 1 < len(copies):
                    note(f"{error}; trying {copies[number + 1].describe()}")
                continue
            fetched.warnings = notes + fetched.warnings
            fetched.passed_over = passed_over
            return fetched
        backup_id = copies[0].backup_id
        older = backups[index + 1][0].manifest if index + 1 < len(backups) else None
        if unavailable:
            raise step_error("fetch", _stopped(backup_id, unavailable, unusable, older), redactor)
        passed_over.append(PassedOver(backup_id, _proven_bad(unusable)))
        rejected += unusable
        if older is not None:
            note(f"{backup_id} is unusable ({'; '.join(unusable)}); restoring the OLDER backup {older.id} instead")
    raise step_error("fetch", f"no intact copy of any backup to restore ({len(rejected)} tried): "
                              f"{'; '.join(rejected)}; nothing was touched", redactor, CopyUnusable)


def _by_backup(candidates: Sequence[BackupCandidate]) -> list[list[BackupCandidate]]:
    """The copies grouped by backup, in the resolution's order (newest first)."""
    groups: dict[str, list[BackupCandidate]] = {}
    for candidate in candidates:
        groups.setdefault(candidate.backup_id, []).append(candidate)
    return list(groups.values())


def _proven_bad(unusable: list[str]) -> str:
    text = " ".join(unusable)
    if "sha256" in text:
        return "failed its checksum"
    if "does not decompress" in text:
        return "does not decompress"
    return "does not match its manifest"


def _stopped(backup_id: str, unavailable: list[str], unusable: list[str], older) -> str:
    reasons = "; ".join(unavailable + unusable)
    message = f"{backup_id} could not be fetched, so nothing was restored and nothing was touched: {reasons}"
    if older is not None:
        message += (f". Fix that and restore again, or restore the older backup {older.id} on purpose: "
                    f"ops-platform restore {older.id} {older.environment} (backup: {older.id} in the launchpad)")
    return message


def _check_space(work_dir: Path, candidate: BackupCandidate, redactor: Redactor) -> None:
    """Room for the raw dump, plus SPACE_MARGIN_BYTES kept free for everything else on the disk."""
    raw, free = candidate.manifest.raw_bytes, shutil.disk_usage(work_dir).free
    needed = raw + SPACE_MARGIN_BYTES
    if free < needed:
        raise step_error("fetch", f"not enough space in {work_dir} for the raw dump of {candidate.backup_id}: it needs "
                                  f"{human_bytes(needed)} ({needed} bytes: the {human_bytes(raw)} raw dump and "
                                  f"{human_bytes(SPACE_MARGIN_BYTES)} kept free), {human_bytes(free)} ({free} bytes) "
                                  "are free; free space or set RESTORE_WORK_DIR to a larger disk", redactor)


def _stream_local(path: Path, sink: _Sink) -> None:
    with open(path, "rb") as source:
        while chunk := source.read(READ_CHUNK):
            sink.write(chunk)


def _stream_s3(candidate: BackupCandidate, store: S3Store, sink: _Sink, concurrency: int,
               stall_seconds: float) -> None:
    """Download through boto3's transfer manager (parallel ranged GETs, written to ``sink`` in
    order), giving up when no data arrives for ``stall_seconds``."""
    from boto3.s3.transfer import TransferConfig

    key = store.key(candidate.manifest.environment, candidate.manifest.artifact)
    head = store.client.head_object(Bucket=store.bucket, Key=key)
    if head["ContentLength"] != candidate.manifest.stored_bytes:
        raise CopyUnusable("fetch", f"S3 object is {head['ContentLength']} bytes, the manifest says "
                                        f"{candidate.manifest.stored_bytes}")
    config = TransferConfig(multipart_threshold=S3_PART_SIZE, multipart_chunksize=S3_PART_SIZE,
                            max_concurrency=concurrency, use_threads=True, io_chunksize=READ_CHUNK, max_io_queue=16,
                            preferred_transfer_client="classic")
    client = _download_client(store.client, store.credentials)
    failure: list[BaseException] = []

    def download() -> None:
        try:
            client.download_fileobj(store.bucket, key, sink, Config=config)
        except BaseException as error:  # noqa: BLE001 - raised below, in the caller's thread
            failure.append(error)

    thread = threading.Thread(target=download, name="s3-fetch", daemon=True)
    thread.start()
    if not wait_while_progressing(thread, lambda: sink.last_write, stall_seconds, float("inf")):
        raise RestoreStepError("fetch", f"S3 sent no data for {stall_seconds:g}s")
    if failure:
        raise failure[0]


def _download_client(client, credentials: tuple[str, str] | None = None):
    """The same client, validating response checksums when S3 sends them. With
    ``response_checksum_validation="when_required"`` (the project's default client), s3transfer
    0.19 writing to a stream it cannot seek deadlocks from the 11th part on: the first part's
    callback queues the rest while it still holds one of the 10 in-memory slots."""
    from botocore.config import Config

    config = client.meta.config.merge(Config(response_checksum_validation="when_supported"))
    keys = {"aws_access_key_id": credentials[0], "aws_secret_access_key": credentials[1]} if credentials else {}
    return new_boto3_session().client("s3", config=config, endpoint_url=client.meta.endpoint_url,
                                      region_name=client.meta.region_name, **keys)


def _compare(manifest, sink: _Sink, decoder: StreamDecoder) -> list[str]:
    problems = []
    if sink.bytes != manifest.stored_bytes:
        problems.append(f"{sink.bytes} bytes read, the manifest says {manifest.stored_bytes} (truncated or extended)")
    digest = sink.digest.hexdigest()
    if digest != manifest.sha256:
        problems.append(f"sha256 {digest[:12]}... differs from the manifest's {manifest.sha256[:12]}...")
    if not problems and decoder.raw_bytes != manifest.raw_bytes:
        problems.append(f"decompressed to {decoder.raw_bytes} bytes, the manifest says {manifest.raw_bytes}")
    return problems


def _error_text(error: BaseException) -> str:
    if isinstance(error, RestoreStepError):
        return str(error)
    if isinstance(error, zstandard.ZstdError | zlib.error):
        return f"it does not decompress: {describe(error)}"
    return f"{type(error).__name__}: {describe(error)}"

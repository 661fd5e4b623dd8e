"""Step 2: turn one stored copy into a seekable raw dump file that ``pg_restore -j`` can read.

The stored bytes are streamed once (a local file, or S3 through boto3's transfer manager into a
writable sink), hashed and decompressed on the way, and written to a private file (0600 in a 0700
folder). Only when the sha256 and sizes match the manifest is the file handed on; anything else
deletes it and raises RestoreStepError("fetch") before any database is touched. The archive's
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
from ops_platform.lib.formatting import describe
from ops_platform.lib.redact import Redactor
from ops_platform.lib.restore.archive_offsets import ArchiveLayoutError, DataOffsetScan
from ops_platform.lib.restore.errors import RestoreStepError, step_error
from ops_platform.lib.restore.resolve import BackupCandidate
from ops_platform.lib.stores import new_boto3_session

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


def fetch_candidate(candidate: BackupCandidate, work_dir: Path, *, progress: ProgressCallback | None = None,
                    progress_interval: float = 1.0, redactor: Redactor | None = None,
                    s3_concurrency: int = 4) -> FetchedDump:
    """Stream one copy into ``work_dir`` as a raw archive, checked against its manifest.
    Raises RestoreStepError("fetch") and leaves no file behind on any mismatch or error."""
    redactor = redactor or Redactor.from_environ()
    manifest = candidate.manifest
    work_dir = Path(work_dir)
    _check_space(work_dir, manifest.raw_bytes, redactor)
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
                _stream_s3(candidate, sink, s3_concurrency)
            decoder.finish()
        problems = _compare(manifest, sink, decoder)
        if problems:
            raise RestoreStepError("fetch", "; ".join(problems))
        warnings = _write_data_offsets(scan)
    except BaseException as error:
        if scan is not None:
            scan.cancel()
        destination.unlink(missing_ok=True)
        if isinstance(error, RestoreStepError):
            raise step_error("fetch", f"{candidate.describe()} is unusable: {error}", redactor) from None
        if isinstance(error, Exception):
            raise step_error("fetch", f"{candidate.describe()} is unusable: {_error_text(error)}", redactor) from None
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


def fetch_first_intact(candidates: Sequence[BackupCandidate], work_dir: Path, *,
                       progress: ProgressCallback | None = None, redactor: Redactor | None = None,
                       on_fallback: Callable[[str], None] | None = None) -> FetchedDump:
    """Try the copies in order and return the first intact one; each rejected copy is named in
    the result's warnings (and passed to ``on_fallback``). Raises when none is intact."""
    redactor = redactor or Redactor.from_environ()
    rejected: list[str] = []
    for index, candidate in enumerate(candidates):
        try:
            fetched = fetch_candidate(candidate, work_dir, progress=progress, redactor=redactor)
        except RestoreStepError as error:
            rejected.append(str(error))
            if index + 1 < len(candidates):
                note = f"{error}; falling back to {candidates[index + 1].describe()}"
                if on_fallback:
                    on_fallback(note)
                rejected[-1] = note
            continue
        fetched.warnings = rejected + fetched.warnings
        return fetched
    if not candidates:
        raise RestoreStepError("fetch", "no backup copy to fetch")
    summary = rejected[-1] if len(rejected) == 1 else f"all {len(rejected)} copies are unusable; last: {rejected[-1]}"
    raise step_error("fetch", summary, redactor)


def _check_space(work_dir: Path, raw_bytes: int, redactor: Redactor) -> None:
    free = shutil.disk_usage(work_dir).free
    if free < raw_bytes + SPACE_MARGIN_BYTES:
        raise step_error("fetch", f"not enough space in {work_dir} for the raw dump: {raw_bytes} bytes needed, "
                                  f"{free} free", redactor)


def _stream_local(path: Path, sink: _Sink) -> None:
    with open(path, "rb") as source:
        while chunk := source.read(READ_CHUNK):
            sink.write(chunk)


def _stream_s3(candidate: BackupCandidate, sink: _Sink, concurrency: int) -> None:
    """Download through boto3's transfer manager (parallel ranged GETs, written to ``sink`` in
    order), giving up when no data arrives for ``S3_STALL_SECONDS``."""
    from boto3.s3.transfer import TransferConfig

    store = candidate.store
    key = store.key(candidate.manifest.environment, candidate.manifest.artifact)
    head = store.client.head_object(Bucket=store.bucket, Key=key)
    if head["ContentLength"] != candidate.manifest.stored_bytes:
        raise RestoreStepError("fetch", f"S3 object is {head['ContentLength']} bytes, the manifest says "
                                        f"{candidate.manifest.stored_bytes}")
    config = TransferConfig(multipart_threshold=S3_PART_SIZE, multipart_chunksize=S3_PART_SIZE,
                            max_concurrency=concurrency, use_threads=True, io_chunksize=READ_CHUNK, max_io_queue=16,
                            preferred_transfer_client="classic")
    client = _download_client(store.client)
    failure: list[BaseException] = []

    def download() -> None:
        try:
            client.download_fileobj(store.bucket, key, sink, Config=config)
        except BaseException as error:  # noqa: BLE001 - raised below, in the caller's thread
            failure.append(error)

    thread = threading.Thread(target=download, name="s3-fetch", daemon=True)
    thread.start()
    if not wait_while_progressing(thread, lambda: sink.last_write, S3_STALL_SECONDS, float("inf")):
        raise RestoreStepError("fetch", f"S3 sent no data for {S3_STALL_SECONDS:g}s")
    if failure:
        raise failure[0]


def _download_client(client):
    """The same client, validating response checksums when S3 sends them. With
    ``response_checksum_validation="when_required"`` (the project's default client), s3transfer
    0.19 writing to a stream it cannot seek deadlocks from the 11th part on: the first part's
    callback queues the rest while it still holds one of the 10 in-memory slots."""
    from botocore.config import Config

    config = client.meta.config.merge(Config(response_checksum_validation="when_supported"))
    return new_boto3_session().client("s3", config=config, endpoint_url=client.meta.endpoint_url,
                                          region_name=client.meta.region_name)


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
    if isinstance(error, zstandard.ZstdError | zlib.error):
        return f"it does not decompress: {describe(error)}"
    return f"{type(error).__name__}: {describe(error)}"

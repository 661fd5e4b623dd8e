"""Checks that a stored backup is usable: it decodes completely and holds the tables' rows.

``ArchiveVerifier`` takes the stored (compressed) bytes as they are produced, decompresses them
and runs them through ``pg_restore -f -`` in full (not just ``--list``), counting each table's
rows in the script it writes. The backup feeds it in the same pass as the dump, so verifying costs
no second read of the archive; ``decode_artifact`` feeds it a file already stored.
"""

from __future__ import annotations

import contextlib
import queue
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


from ops_platform.lib.codecs import READ_CHUNK, StreamDecoder
from ops_platform.lib.redact import tail

# A table with no columns has no column list: "COPY public.t  FROM stdin;".
_COPY_LINE = re.compile(rb"^COPY (?P<table>.+?) (?:\(.*\))? FROM stdin;$")
_SETVAL_LINE = re.compile(rb"^SELECT pg_catalog\.setval\('(?P<sequence>(?:[^']|'')+)', (?P<value>-?\d+), "
                          rb"(?P<called>true|false)\);$")
_END_OF_DATA = b"\\.\n"


@dataclass
class DecodeResult:
    ok: bool
    table_row_counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    sequence_values: dict[str, list] = field(default_factory=dict)


def _unquote_table(name: bytes) -> str:
    return name.decode(errors="replace").replace('"', "")


class CopyRowCounter:
    """Rows per table in a pg_restore SQL script fed in pieces of any size: the lines between
    ``COPY ... FROM stdin;`` and ``\\.``. Data lines are counted with ``bytes.count``, never one
    by one, so counting keeps up with pg_restore. Each sequence's state at dump time, from its
    ``SELECT pg_catalog.setval('name', value, is_called);`` line, lands in ``sequences``
    (keyed by the name as pg_dump quotes it, the same as ``format('%I.%I')``)."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.sequences: dict[str, list] = {}
        self._table: str | None = None
        self._rows = 0
        self._pending = b""  # a line not yet complete

    def feed(self, data: bytes) -> None:
        data = self._pending + data if self._pending else data
        self._pending = b""
        pos, size = 0, len(data)
        while pos < size:
            if self._table is None:
                end = data.find(b"\n", pos)
                if end < 0:
                    self._pending = data[pos:]
                    return
                if data.startswith(b"COPY ", pos):
                    match = _COPY_LINE.match(data[pos:end])
                    if match:
                        self._table, self._rows = _unquote_table(match["table"]), 0
                elif data.startswith(b"SELECT pg_catalog.setval(", pos):
                    match = _SETVAL_LINE.match(data[pos:end])
                    if match:
                        name = match["sequence"].decode(errors="replace").replace("''", "'")
                        self.sequences[name] = [int(match["value"]), match["called"] == b"true"]
                pos = end + 1
                continue
            if size - pos < len(_END_OF_DATA) and _END_OF_DATA.startswith(data[pos:]):
                self._pending = data[pos:]  # maybe the end marker, cut in two
                return
            if data.startswith(_END_OF_DATA, pos):
                self._end_table()
                pos += len(_END_OF_DATA)
                continue
            marker = data.find(b"\n" + _END_OF_DATA, pos)
            if marker >= 0:
                self._rows += data.count(b"\n", pos, marker + 1)
                self._end_table()
                pos = marker + 1 + len(_END_OF_DATA)
                continue
            last = data.rfind(b"\n", pos)
            if last < 0:
                self._pending = data[pos:]
                return
            self._rows += data.count(b"\n", pos, last + 1)
            self._pending = data[last + 1:]
            return

    def _end_table(self) -> None:
        self.counts[self._table] = self._rows
        self._table = None


def count_copy_rows(lines: Iterable[bytes]) -> dict[str, int]:
    """Rows per table in a pg_restore SQL script given as lines (or any pieces)."""
    counter = CopyRowCounter()
    for piece in lines:
        counter.feed(piece)
    return counter.counts


class ArchiveVerifier:
    """Decompresses stored bytes into ``pg_restore -f -`` on a thread of its own (so the dump
    never waits on it for long: the queue holds a few pieces), counting rows as pg_restore writes
    its script. ``finish`` waits for the verdict; ``abort`` stops it."""

    def __init__(self, compression: str, max_chunks: int = 32):
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(["pg_restore", "--file=-"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._stderr, bufsize=READ_CHUNK)
        self._decoder = StreamDecoder(compression, self._process.stdin)
        self._queue: queue.Queue = queue.Queue(maxsize=max_chunks)
        self._counter = CopyRowCounter()
        self._feed_error: str | None = None
        self._feeder = threading.Thread(target=self._feed, name="verify-feed", daemon=True)
        self._reader = threading.Thread(target=self._read, name="verify-read", daemon=True)
        self._feeder.start()
        self._reader.start()

    def write(self, chunk: bytes) -> None:
        """Queue a piece of the stored stream (waits while the verifier is a queue behind)."""
        while self._feeder.is_alive():
            try:
                self._queue.put(chunk, timeout=0.5)
                return
            except queue.Full:
                continue

    def _feed(self) -> None:
        try:
            while (chunk := self._queue.get()) is not None:
                self._decoder.write(chunk)
            self._decoder.finish()
        except BrokenPipeError:
            pass
        except Exception as error:  # noqa: BLE001 - reported as the check's reason
            self._feed_error = f"{type(error).__name__}: {error}"
        finally:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
            while not self._queue.empty():  # let a blocked writer go
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()

    def _read(self) -> None:
        while chunk := self._process.stdout.read(READ_CHUNK):
            self._counter.feed(chunk)

    def finish(self, timeout: float | None = None) -> DecodeResult:
        """The verdict, once everything written so far was decoded (pg_restore is killed after
        ``timeout`` seconds)."""
        self.write(None)
        deadline = time.monotonic() + timeout if timeout else None
        expired = False
        try:
            self._process.wait(timeout=max(0.0, deadline - time.monotonic()) if deadline else None)
        except subprocess.TimeoutExpired:
            expired = True
            self._process.kill()
            self._process.wait()
        self._feeder.join(5)
        self._reader.join(5)
        self._stderr.seek(0)
        errors = self._stderr.read().decode(errors="replace")
        self._stderr.close()
        counts = self._counter.counts
        if expired:
            error = f"verification did not finish within {timeout:g}s (BACKUP_TIMEOUT_MINUTES)"
        elif self._feed_error:
            error = f"decompression failed: {self._feed_error}"
        elif self._process.returncode != 0:
            error = f"pg_restore exited with code {self._process.returncode}: {tail(errors, 5)}"
        else:
            error = None
        return DecodeResult(error is None, counts, error, self._counter.sequences)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._process.kill()
        self._process.wait()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._stderr.close()


def decode_artifact(path: Path, compression: str, timeout: float | None = None) -> DecodeResult:
    """Read a stored file back through ``ArchiveVerifier``."""
    verifier = ArchiveVerifier(compression)
    try:
        with open(path, "rb") as stored:
            while chunk := stored.read(READ_CHUNK):
                verifier.write(chunk)
    except BaseException:
        verifier.abort()
        raise
    return verifier.finish(timeout)

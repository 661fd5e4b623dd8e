"""Data positions for a custom-format archive that pg_dump wrote to a pipe.

pg_dump records where each table's data starts in the archive's table of contents (TOC) only
when its output can seek. A backup streams pg_dump's output through compression, so its TOC says
"position not set", and every ``pg_restore -j`` worker then walks the file block by block to find
its table: on the benchmark's dataset pg_restore took 1.15 x as long as on the same archive
written to a file. ``write_data_offsets`` walks the data blocks once and writes their
positions into the TOC in place, as pg_dump does when it can seek; pg_restore checks each
position against the block's id when it reads it.

The layout read here is pg_dump's custom format, archive versions 1.12 to 1.16 (PostgreSQL 11 to
18): a header, the TOC entries (each ending with a data-position field of 1 + offSize bytes), then
the data items, each a block type byte, the entry's id and its chunks (length, bytes) up to a
zero length; a large-objects item holds (oid, chunks) pairs up to an oid of 0.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"PGDMP"
CUSTOM_FORMAT = 1
OLDEST_VERSION, NEWEST_VERSION = (1, 12), (1, 16)
POSITION_NOT_SET, POSITION_SET, NO_DATA = 1, 2, 3
BLOCK_DATA, BLOCK_LARGE_OBJECTS = 1, 3
READ_SIZE = 1 << 16  # small reads: the scan thread holds the GIL only briefly while the fetch decompresses


class ArchiveLayoutError(ValueError):
    """The file is not an archive whose layout this module knows; it was left unchanged."""


@dataclass(frozen=True)
class DataOffsets:
    """What ``write_data_offsets`` did: how many TOC entries it gave a position, how many
    already had one."""

    written: int
    already_set: int


class _Reader:
    """Sequential reads of the archive's integers and strings through a bounded buffer."""

    def __init__(self, handle, int_size: int = 4):
        self.handle = handle
        self.int_size = int_size
        self.buffer = b""
        self.base = 0  # the file position of buffer[0]
        self.position = 0

    def _need(self, count: int) -> int:
        index = self.position - self.base
        if index < 0 or index + count > len(self.buffer):
            self.handle.seek(self.position)
            self.buffer = self.handle.read(max(READ_SIZE, count))
            self.base, index = self.position, 0
            if len(self.buffer) < count:
                raise ArchiveLayoutError(f"the archive ends at byte {self.position + len(self.buffer)}, "
                                         f"in the middle of an item")
        return index

    def at_end(self) -> bool:
        index = self.position - self.base
        if 0 <= index < len(self.buffer):
            return False
        self.handle.seek(self.position)
        self.buffer, self.base = self.handle.read(READ_SIZE), self.position
        return not self.buffer

    def bytes(self, count: int) -> bytes:
        index = self._need(count)
        self.position += count
        return self.buffer[index:index + count]

    def byte(self) -> int:
        index = self._need(1)
        self.position += 1
        return self.buffer[index]

    def int(self) -> int:
        index = self._need(1 + self.int_size)
        value = int.from_bytes(self.buffer[index + 1:index + 1 + self.int_size], "little")
        self.position += 1 + self.int_size
        return -value if self.buffer[index] else value

    def text(self) -> bytes | None:
        length = self.int()
        return None if length < 0 else self.bytes(length)

    def skip_chunks(self) -> None:
        """Past a run of (length, bytes) chunks ending with a zero length."""
        while (length := self.int()) != 0:
            if length < 0:
                raise ArchiveLayoutError(f"negative chunk length at byte {self.position}")
            self.position += length

    def skip_to(self, marker: bytes) -> None:
        """Just past the next occurrence of ``marker``."""
        while True:
            index = self._need(len(marker))
            found = self.buffer.find(marker, index)
            if found >= 0:
                self.position = self.base + found + len(marker)
                return
            self.position = self.base + len(self.buffer) - (len(marker) - 1)


def _read_header(reader: _Reader) -> tuple[tuple[int, int], int, bool]:
    """(archive version, offset size, whether the data is uncompressed); the reader is left at
    the TOC."""
    if reader.bytes(5) != MAGIC:
        raise ArchiveLayoutError("not a pg_dump custom-format archive (no PGDMP header)")
    major, minor, _revision, int_size, offset_size, archive_format = reader.bytes(6)
    version = (major, minor)
    if not OLDEST_VERSION <= version <= NEWEST_VERSION:
        raise ArchiveLayoutError(f"archive version {major}.{minor} is not one this reads")
    if archive_format != CUSTOM_FORMAT:
        raise ArchiveLayoutError(f"archive format {archive_format} is not pg_dump's custom format")
    if int_size not in (4, 8) or offset_size not in (4, 8):
        raise ArchiveLayoutError(f"unexpected integer/offset sizes {int_size}/{offset_size}")
    reader.int_size = int_size
    # the compression algorithm (1.15 on) or level; 0 is none either way
    uncompressed = (reader.byte() if version >= (1, 15) else reader.int()) == 0
    for _ in range(7):  # the creation time
        reader.int()
    for _ in range(3):  # database name, server and pg_dump versions
        reader.text()
    return version, offset_size, uncompressed


def _read_toc(reader: _Reader, version: tuple[int, int], offset_size: int) -> dict[int, tuple[int, int]]:
    """{entry id: (file position of its data-position field, its flag)}."""
    fields = {}
    count = reader.int()
    if count < 0:
        raise ArchiveLayoutError("negative TOC entry count")
    for _ in range(count):
        dump_id = reader.int()
        if dump_id <= 0:
            raise ArchiveLayoutError(f"TOC entry id {dump_id} out of range")
        reader.int()  # had a dumper
        for _ in range(4):  # table oid, oid, tag, description
            reader.text()
        reader.int()  # section
        for _ in range(5):  # definition, drop statement, copy statement, schema, tablespace
            reader.text()
        if version >= (1, 14):
            reader.text()  # table access method
        if version >= (1, 16):
            reader.int()  # relkind
        reader.text()  # owner
        reader.text()  # "with oids"
        while reader.text() is not None:  # dependencies
            pass
        field, flag = reader.position, reader.byte()
        if flag not in (POSITION_NOT_SET, POSITION_SET, NO_DATA):
            raise ArchiveLayoutError(f"TOC entry {dump_id} has an unknown data-position flag {flag}")
        fields[dump_id] = (field, flag)
        reader.bytes(offset_size)
    return fields


def _walk_data(reader: _Reader, uncompressed: bool) -> dict[int, int]:
    """{entry id: file position of its data item}, reading to the end of the file. Uncompressed
    table data is COPY text, which holds no NUL byte, while a chunk length other than zero holds
    at most ``int_size`` in a row: the item ends at the first run of ``1 + int_size`` NUL bytes
    (the zero length), found without stepping through its chunks one by one."""
    end_of_chunks = bytes(1 + reader.int_size)
    positions = {}
    while not reader.at_end():
        start = reader.position
        block_type = reader.byte()
        dump_id = reader.int()
        if dump_id in positions:
            raise ArchiveLayoutError(f"entry {dump_id} has two data items")
        positions[dump_id] = start
        if block_type == BLOCK_DATA and uncompressed:
            reader.skip_to(end_of_chunks)
        elif block_type == BLOCK_DATA:
            reader.skip_chunks()
        elif block_type == BLOCK_LARGE_OBJECTS:
            while reader.int() != 0:
                reader.skip_chunks()
        else:
            raise ArchiveLayoutError(f"unknown block type {block_type} at byte {start}")
    return positions


@dataclass
class _Layout:
    offset_size: int
    unset: dict[int, int]  # entry id -> file position of its data-position field
    already_set: int
    positions: dict[int, int]  # entry id -> file position of its data item


def _scan(reader: _Reader) -> _Layout:
    version, offset_size, uncompressed = _read_header(reader)
    fields = _read_toc(reader, version, offset_size)
    unset = {dump_id: field for dump_id, (field, flag) in fields.items() if flag == POSITION_NOT_SET}
    already_set = sum(1 for _, flag in fields.values() if flag == POSITION_SET)
    if not unset:
        return _Layout(offset_size, {}, already_set, {})
    positions = _walk_data(reader, uncompressed)
    unknown = sorted(set(positions) - set(fields))
    missing = sorted(set(unset) - set(positions))
    if unknown or missing:
        raise ArchiveLayoutError(f"data items and TOC disagree (unknown items {unknown[:5]}, "
                                 f"entries without data {missing[:5]})")
    return _Layout(offset_size, unset, already_set, positions)


def _write(path: Path, layout: _Layout) -> DataOffsets:
    with open(path, "r+b") as handle:
        for dump_id, field in layout.unset.items():
            handle.seek(field)
            handle.write(bytes([POSITION_SET]) + layout.positions[dump_id].to_bytes(layout.offset_size, "little"))
    return DataOffsets(len(layout.unset), layout.already_set)


def write_data_offsets(path: Path) -> DataOffsets:
    """Give every TOC entry whose data position is not set the position of its data item.
    Reads the whole file once; writes only the TOC's position fields, and only when every entry
    was found and the walk ended exactly at the end of the file. Raises ArchiveLayoutError (the
    file unchanged) for anything else."""
    with open(path, "rb") as handle:
        layout = _scan(_Reader(handle))
    return _write(path, layout)


class _GrowingFile:
    """A file that another thread is still writing: a read waits until the bytes it asks for
    are written, or the writer is done."""

    def __init__(self, path: Path):
        self.handle = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.offset = 0
        self.written = 0
        self.done = False
        self.cancelled = False
        self.changed = threading.Condition()

    def seek(self, position: int) -> None:
        self.offset = position

    def read(self, size: int) -> bytes:
        with self.changed:
            while not self.done and self.written < self.offset + size:
                self.changed.wait()
            if self.cancelled:
                raise ArchiveLayoutError("the fetch stopped")
        self.handle.seek(self.offset)
        data = self.handle.read(size)
        self.offset += len(data)
        return data

    def grew_to(self, written: int) -> None:
        with self.changed:
            self.written = written
            self.changed.notify_all()

    def end(self, cancelled: bool = False) -> None:
        with self.changed:
            self.done, self.cancelled = True, cancelled
            self.changed.notify_all()

    def close(self) -> None:
        self.handle.close()


class DataOffsetScan:
    """``write_data_offsets`` while the archive is being written: the walk runs in a thread
    that follows the writer, so it adds next to nothing to the fetch. Use it as the file's sink:
    ``write`` writes through to ``handle``; after the writer closes the file, ``finish`` writes
    the positions into the TOC (or raises ArchiveLayoutError); ``cancel`` stops the walk."""

    def __init__(self, path: Path, handle):
        self.path = path
        self.handle = handle
        self.bytes_written = 0
        self._source = _GrowingFile(path)
        self._layout: _Layout | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="archive-offsets", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._layout = _scan(_Reader(self._source))
        except BaseException as error:  # noqa: BLE001 - reported by finish()
            self._error = error
        finally:
            self._source.close()

    def write(self, data) -> int:
        written = self.handle.write(data)
        self.bytes_written += written
        self._source.grew_to(self.bytes_written)
        return written

    def finish(self) -> DataOffsets:
        self._source.end()
        self._thread.join()
        if isinstance(self._error, ArchiveLayoutError):
            raise self._error
        if self._error is not None:
            raise ArchiveLayoutError(f"reading the archive failed: {type(self._error).__name__}: {self._error}")
        return _write(self.path, self._layout)

    def cancel(self) -> None:
        self._source.end(cancelled=True)
        self._thread.join()


def data_positions(path: Path) -> dict[int, int | None]:
    """{entry id: the data position its TOC records, or None when not set} (for checks)."""
    with open(path, "rb") as handle:
        reader = _Reader(handle)
        version, offset_size, _ = _read_header(reader)
        fields = _read_toc(reader, version, offset_size)
        handle.seek(0)
        head = handle.read(max((field for field, _ in fields.values()), default=0) + 1 + offset_size)
    return {dump_id: int.from_bytes(head[field + 1:field + 1 + offset_size], "little") if flag == POSITION_SET
            else None for dump_id, (field, flag) in fields.items() if flag in (POSITION_NOT_SET, POSITION_SET)}

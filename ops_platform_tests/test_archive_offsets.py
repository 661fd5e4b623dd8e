"""Data positions written into a custom-format archive that pg_dump streamed through a pipe
(ops_platform.lib.restore.archive_offsets), against archives of the real pg_dump."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from ops_platform.lib.restore.archive_offsets import (
    ArchiveLayoutError,
    DataOffsetScan,
    data_positions,
    write_data_offsets,
)
from ops_platform_tests.restore_helpers import (
    PREFIX,
    create_database,
    drop_databases,
    table_fingerprints,
    url_for,
)

SOURCE = f"{PREFIX}offsets_source"

# Tables of different sizes (so rows span many chunks), a partitioned table, and large objects
# (their data item has its own layout, and binary bytes: runs of NUL bytes that uncompressed COPY
# text never has).
SCHEMA = """
CREATE TABLE small (id int PRIMARY KEY, label text);
INSERT INTO small SELECT g, 'label ' || g FROM generate_series(1, 10) g;
CREATE TABLE big (id bigint PRIMARY KEY, body text, doc jsonb);
INSERT INTO big SELECT g, repeat(md5(g::text), 1 + g % 40), jsonb_build_object('g', g, 'é', 'ünï')
  FROM generate_series(1, 20000) g;
CREATE TABLE empty_table (id int);
CREATE TABLE measurements (at date NOT NULL, value numeric) PARTITION BY RANGE (at);
CREATE TABLE measurements_2026 PARTITION OF measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO measurements SELECT DATE '2026-01-01' + g % 300, g / 7.0 FROM generate_series(1, 3000) g;
SELECT lo_from_bytea(0, decode(repeat('00ff10', 50000), 'hex'));
SELECT lo_from_bytea(0, convert_to('a small large object', 'UTF8'));
SELECT lo_from_bytea(0, decode(repeat('00', 64) || '0100' || repeat('00', 64), 'hex'));
"""


@pytest.fixture(scope="module")
def source_database():
    drop_databases([SOURCE])
    create_database(SOURCE, SCHEMA)
    yield SOURCE
    drop_databases([SOURCE])


def pg_dump(database: str, destination: Path, *, piped: bool, compress: int = 0) -> Path:
    """pg_dump -Fc of ``database``, either through a pipe (as a backup takes it) or to a file."""
    command = ["pg_dump", "--format=custom", f"--compress={compress}", f"--dbname={url_for(database)}"]
    if piped:
        destination.write_bytes(subprocess.run(command, stdout=subprocess.PIPE, check=True, timeout=120).stdout)
    else:
        subprocess.run([*command, f"--file={destination}"], check=True, timeout=120)
    return destination


@pytest.mark.parametrize("compress", [0, 6])
def test_positions_are_those_pg_dump_writes_to_a_file_and_the_archive_restores(
        source_database, tmp_path, compress):
    piped = pg_dump(source_database, tmp_path / "piped.dump", piped=True, compress=compress)
    to_file = pg_dump(source_database, tmp_path / "file.dump", piped=False, compress=compress)
    assert set(data_positions(piped).values()) == {None}
    expected = data_positions(to_file)
    assert None not in expected.values() and len(expected) == 5

    outcome = write_data_offsets(piped)

    assert (outcome.written, outcome.already_set) == (len(expected), 0)
    assert data_positions(piped) == expected
    assert piped.stat().st_size == to_file.stat().st_size
    target = f"{PREFIX}offsets_restored"
    drop_databases([target])
    try:
        create_database(target)
        subprocess.run(["pg_restore", "--jobs=2", "--exit-on-error", "--no-owner", f"--dbname={url_for(target)}",
                        str(piped)], check=True, capture_output=True, timeout=120)
        assert table_fingerprints(target) == table_fingerprints(source_database)
        large_objects = "SELECT count(*), sum(length(lo_get(oid))) FROM pg_largeobject_metadata"
        assert _query(target, large_objects) == _query(source_database, large_objects) == "3|150150"
    finally:
        drop_databases([target])


def test_the_scan_that_follows_the_writer_finds_the_same_positions(source_database, tmp_path):
    archive = pg_dump(source_database, tmp_path / "piped.dump", piped=True).read_bytes()
    expected_file = tmp_path / "expected.dump"
    expected_file.write_bytes(archive)
    write_data_offsets(expected_file)
    chooser = random.Random(7)
    destination = tmp_path / "streamed.dump"
    with open(destination, "wb", buffering=0) as handle:
        scan = DataOffsetScan(destination, handle)
        position = 0
        while position < len(archive):  # pieces from 1 byte to 64 KiB: items cut anywhere
            size = chooser.choice([1, 2, 5, 7, 100, 4096, 65536])
            scan.write(archive[position:position + size])
            position += size
    outcome = scan.finish()
    assert outcome.written == len(data_positions(expected_file))
    assert destination.read_bytes() == expected_file.read_bytes()


def test_an_archive_that_already_has_positions_is_left_as_it_is(source_database, tmp_path):
    to_file = pg_dump(source_database, tmp_path / "file.dump", piped=False)
    before = to_file.read_bytes()
    outcome = write_data_offsets(to_file)
    assert outcome.written == 0 and outcome.already_set == 5
    assert to_file.read_bytes() == before


@pytest.mark.parametrize("damage", ["truncated in the data", "truncated in the toc", "extra bytes at the end",
                                    "plain sql", "empty", "unknown version"])
def test_anything_else_is_refused_in_one_line_and_left_unchanged(source_database, tmp_path, damage):
    piped = pg_dump(source_database, tmp_path / "piped.dump", piped=True)
    data = piped.read_bytes()
    damaged = {
        "truncated in the data": data[:len(data) * 2 // 3],
        "truncated in the toc": data[:300],
        "extra bytes at the end": data + b"\x01\x00\x07\x00\x00\x00",
        "plain sql": b"--\n-- PostgreSQL database dump\n--\nSELECT 1;\n",
        "empty": b"",
        "unknown version": data[:5] + bytes([1, 99]) + data[7:],
    }[damage]
    piped.write_bytes(damaged)
    with pytest.raises(ArchiveLayoutError) as raised:
        write_data_offsets(piped)
    assert "\n" not in str(raised.value) and str(raised.value)
    assert piped.read_bytes() == damaged


def test_a_cancelled_scan_stops_without_waiting_for_the_writer(source_database, tmp_path):
    archive = pg_dump(source_database, tmp_path / "piped.dump", piped=True).read_bytes()
    destination = tmp_path / "partial.dump"
    with open(destination, "wb", buffering=0) as handle:
        scan = DataOffsetScan(destination, handle)
        scan.write(archive[:len(archive) // 2])
        scan.cancel()  # returns: the walk does not wait for bytes that will never come
    assert not scan._thread.is_alive()


def _query(database: str, sql: str) -> str:
    return subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-c", sql],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()

"""Metadata a person can read: client versions without the distribution's build, check times as
times (and the parsers of what older runs recorded)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from ops_platform.lib.postgres import client_version, parse_client_version
from ops_platform.lib.probes import checked_at_seconds

NEEDS_SERVICES = False


@pytest.mark.parametrize("output, version", [
    ("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n", "15.20"),
    ("pg_restore (PostgreSQL) 14.13 (Ubuntu 14.13-0ubuntu0.22.04.1)\n", "14.13"),
    ("pg_dump (PostgreSQL) 16.3 (Homebrew)\n", "16.3"),
    ("pg_dump (PostgreSQL) 17.2\n", "17.2"),
    ("pg_dump (PostgreSQL) 18devel\n", "18devel"),
])
def test_client_version_is_the_version_alone(output, version):
    assert parse_client_version(output) == version


def test_the_installed_pg_dump_reads_like_the_server_version():
    assert re.fullmatch(r"\d+(\.\d+)*", client_version("pg_dump"))


def test_checked_at_reads_timestamps_floats_and_iso_strings():
    moment = datetime(2026, 11, 26, 14, 30, tzinfo=timezone.utc)
    for value in (moment.timestamp(), int(moment.timestamp()), moment, moment.replace(tzinfo=None),
                  "2026-11-26T14:30:00Z", "2026-11-26T09:30:00-05:00", str(moment.timestamp())):
        assert checked_at_seconds(value) == moment.timestamp()

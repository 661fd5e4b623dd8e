"""TLS to a PostgreSQL server that is not on this machine: required unless the URL turns it off,
for psycopg connections and for the client programs alike. The local server has ``ssl = off``, so
reached through one of this machine's own non-loopback addresses it refuses what requires TLS."""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import subprocess
import threading

import pytest

from ops_platform.lib import postgres, probes
from ops_platform_tests.conftest import PG_PORT

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def test_connection_params_require_tls_only_off_this_machine(monkeypatch):
    monkeypatch.delenv("PGSSLMODE", raising=False)
    remote = "postgresql://app:pw@db.example.com:5432/app"
    assert postgres.connection_params(remote)["sslmode"] == "require"
    assert postgres.connection_params(remote, dbname="postgres") == {
        "user": "app", "password": "pw", "host": "db.example.com", "port": "5432", "dbname": "postgres",
        "sslmode": "require"}
    for local in ("postgresql://u@127.0.0.1/app", "postgresql://u@localhost/app", "postgresql://u@[::1]/app",
                  "postgresql:///app?host=/var/run/postgresql", "dbname=app"):
        assert "sslmode" not in postgres.connection_params(local), local
    full = remote + "?sslmode=verify-full&sslrootcert=/etc/ssl/certs/db-ca.pem"
    assert postgres.connection_params(full)["sslmode"] == "verify-full"
    assert postgres.connection_params("postgresql://u@localhost/app?hostaddr=192.0.2.9")["sslmode"] == "require"
    assert postgres.connection_params("postgresql://u@127.0.0.1,db.example.com/app")["sslmode"] == "require"
    assert postgres.connection_params(remote, {"PGSSLMODE": "verify-full"})["sslmode"] == "verify-full"
    assert postgres.connection_params(remote, {"PGSSLMODE": "disable"})["sslmode"] == "require"


def _own_address() -> str:
    """An address of this machine that is not loopback (the interface of the default route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # no packet is sent: this only picks the route
        except OSError:
            pytest.skip("this machine has no non-loopback address")
        address = probe.getsockname()[0]
    if ipaddress.ip_address(address).is_loopback:
        pytest.skip("this machine has no non-loopback address")
    return address


class Forwarder:
    """Listens on ``host`` and relays each connection to the local server, noting whether the
    client opened with an SSLRequest."""

    def __init__(self, host: str):
        self.listener = socket.create_server((host, 0))
        self.host, self.port = self.listener.getsockname()[:2]
        self.openings: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", PG_PORT))
            first = client.recv(8, socket.MSG_PEEK | socket.MSG_WAITALL)
            self.openings.append(first)
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source, target):
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def url(self, query: str = "") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres{query}"

    def close(self):
        self.listener.close()


@pytest.fixture
def remote_server():
    forwarder = Forwarder(_own_address())
    yield forwarder
    forwarder.close()


def test_a_server_off_this_machine_must_speak_tls_unless_its_url_says_otherwise(remote_server, monkeypatch, caplog):
    monkeypatch.delenv("PGSSLMODE", raising=False)
    settings = probes.ProbeSettings(timeout_seconds=10)
    [refused] = probes.probe_postgres("production", remote_server.url(), settings)
    assert refused.status == probes.UNHEALTHY and "SSL was required" in refused.reason, refused.reason
    assert remote_server.openings[-1] == SSL_REQUEST
    with postgres.client_connection(remote_server.url()) as client:
        dump = subprocess.run(["pg_dump", "--schema-only", "-d", client.conninfo], env=client.env,
                              capture_output=True, text=True, timeout=60)
    assert dump.returncode != 0 and "SSL was required" in dump.stderr, dump.stderr
    assert remote_server.openings[-1] == SSL_REQUEST

    caplog.set_level(logging.WARNING, logger="ops_platform.lib.postgres")
    plain = remote_server.url("?sslmode=disable")
    for _ in range(2):
        [result] = probes.probe_postgres("production", plain, settings)
        assert result.status == probes.HEALTHY, result.reason
    assert remote_server.openings[-1] != SSL_REQUEST
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == [f"TLS is not required for PostgreSQL at {remote_server.host}:{remote_server.port}: its URL "
                        "says sslmode=disable, so the password and data may cross the network in the clear"]

"""Helpers for the restore tests: a source database with the column types and objects a web app
uses, its backups (local folder and a moto S3 bucket of this session), content fingerprints of
whole databases, and a scanner of every process's argv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ops_platform.config import EnvironmentConfig
from ops_platform.lib.artifacts import Manifest
from ops_platform.lib.backup import perform_backup
from ops_platform.lib.stores import LocalStore, S3Store, make_s3_client
from ops_platform_tests.conftest import DB_PASSWORD, DB_USER, PG_HOST, PG_PORT, psql

SESSION = os.getpid()
PREFIX = f"ops_rt_{SESSION}_"  # every database a restore test creates starts with this
SOURCE_DB = f"{PREFIX}source"
READER_ROLE = f"ops_rt_reader_{SESSION}"
OLD_TIME = datetime(2026, 1, 10, 7, 0, tzinfo=timezone.utc)
NEW_TIME = datetime(2026, 1, 15, 7, 0, tzinfo=timezone.utc)

RICH_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TYPE order_status AS ENUM ('pending', 'paid', 'shipped', 'cancelled');
CREATE DOMAIN positive_money AS numeric(12,2) CHECK (VALUE >= 0);
CREATE TABLE customers (
  id bigserial PRIMARY KEY,
  email citext NOT NULL UNIQUE,
  name text,
  profile jsonb,
  tags text[],
  avatar bytea,
  external_id uuid DEFAULT gen_random_uuid(),
  balance positive_money DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
  id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  customer_id bigint REFERENCES customers(id),
  status order_status NOT NULL DEFAULT 'pending',
  total numeric(14,4),
  items jsonb,
  placed_at timestamptz
);
INSERT INTO customers (email, name, profile, tags, avatar, external_id, balance, created_at)
SELECT 'User' || g || '@Example.com',
       CASE WHEN g % 10 = 0 THEN NULL ELSE 'Zoë Ünïcødé 名前 ' || g END,
       CASE WHEN g % 7 = 0 THEN NULL ELSE jsonb_build_object('n', g, 'nested', jsonb_build_array(g, 'x', NULL)) END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE ARRAY['a' || g, 'b', NULL] END,
       CASE WHEN g % 3 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
       md5(g::text)::uuid, (g * 1.25)::numeric(12,2),
       '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 hour 7 seconds'
FROM generate_series(1, 300) g;
INSERT INTO orders (customer_id, status, total, items, placed_at)
SELECT 1 + g % 300, (ARRAY['pending','paid','shipped','cancelled'])[1 + g % 4]::order_status, g * 3.1415,
       jsonb_build_object('sku', g, 'qty', g % 4),
       CASE WHEN g % 9 = 0 THEN NULL ELSE '2026-02-01 12:00:00+01'::timestamptz + g * interval '1 minute' END
FROM generate_series(1, 1000) g;
CREATE TABLE events (id bigint NOT NULL, happened_at date NOT NULL, payload jsonb) PARTITION BY RANGE (happened_at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO events SELECT g, DATE '2025-06-01' + g, jsonb_build_object('g', g) FROM generate_series(1, 400) g;
CREATE TABLE notes (id serial PRIMARY KEY, body text);
CREATE TABLE pinned_notes (pinned_by text) INHERITS (notes);
INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 20) g;
INSERT INTO pinned_notes (body, pinned_by) SELECT 'pinned ' || g, 'admin' FROM generate_series(1, 5) g;
CREATE SCHEMA "Billing.Dept";
CREATE TABLE "Billing.Dept"."Invoice Lines.v2" (id serial PRIMARY KEY, "Amount" numeric, "désignation" text);
INSERT INTO "Billing.Dept"."Invoice Lines.v2" ("Amount", "désignation")
  SELECT g / 3.0, 'ligne n° ' || g FROM generate_series(1, 50) g;
CREATE TABLE public."we""ird (x)" (id int, "select" text);
INSERT INTO public."we""ird (x)" VALUES (1, 'a'), (2, NULL), (3, 'c');
CREATE TABLE public."café" (id int, label text);
INSERT INTO public."café" VALUES (1, 'crème'), (2, 'brûlée'), (3, ''), (4, NULL);
CREATE SEQUENCE invoice_numbers START 1000;
SELECT nextval('invoice_numbers') FROM generate_series(1, 3);
CREATE VIEW paid_orders AS SELECT * FROM orders WHERE status = 'paid';
CREATE MATERIALIZED VIEW customer_totals AS
  SELECT customer_id, sum(total) AS total, count(*) AS n FROM orders GROUP BY customer_id;
CREATE FUNCTION touch_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.body := NEW.body || ' (touched)'; RETURN NEW; END $$;
CREATE TRIGGER notes_touch BEFORE UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION touch_note();
SELECT lo_from_bytea(0, convert_to('large object payload é', 'UTF8'));
GRANT SELECT ON customers, paid_orders TO {reader};
"""

CHECKS_SQL = """
-- operator checks: each returns one true
SELECT count(*) = 300 FROM customers;
SELECT EXISTS (SELECT 1 FROM orders WHERE status = 'paid');  /* ; inside a comment */
SELECT 'a;b' = 'a;b';
SELECT $q$;$q$ = ';';
"""


def url_for(database: str, user: str = DB_USER, password: str = DB_PASSWORD) -> str:
    return f"postgresql://{user}:{password}@{PG_HOST}:{PG_PORT}/{database}"


def run_sql(database: str, sql: str, user: str = DB_USER) -> str:
    """Run a script as ``user`` (trust auth), stopping at the first error."""
    result = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", PG_HOST, "-p", str(PG_PORT),
                             "-U", user, "-d", database, "-f", "-"], input=sql, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"psql failed: {result.stderr}")
    return result.stdout.strip()


def database_names(prefix: str = PREFIX) -> list[str]:
    out = psql(f"SELECT datname FROM pg_database WHERE starts_with(datname, '{prefix}') ORDER BY 1")
    return out.splitlines() if out else []


def drop_databases(names) -> None:
    for name in names:
        quoted = name.replace('"', '""')
        psql(f'DROP DATABASE IF EXISTS "{quoted}" WITH (FORCE)')


def create_database(name: str, sql: str | None = None, owner: str = DB_USER) -> str:
    psql(f'CREATE DATABASE "{name}" OWNER "{owner}"')
    if sql:
        run_sql(name, sql, user=owner)
    return name


def table_fingerprints(database: str, user: str = DB_USER, by_name: bool = False) -> dict[str, str]:
    """md5 of every table's and materialized view's rows (``FROM ONLY``, sorted as text), of
    every large object, and every sequence's state. ``by_name`` reads each row as its columns by
    name, not position (pg_dump cannot keep the column order of an inheritance child whose
    columns are in another order than its parent's)."""
    row = "to_jsonb(t)::text" if by_name else "t::text"
    query = r"""
    SELECT format('%I.%I', n.nspname, c.relname), c.relkind
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\_toast%' ORDER BY 1
    """
    relations = [line.split("|") for line in psql(query, database=database).splitlines()]
    parts = []
    for name, kind in relations:
        literal = name.replace("'", "''")
        if kind == "S":
            parts.append(f"SELECT '{literal}', (SELECT last_value::text || ',' || is_called::text FROM {name})")
        else:
            parts.append(f"SELECT '{literal}', (SELECT count(*)::text || ':' || "
                         f"coalesce(md5(string_agg({row}, E'\\n' ORDER BY {row})), '-') FROM ONLY {name} t)")
    parts.append("SELECT 'large objects', (SELECT string_agg(oid::text || '=' || md5(lo_get(oid)), ',' ORDER BY oid) "
                 "FROM pg_largeobject_metadata)")
    out = run_sql(database, "\n UNION ALL ".join(parts) + ";", user=user)
    return dict(line.split("|", 1) for line in out.splitlines())


def schema_dump(database: str) -> str:
    """``pg_dump --schema-only`` with the database name and the per-run ``\\restrict`` keys removed."""
    result = subprocess.run(["pg_dump", "--schema-only", "-h", PG_HOST, "-p", str(PG_PORT), "-U", "postgres",
                             database], capture_output=True, text=True, check=True)
    lines = [line for line in result.stdout.splitlines() if not re.match(r"^\\(un)?restrict ", line)]
    return "\n".join(lines).replace(database, "<db>")


def relation_acl(database: str, relation: str) -> str:
    return psql(f"SELECT relacl::text FROM pg_class WHERE oid = '{relation}'::regclass", database=database)


@dataclass
class BackupSet:
    """Two verified backups of SOURCE_DB (OLD_TIME, NEW_TIME) in ``local_root`` and in S3 under
    ``prefix``, plus a staging backup of the same database."""

    local_root: Path
    client: object
    bucket: str
    prefix: str
    old: Manifest
    new: Manifest
    staging: Manifest

    def s3_store(self, prefix: str | None = None) -> S3Store:
        return S3Store(self.client, self.bucket, prefix or self.prefix)

    def local_copy(self, destination: Path) -> LocalStore:
        """A private copy of the local folder, so a test may damage it freely."""
        shutil.copytree(self.local_root, destination)
        return LocalStore(destination)

    def s3_copy(self, prefix: str) -> S3Store:
        """A private copy of the S3 objects under another prefix."""
        store = self.s3_store()
        target = self.s3_store(prefix)
        for environment in ("production", "staging"):
            for name in store.list_names(environment):
                store.client.copy_object(Bucket=self.bucket, Key=target.key(environment, name),
                                         CopySource={"Bucket": self.bucket, "Key": store.key(environment, name)})
        return target


@pytest.fixture(scope="module")
def backup_set(moto_server, tmp_path_factory):
    """The rich source database, backed up twice as production and once as staging."""
    drop_databases(database_names())
    psql(f'DROP ROLE IF EXISTS "{READER_ROLE}"')
    psql(f'CREATE ROLE "{READER_ROLE}" NOLOGIN')
    create_database(SOURCE_DB, RICH_SCHEMA.replace("{reader}", f'"{READER_ROLE}"'))
    bucket = f"ops-restore-{SESSION}"
    client = make_s3_client()
    client.create_bucket(Bucket=bucket)
    local_root = tmp_path_factory.mktemp("restore_backups")
    s3 = S3Store(client, bucket, "backups")
    local = LocalStore(local_root)
    manifests = {}
    for label, environment, moment in (("old", "production", OLD_TIME), ("new", "production", NEW_TIME),
                                       ("staging", "staging", NEW_TIME)):
        outcome = perform_backup(EnvironmentConfig(environment, url_for(SOURCE_DB)), local, s3,
                                 now=lambda moment=moment: moment)
        assert outcome.manifest.verified, outcome.checks
        manifests[label] = outcome.manifest
    yield BackupSet(local_root, client, bucket, "backups", manifests["old"], manifests["new"], manifests["staging"])
    drop_databases(database_names())
    psql(f'DROP ROLE IF EXISTS "{READER_ROLE}"')
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def cleanup_databases():
    """After the test, drop every database it created (they all start with PREFIX), except the source."""
    yield
    drop_databases(name for name in database_names() if name != SOURCE_DB)

"""The demo database ``make dev`` backs up when no database URL is set: a small shop (customers,
products, orders, order items; a few thousand rows), so the first backup of a fresh clone has
something to back up and passes its checks.

Idempotent and safe to run from two places at once: the database is created when missing, and
filled only while it holds no table (advisory locks serialise two creators and two fillers). A demo database
that already has tables (filled before, or restored into) is left exactly as it is."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from ops_platform.lib.formatting import describe
from ops_platform.lib import postgres
from ops_platform.lib.redact import Redactor

MAINTENANCE_DATABASE = "postgres"
_LOCK = 7_305_118_042  # advisory lock key: one creator, then one filler, at a time
CONNECT_TIMEOUT_SECONDS = 10

SHOP_SQL = """
CREATE TABLE customers (
  id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL,
  country text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE products (
  id bigserial PRIMARY KEY, sku text NOT NULL UNIQUE, title text NOT NULL,
  price numeric(10,2) NOT NULL, stock integer NOT NULL);
CREATE TABLE orders (
  id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers(id),
  status text NOT NULL, placed_at timestamptz NOT NULL);
CREATE TABLE order_items (
  id bigserial PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders(id),
  product_id bigint NOT NULL REFERENCES products(id), quantity integer NOT NULL,
  unit_price numeric(10,2) NOT NULL);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE INDEX order_items_order ON order_items(order_id);

INSERT INTO customers (email, name, country, created_at)
  SELECT 'customer' || g || '@example.com', 'Customer ' || g,
         (ARRAY['US', 'CA', 'GB', 'DE', 'FR', 'JP'])[1 + g % 6],
         timestamptz '2026-01-01 00:00+00' + g * interval '37 minutes'
  FROM generate_series(1, 500) g;
INSERT INTO products (sku, title, price, stock)
  SELECT 'SKU-' || lpad(g::text, 4, '0'), 'Product ' || g, round((5 + (g * 7919) % 200)::numeric + 0.99, 2),
         (g * 31) % 250
  FROM generate_series(1, 120) g;
INSERT INTO orders (customer_id, status, placed_at)
  SELECT 1 + (g * 7) % 500, (ARRAY['paid', 'shipped', 'delivered', 'refunded'])[1 + g % 4],
         timestamptz '2026-02-01 00:00+00' + g * interval '53 minutes'
  FROM generate_series(1, 1500) g;
INSERT INTO order_items (order_id, product_id, quantity, unit_price)
  SELECT 1 + (g - 1) / 3 % 1500, 1 + (g * 13) % 120, 1 + g % 3, round((5 + (g * 7919) % 200)::numeric + 0.99, 2)
  FROM generate_series(1, 4500) g;
"""
TABLES = ("customers", "products", "orders", "order_items")


class DemoDatabaseError(RuntimeError):
    """The demo database could not be reached, created or filled; the message is one line."""


@dataclass(frozen=True)
class DemoDatabase:
    name: str
    host: str
    created: bool
    filled: bool
    tables: int
    rows: int

    def describe(self) -> str:
        done = "created and filled now" if self.created else "filled now" if self.filled else "already there"
        return (f"the demo database {self.name} on {self.host}: {self.tables} tables, {self.rows:,} rows "
                f"({done})")


def _one_line(error: Exception) -> str:
    return Redactor.from_environ()(describe(error))


def ensure_demo_database(url: str) -> DemoDatabase:
    """Create the database named in ``url`` if it is missing (through the server's maintenance
    database), and fill it with the shop when it has no table. Raises DemoDatabaseError."""
    params = conninfo_to_dict(url)
    name = params.get("dbname") or ""
    host = f"{params.get('host', 'localhost')}:{params.get('port', '5432')}"
    if not name:
        raise DemoDatabaseError("the demo database URL names no database")
    created = False
    try:
        with postgres.connect(url, dbname=MAINTENANCE_DATABASE, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                              autocommit=True) as connection:
            connection.execute("SELECT pg_advisory_lock(%s)", (_LOCK,))  # released when the connection closes
            exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                try:
                    connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    created = True
                except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                    pass  # created a moment ago by something that does not take the lock
        with postgres.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS) as connection:
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                filled = not _user_tables(connection)
                if filled:
                    connection.execute(SHOP_SQL)
            tables = _user_tables(connection)
            rows = sum(connection.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table))).fetchone()[0]
                       for table in tables)
    except psycopg.Error as error:
        raise DemoDatabaseError(f"cannot prepare the demo database {name} on {host}: {_one_line(error)}") from None
    return DemoDatabase(name, host, created, filled, len(tables), rows)


def _user_tables(connection) -> list[tuple[str, str]]:
    return [tuple(row) for row in connection.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
        "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2").fetchall()]

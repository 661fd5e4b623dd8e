"""Benchmark datasets: realistic, server-side generated PostgreSQL databases.

The data is random rather than repeated filler (pgbench's filler compresses unrealistically well):
text drawn from a vocabulary of random pseudo-words with a skewed (Zipf-like) frequency, random
hex and base64 tokens, jsonb documents with varied keys and values, numerics, timestamps, inet
and uuids, plus the indexes an application would have.

A second kind, ``wide`` (``WIDE``), is one table of 5 million wide rows of random base64 text and
a jsonb document of random values: poorly compressible, so the compressor's own speed shows in
the backup's time. Its raw custom-format dump is 1.44 GB (0.84 GB after zstd -3; measured sizes
are in bench_results/cli_backup.json, ``datasets``); generation takes about half a minute.

Generation runs in SQL on the server (generate_series + random()), and is idempotent: a database
whose ``bench_meta`` row matches the requested scale and generator version is reused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg

GENERATOR_VERSION = 1
SERVER = "postgresql://postgres@127.0.0.1:5432"


@dataclass(frozen=True)
class Dataset:
    name: str
    scale: float  # mixed: 1.0 is about 600 MB on disk; wide: 1.0 is 5 million rows
    kind: str = "mixed"  # "mixed" (customers, orders, events) or "wide" (one table of random rows)

    @property
    def url(self) -> str:
        return f"{SERVER}/{self.name}"

    @property
    def generator_version(self) -> int:
        return WIDE_GENERATOR_VERSION if self.kind == "wide" else GENERATOR_VERSION


LARGE = Dataset("ops_bench_large", 1.0)
SMALL = Dataset("ops_bench_small", 0.25)
# 0.6 of LARGE: its zstd backup (about 72 MB) stays within 10 parts of 8 MiB in S3 (see bench/restore_bench.py).
MEDIUM = Dataset("ops_bench_medium", 0.6)
# Wide, poorly compressible rows: 5 million rows of random base64 text and jsonb (1.6 GB on disk,
# a 1.44 GB raw custom-format dump that zstd -3 brings down only to 0.58 of its size; the mixed
# dataset's goes to 0.35).
WIDE = Dataset("ops_bench_wide", 1.0, "wide")
# The same at a fifth of the rows, for BENCH_QUICK=1.
WIDE_QUICK = Dataset("ops_bench_wide_quick", 0.2, "wide")

VOCABULARY_SIZE = 6000

SCHEMA = """
CREATE TABLE bench_vocab (id int PRIMARY KEY, word text NOT NULL);
INSERT INTO bench_vocab
SELECT g, (SELECT string_agg(substr('etaoinshrdlucmfwypvbgkjqxz', 1 + floor(power(random(), 1.6) * 26)::int, 1), '')
           FROM generate_series(1, 2 + floor(random() * 9)::int + (g % 1)))
FROM generate_series(1, %(vocab)s) g;

CREATE FUNCTION bench_words(n int) RETURNS text LANGUAGE sql VOLATILE AS $$
  SELECT string_agg((SELECT v.word FROM bench_vocab v WHERE v.id = r.id), ' ')
  FROM (SELECT 1 + floor(power(random(), 2.5) * %(vocab)s)::int AS id FROM generate_series(1, n) OFFSET 0) r
$$;

CREATE FUNCTION bench_word() RETURNS text LANGUAGE sql VOLATILE AS $$
  SELECT word FROM bench_vocab WHERE id = (SELECT 1 + floor(power(random(), 2.5) * %(vocab)s)::int)
$$;

CREATE TABLE customers (
  id bigint PRIMARY KEY,
  email text NOT NULL,
  full_name text NOT NULL,
  address text,
  phone text,
  api_key text NOT NULL,
  profile jsonb NOT NULL,
  balance numeric(14, 2) NOT NULL,
  created_at timestamptz NOT NULL
);

CREATE TABLE orders (
  id bigint PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES customers(id),
  status text NOT NULL,
  currency char(3) NOT NULL,
  total numeric(12, 2) NOT NULL,
  items jsonb NOT NULL,
  note text,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);

CREATE TABLE events (
  id bigint PRIMARY KEY,
  occurred_at timestamptz NOT NULL,
  kind text NOT NULL,
  session_id uuid NOT NULL,
  ip inet NOT NULL,
  user_agent text NOT NULL,
  payload jsonb NOT NULL
);

CREATE TABLE bench_meta (scale float8 NOT NULL, generator_version int NOT NULL, generated_at timestamptz NOT NULL,
                         seconds float8 NOT NULL);
"""

CUSTOMERS = """
INSERT INTO customers
SELECT g,
       bench_word() || '.' || bench_word() || g || '@' || bench_word() || '.' || (ARRAY['com','net','org','io','de','fr'])[1 + (g %% 6)],
       initcap(bench_word()) || ' ' || initcap(bench_word()),
       (1 + floor(random() * 9999))::int || ' ' || initcap(bench_words(2)) || ' Street, ' || initcap(bench_word()),
       '+' || (10 + floor(random() * 89))::int || ' ' || lpad(floor(random() * 1e9)::bigint::text, 9, '0'),
       encode(sha256((random()::text || g)::bytea), 'base64'),
       jsonb_build_object(
         'plan', (ARRAY['free','starter','pro','enterprise'])[1 + floor(power(random(), 2) * 4)::int],
         'tags', to_jsonb(string_to_array(bench_words(1 + (g %% 4)), ' ')),
         'newsletter', random() < 0.3,
         'locale', (ARRAY['en-US','en-GB','fr-FR','de-DE','es-ES','ja-JP','pt-BR'])[1 + floor(random() * 7)::int],
         'score', round((random() * 1000)::numeric, 3),
         'bio', CASE WHEN random() < 0.4 THEN bench_words(5 + floor(random() * 25)::int) END,
         bench_word(), bench_word()
       ),
       round((random() * 20000 - 2000)::numeric, 2),
       timestamptz '2019-01-01' + random() * interval '7 years'
FROM generate_series(%(lo)s, %(hi)s) g;
"""

ORDERS = """
INSERT INTO orders
SELECT g,
       1 + floor(random() * %(customers)s)::bigint,
       (ARRAY['pending','paid','shipped','delivered','cancelled','refunded'])[1 + floor(power(random(), 1.5) * 6)::int],
       (ARRAY['USD','EUR','GBP','JPY','CAD'])[1 + floor(power(random(), 2) * 5)::int],
       round((random() * 900 + 5)::numeric, 2),
       (SELECT jsonb_agg(jsonb_build_object(
                 'sku', upper(substr(md5(random()::text), 1, 10)),
                 'name', initcap(bench_words(1 + floor(random() * 3)::int)),
                 'qty', 1 + floor(power(random(), 3) * 10)::int,
                 'unit_price', round((random() * 300 + 1)::numeric, 2)))
        FROM generate_series(1, 1 + floor(random() * 4)::int + (g %% 1))),
       CASE WHEN random() < 0.45 THEN bench_words(3 + floor(random() * 30)::int) END,
       ts, ts + random() * interval '20 days'
FROM (SELECT g, timestamptz '2019-06-01' + random() * interval '6 years' AS ts
      FROM generate_series(%(lo)s, %(hi)s) g) s;
"""

EVENTS = """
INSERT INTO events
SELECT g,
       timestamptz '2024-01-01' + random() * interval '2 years',
       (ARRAY['page_view','click','search','add_to_cart','checkout','login','logout','error'])[1 + floor(power(random(), 1.7) * 8)::int],
       gen_random_uuid(),
       ('10.' || floor(random() * 255)::int || '.' || floor(random() * 255)::int || '.' || floor(random() * 255)::int)::inet,
       (ARRAY['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36',
              'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15',
              'Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148',
              'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0',
              'curl/8.5.0', 'okhttp/4.12.0'])[1 + floor(power(random(), 2) * 6)::int],
       jsonb_build_object(
         'path', '/' || bench_word() || '/' || bench_word() || CASE WHEN random() < 0.5 THEN '/' || floor(random() * 1e6)::int ELSE '' END,
         'ms', floor(random() * 2000)::int,
         'ref', CASE WHEN random() < 0.3 THEN 'https://' || bench_word() || '.example/' || substr(md5(random()::text), 1, 12) END,
         'trace', substr(md5(random()::text) || md5(random()::text), 1, 32),
         bench_word(), bench_words(1 + floor(random() * 6)::int),
         bench_word(), round((random() * 100)::numeric, 4),
         bench_word(), random() < 0.5
       )
FROM generate_series(%(lo)s, %(hi)s) g;
"""

INDEXES = """
CREATE UNIQUE INDEX customers_email ON customers (email);
CREATE INDEX customers_created ON customers (created_at);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX orders_created ON orders (created_at);
CREATE INDEX orders_status ON orders (status, created_at);
CREATE INDEX events_occurred ON events (occurred_at);
CREATE INDEX events_session ON events (session_id);
CREATE INDEX events_payload ON events USING gin (payload jsonb_path_ops);
"""

BASE_ROWS = {"customers": 90_000, "orders": 420_000, "events": 450_000}
BATCH = 100_000


def _admin():
    return psycopg.connect(f"{SERVER}/postgres", autocommit=True)


def database_size(dataset: Dataset) -> int:
    with _admin() as connection:
        return connection.execute("SELECT pg_database_size(%s)", (dataset.name,)).fetchone()[0]


def is_ready(dataset: Dataset) -> bool:
    with _admin() as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dataset.name,)).fetchone():
            return False
    try:
        with psycopg.connect(dataset.url, autocommit=True) as connection:
            row = connection.execute("SELECT scale, generator_version FROM bench_meta").fetchone()
    except psycopg.Error:
        return False
    return bool(row) and row[0] == dataset.scale and row[1] == dataset.generator_version


def _batches(total: int):
    for low in range(1, total + 1, BATCH):
        yield low, min(low + BATCH - 1, total)


def _recreate(dataset: Dataset) -> None:
    with _admin() as connection:
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dataset.name,))
        connection.execute(f'DROP DATABASE IF EXISTS "{dataset.name}"')
        connection.execute(f'CREATE DATABASE "{dataset.name}"')


def generate(dataset: Dataset, log=print) -> None:
    if dataset.kind == "wide":
        generate_wide(dataset, log)
        return
    started = time.monotonic()
    _recreate(dataset)
    rows = {table: max(1, int(count * dataset.scale)) for table, count in BASE_ROWS.items()}
    with psycopg.connect(dataset.url, autocommit=True) as connection:
        connection.execute("SET synchronous_commit = off")
        connection.execute(SCHEMA.replace("%(vocab)s", str(VOCABULARY_SIZE)))
        for table, sql in (("customers", CUSTOMERS), ("orders", ORDERS), ("events", EVENTS)):
            for low, high in _batches(rows[table]):
                connection.execute(_fill(sql, low, high, rows["customers"]))
                log(f"  {dataset.name}: {table} {high:,}/{rows[table]:,} rows ({time.monotonic() - started:.0f}s)")
        connection.execute(INDEXES)
        connection.execute("VACUUM ANALYZE")
        connection.execute("INSERT INTO bench_meta VALUES (%s, %s, now(), %s)",
                           (dataset.scale, GENERATOR_VERSION, time.monotonic() - started))
    log(f"  {dataset.name}: generated in {time.monotonic() - started:.0f}s")


WIDE_GENERATOR_VERSION = 1
WIDE_ROWS = 5_000_000
WIDE_BATCH = 250_000

WIDE_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE wide_rows (
  id bigint NOT NULL,
  created_at timestamptz NOT NULL,
  account_id bigint NOT NULL,
  session_id uuid NOT NULL,
  body text NOT NULL,
  attrs jsonb NOT NULL
);
CREATE TABLE bench_meta (scale float8 NOT NULL, generator_version int NOT NULL, generated_at timestamptz NOT NULL,
                         seconds float8 NOT NULL);
"""

# Random bytes as base64 (without the line breaks encode() puts every 76 characters): about 3/4
# of each character is entropy, so zstd and gzip cannot do much better than 0.75-0.8.
WIDE_FILL = """
INSERT INTO wide_rows
SELECT g,
       timestamptz '2020-01-01' + random() * interval '6 years',
       1 + floor(random() * 2000000)::bigint,
       gen_random_uuid(),
       translate(encode(gen_random_bytes(32 + floor(random() * 81)::int), 'base64'), E'\\n', ''),
       jsonb_build_object(
         'key', encode(gen_random_bytes(12), 'base64'),
         'n', floor(random() * 1e9)::bigint,
         'score', random(),
         'tag', encode(gen_random_bytes(6), 'base64'),
         'ok', random() < 0.5)
FROM generate_series(%(lo)s, %(hi)s) g;
"""


def generate_wide(dataset: Dataset, log=print) -> None:
    """One table of ``WIDE_ROWS * scale`` wide rows of random base64 text and jsonb, generated on
    the server by two connections at once (about a minute for 5 million rows on 2 cores)."""
    from concurrent.futures import ThreadPoolExecutor

    started = time.monotonic()
    _recreate(dataset)
    total = max(1, int(WIDE_ROWS * dataset.scale))
    with psycopg.connect(dataset.url, autocommit=True) as connection:
        connection.execute(WIDE_SCHEMA)
    batches = [(low, min(low + WIDE_BATCH - 1, total)) for low in range(1, total + 1, WIDE_BATCH)]

    def fill(worker: int) -> None:
        with psycopg.connect(dataset.url, autocommit=True) as connection:
            connection.execute("SET synchronous_commit = off")
            for low, high in batches[worker::2]:
                connection.execute(WIDE_FILL.replace("%(lo)s", str(low)).replace("%(hi)s", str(high)))
                log(f"  {dataset.name}: rows {low:,}-{high:,} of {total:,} ({time.monotonic() - started:.0f}s)")

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(fill, range(2)))
    with psycopg.connect(dataset.url, autocommit=True) as connection:
        connection.execute("ALTER TABLE wide_rows ADD PRIMARY KEY (id)")
        connection.execute("CREATE INDEX wide_rows_account ON wide_rows (account_id)")
        connection.execute("DROP EXTENSION pgcrypto")  # the dump holds the data, not the generator
        connection.execute("VACUUM (FREEZE, ANALYZE)")
        connection.execute("INSERT INTO bench_meta VALUES (%s, %s, now(), %s)",
                           (dataset.scale, WIDE_GENERATOR_VERSION, time.monotonic() - started))
    log(f"  {dataset.name}: generated in {time.monotonic() - started:.0f}s")


def _fill(sql: str, low: int, high: int, customers: int) -> str:
    return sql.replace("%%", "%").replace("%(lo)s", str(low)).replace("%(hi)s", str(high)).replace(
        "%(customers)s", str(customers))


def ensure(dataset: Dataset, log=print) -> int:
    """Generate the dataset unless it already exists at this scale; return its size in bytes."""
    if not is_ready(dataset):
        log(f"generating {dataset.name} (scale {dataset.scale}); this takes a few minutes")
        generate(dataset, log)
    return database_size(dataset)


EVERY = (SMALL, MEDIUM, LARGE, WIDE, WIDE_QUICK)


def drop(dataset: Dataset) -> bool:
    """Drop a generated dataset (the benchmarks generate it again when next needed)."""
    with _admin() as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dataset.name,)).fetchone()
        connection.execute(f'DROP DATABASE IF EXISTS "{dataset.name}" WITH (FORCE)')
    return bool(exists)


if __name__ == "__main__":
    import sys

    # python -m bench.dataset [NAME ...]   generate (default: small and large)
    # python -m bench.dataset drop         drop every benchmark dataset
    if sys.argv[1:] == ["drop"]:
        for chosen in EVERY:
            if drop(chosen):
                print(f"dropped {chosen.name}")
        raise SystemExit(0)
    for chosen in (SMALL, LARGE) if len(sys.argv) < 2 else [d for d in EVERY if d.name in sys.argv[1:]]:
        size = ensure(chosen)
        print(f"{chosen.name}: {size / 1e6:.0f} MB on disk")

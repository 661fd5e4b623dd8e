"""Row counting in pg_restore's script, fed in pieces cut anywhere (no server needed)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ops_platform.lib.verify import CopyRowCounter, count_copy_rows

NEEDS_SERVICES = False

SCRIPT = (
    b"--\n-- PostgreSQL database dump\n--\nSET statement_timeout = 0;\n"
    b"COPY public.customers (id, email) FROM stdin;\n1\ta@example.com\n2\tb\\\\.c\n3\t\\\\.\n\\.\n\n"
    b"COPY public.empty (id) FROM stdin;\n\\.\n\n"
    b'COPY "Odd"."We""ird" (id, note) FROM stdin;\n1\tx\n\\.\n'
    b"CREATE INDEX orders_customer ON public.orders USING btree (customer_id);\n"
    b"COPY public.orders (id, total) FROM stdin;\n" + b"".join(b"%d\t1.00\n" % n for n in range(1000)) + b"\\.\n"
)
EXPECTED = {"public.customers": 3, "public.empty": 0, "Odd.Weird": 1, "public.orders": 1000}


def test_whole_script():
    assert count_copy_rows([SCRIPT]) == EXPECTED


def test_one_byte_at_a_time():
    counter = CopyRowCounter()
    for index in range(len(SCRIPT)):
        counter.feed(SCRIPT[index:index + 1])
    assert counter.counts == EXPECTED


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SCRIPT)), max_size=40))
def test_cut_anywhere(cuts):
    points = [0, *sorted(cuts), len(SCRIPT)]
    counter = CopyRowCounter()
    for start, end in zip(points, points[1:]):
        counter.feed(SCRIPT[start:end])
    assert counter.counts == EXPECTED

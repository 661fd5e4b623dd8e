"""Statement text made safe to show (lib/sql_text.py): the lexer against PostgreSQL's quoting
rules, utility statements reduced to their command tag, and redaction before truncation."""

from __future__ import annotations

import pytest

from ops_platform.lib.redact import Redactor
from ops_platform.lib.sql_text import (
    COMMENT,
    IDENTIFIER,
    NUMBER,
    PARAMETER,
    QUOTED_IDENTIFIER,
    STRING,
    mask_statement,
    sanitize_statement,
    shorten,
    tokenize,
)

NEEDS_SERVICES = False
SECRET = "hunter2"


def kinds(text: str, **options) -> list[tuple[str, str]]:
    return [(token.kind, token.text) for token in tokenize(text, **options) if token.kind != "space"]


@pytest.mark.parametrize("text", [
    "ALTER ROLE app PASSWORD 'hunter2\\'",
    "ALTER ROLE app PASSWORD $p1$hunter2$p1$",
    "ALTER ROLE app PASSWORD E'hunter2\\'s'",
    "CREATE USER app WITH LOGIN PASSWORD 'hunter2'",
    "SET app.token = hunter2",
    "SET SESSION app.token TO 'hunter2'",
    "set app.token = hunter2",
    "COPY (SELECT 'hunter2') TO STDOUT",
    "DO $$BEGIN PERFORM 'hunter2'; END$$",
    "EXPLAIN SELECT 'hunter2'",
    "GRANT hunter2 TO app",
    "/* SELECT */ ALTER SYSTEM SET app.token = 'hunter2'",
    "CREATE TABLE t AS SELECT 'hunter2'",
    "SELECT 1; ALTER ROLE app PASSWORD 'hunter2'",
    "hunter2",
])
def test_a_utility_statement_shows_only_its_command_tag(text):
    shown = sanitize_statement(text)
    assert SECRET not in shown and shown.endswith(" (text not shown)")


@pytest.mark.parametrize("text, tag", [
    ("ALTER ROLE app PASSWORD 'x'", "ALTER ROLE"), ("SET app.token = x", "SET"), ("COPY t FROM STDIN", "COPY"),
    ("CREATE OR REPLACE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql", "CREATE FUNCTION"),
    ("CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)", "CREATE INDEX"), ("DROP TABLE IF EXISTS t", "DROP TABLE"),
    ("CREATE MATERIALIZED VIEW v AS SELECT 1", "CREATE MATERIALIZED VIEW"), ("CREATE TABLE data (a int)", "CREATE TABLE"),
    ("  vacuum (verbose) t", "VACUUM"), ("hunter2 = 1", "statement"),
])
def test_command_tags_are_made_of_keywords_only(text, tag):
    assert mask_statement(text) == f"{tag} (text not shown)"


def test_constants_of_planned_statements_are_masked_and_comments_removed():
    text = ("/* lead hunter2 */ SELECT 'hunter2', 'it''s hunter2', E'hunter2\\'s', $q$hunter2$q$, $$hunter2$$, 42, 1.5e3, "
            "0x1F, .5, B'1010', X'FF', N'hunter2', U&'hunter2', $1, \"Hunter\"\"Col\", a$b, t.c "
            "FROM t /* outer /* inner */ hunter2 */ WHERE x = $2 -- hunter2\n AND y <> 'hunter2'")
    assert mask_statement(text) == (
        "SELECT '***', '***', '***', '***', '***', ***, ***, ***, ***, '***', '***', '***', '***', $1, "
        "\"Hunter\"\"Col\", a$b, t.c FROM t WHERE x = $2 AND y <> '***'")
    for plannable in ("WITH x AS (SELECT 1) SELECT * FROM x", "INSERT INTO t VALUES ($1)", "UPDATE t SET a = $1",
                      "DELETE FROM t", "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE", "VALUES ($1)",
                      "TABLE t", "(SELECT 1) UNION (SELECT 2)"):
        assert "(text not shown)" not in mask_statement(plannable), plannable


def test_the_lexer_follows_postgresql_quoting():
    assert kinds("SELECT 'a\\' , 'b'") == [(IDENTIFIER, "SELECT"), (STRING, "'a\\'"), ("symbol", ","), (STRING, "'b'")]
    assert kinds("SELECT 'a\\' , 'b'", backslash_escapes=True)[1] == (STRING, "'a\\' , '")
    assert kinds("E'a\\'b' x") == [(STRING, "E'a\\'b'"), (IDENTIFIER, "x")]
    assert kinds("$a$ x $b$ y $a$ $1 a$1$") == [(STRING, "$a$ x $b$ y $a$"), (PARAMETER, "$1"), (IDENTIFIER, "a$1$")]
    assert kinds('"a""b" U&"c"') == [(QUOTED_IDENTIFIER, '"a""b"'), (IDENTIFIER, "U"), ("symbol", "&"),
                                     (QUOTED_IDENTIFIER, '"c"')]
    assert kinds("/* a /* b */ c */ d") == [(COMMENT, "/* a /* b */ c */"), (IDENTIFIER, "d")]
    assert kinds("1-- c\n2") == [(NUMBER, "1"), (COMMENT, "-- c"), (NUMBER, "2")]
    assert kinds("a+/*c*/b") == [(IDENTIFIER, "a"), ("symbol", "+"), (COMMENT, "/*c*/"), (IDENTIFIER, "b")]
    text = "SELECT 'it''s', E'\\\\', $$x$$ -- end"
    assert "".join(token.text for token in tokenize(text)) == text
    assert [token.closed for token in tokenize("'open")] == [False]


@pytest.mark.parametrize("text", [
    "SELECT 'a\\' , hunter2, 'b'",              # standard_conforming_strings off: hunter2 is in a string
    "SELECT 'a\\'' || hunter2 || ''",           # on: hunter2 is in a string; off: it is code
    "SELECT 'unterminated hunter2",
    "SELECT \"unterminated hunter2",
    "SELECT 1 /* unterminated hunter2",
    "SELECT $x$ unterminated hunter2",
])
def test_text_read_two_ways_or_unterminated_is_not_shown(text):
    assert sanitize_statement(text) == "SELECT (text not shown)"


def test_a_backslash_that_does_not_move_a_string_end_is_shown():
    assert mask_statement("SELECT 'C:\\\\temp' FROM t") == "SELECT '***' FROM t"
    assert mask_statement("SELECT a FROM t WHERE b = 'a\\'") == "SELECT a FROM t WHERE b = '***'"


def test_known_secrets_are_redacted_before_the_text_is_cut():
    token = "tok_Zq7Lm2Pw9Xc4"
    text = f"SELECT a AS {token}, b FROM t"
    assert sanitize_statement(text, 20, Redactor([token])) == "SELECT a AS ***, b…"
    for limit in range(8, len(text)):
        assert "tok_Zq" not in sanitize_statement(text, limit, Redactor([token])), limit


def test_text_is_cut_between_tokens_and_sanitizing_again_changes_nothing():
    text = "SELECT aaaa, 'x', bbbb FROM t WHERE c = 'y' -- note"
    assert shorten(mask_statement(text), 16) == "SELECT aaaa,…"
    assert shorten("SELECT averyveryverylongname", 10) == "SELECT…"
    assert sanitize_statement("ALTER ROLE app PASSWORD 'x'", 15) == "ALTER ROLE"
    for sample in (text, "ALTER ROLE app PASSWORD 'x'", "SELECT 'a\\' , b", "<insufficient privilege>", ""):
        for limit in (25, 40, 300):
            once = sanitize_statement(sample, limit)
            assert sanitize_statement(once, limit) == once and len(once) <= limit

"""Statement text (from ``pg_stat_statements``) made safe to show: no constant, no comment, no
utility statement's text.

``tokenize`` is a lexer that follows PostgreSQL's own scanner (``scan.l``) far enough to know
where every constant and comment begins and ends: ``'...'`` with ``''``, ``E'...'`` with
backslash escapes, ``B''``/``X''``/``N''``/``U&''`` strings, ``$tag$...$tag$``, ``"identifiers"``,
numbers, ``$1`` parameters, ``--`` and nested ``/* */`` comments.

``sanitize_statement`` keeps the text of what a query planner sees (SELECT, INSERT, UPDATE,
DELETE, MERGE, WITH, VALUES, TABLE) with every constant masked and every comment removed. Any
other statement (ALTER ROLE ... PASSWORD, SET, COPY, DO, EXPLAIN, CREATE ...) shows only its
command tag: PostgreSQL leaves the constants of those in the recorded text, and a secret need not
even be a constant there (``SET app.token = abc``). So does text the lexer cannot read with
certainty: a string, quoted identifier or comment that never ends, or a backslash that changes
where a string ends depending on ``standard_conforming_strings`` at the time it ran. Known
secrets are then redacted, and only then is the text cut to length, at a token boundary.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

HIDDEN = "(text not shown)"
STRING_MASK = "'***'"
NUMBER_MASK = "***"
MAX_STATEMENT_CHARS = 300
NO_PRIVILEGE = "<insufficient privilege>"

PLANNABLE = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "VALUES", "TABLE"})
COMMANDS = PLANNABLE | frozenset({
    "ABORT", "ALTER", "ANALYSE", "ANALYZE", "BEGIN", "CALL", "CHECKPOINT", "CLOSE", "CLUSTER", "COMMENT",
    "COMMIT", "COPY", "CREATE", "DEALLOCATE", "DECLARE", "DISCARD", "DO", "DROP", "END", "EXECUTE", "EXPLAIN",
    "FETCH", "GRANT", "IMPORT", "LISTEN", "LOAD", "LOCK", "MOVE", "NOTIFY", "PREPARE", "REASSIGN", "REFRESH",
    "REINDEX", "RELEASE", "RESET", "REVOKE", "ROLLBACK", "SAVEPOINT", "SECURITY", "SET", "SHOW", "START",
    "TRUNCATE", "UNLISTEN", "VACUUM"})
_DEFINES = frozenset({"CREATE", "ALTER", "DROP"})
_MODIFIERS = frozenset({"OR", "REPLACE", "TEMP", "TEMPORARY", "UNLOGGED", "UNIQUE", "GLOBAL", "LOCAL", "TRUSTED",
                        "PROCEDURAL", "RECURSIVE", "CONSTRAINT", "IF", "NOT", "EXISTS"})
_OBJECTS = frozenset({
    "ACCESS", "AGGREGATE", "CAST", "COLLATION", "CONVERSION", "DATABASE", "DEFAULT", "DOMAIN", "EVENT", "EXTENSION",
    "FOREIGN", "FUNCTION", "GROUP", "INDEX", "LANGUAGE", "LARGE", "MATERIALIZED", "OPERATOR", "POLICY", "PROCEDURE",
    "PUBLICATION", "ROLE", "ROUTINE", "RULE", "SCHEMA", "SEQUENCE", "SERVER", "STATISTICS", "SUBSCRIPTION", "SYSTEM",
    "TABLE", "TABLESPACE", "TEXT", "TRANSFORM", "TRIGGER", "TYPE", "USER", "VIEW"})
_OBJECT_SECOND_WORDS = {"ACCESS": "METHOD", "DEFAULT": "PRIVILEGES", "EVENT": "TRIGGER", "FOREIGN": "TABLE",
                        "LARGE": "OBJECT", "MATERIALIZED": "VIEW", "TEXT": "SEARCH", "USER": "MAPPING"}

# Identifier characters as PostgreSQL's scanner has them: letters, digits, _, $ and every non-ASCII character.
_IDENTIFIER = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z_0-9$\u0080-\U0010ffff]*")
_DOLLAR_QUOTE = re.compile(r"\$(?:[A-Za-z_\u0080-\U0010ffff][A-Za-z_0-9\u0080-\U0010ffff]*)?\$")
_PARAMETER = re.compile(r"\$[0-9]+")
_NUMBER = re.compile(r"0[xX][0-9A-Fa-f_]+|0[oO][0-7_]+|0[bB][01_]+"
                     r"|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?")
_STRING_PREFIX = re.compile(r"[eEbBxXnN]'|[uU]&'")
_SPACE = re.compile(r"[ \t\n\r\f\v]+")

SPACE, COMMENT, STRING, NUMBER, PARAMETER, IDENTIFIER, QUOTED_IDENTIFIER, SYMBOL = (
    "space", "comment", "string", "number", "parameter", "identifier", "quoted_identifier", "symbol")


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    closed: bool = True


def tokenize(text: str, *, backslash_escapes: bool = False) -> list[Token]:
    """The tokens of ``text``; joined, they give ``text`` back. ``backslash_escapes`` reads
    ``'...'`` as PostgreSQL does with ``standard_conforming_strings`` off (``E'...'`` always is).
    A string, quoted identifier or block comment that never ends is one token with ``closed`` False."""
    tokens: list[Token] = []
    position, length = 0, len(text)
    while position < length:
        end, kind, closed = _next_token(text, position, backslash_escapes)
        tokens.append(Token(kind, text[position:end], closed))
        position = end
    return tokens


def _next_token(text: str, start: int, backslash_escapes: bool) -> tuple[int, str, bool]:
    char, following = text[start], text[start + 1:start + 2]
    if match := _SPACE.match(text, start):
        return match.end(), SPACE, True
    if char == "-" and following == "-":
        newline = min((i for i in (text.find("\n", start), text.find("\r", start)) if i >= 0), default=len(text))
        return newline, COMMENT, True
    if char == "/" and following == "*":
        return _block_comment(text, start)
    if char == "'":
        return _string(text, start + 1, backslash_escapes)
    if match := _STRING_PREFIX.match(text, start):
        escapes = char in "eE" or (backslash_escapes and char not in "uU")
        return _string(text, match.end(), escapes)
    if char == '"':
        end, closed = _quoted(text, start + 1, '"', False)
        return end, QUOTED_IDENTIFIER, closed
    if match := _IDENTIFIER.match(text, start):
        return match.end(), IDENTIFIER, True
    if match := _PARAMETER.match(text, start):
        return match.end(), PARAMETER, True
    if match := _DOLLAR_QUOTE.match(text, start):
        closing = text.find(match.group(), match.end())
        return (len(text), STRING, False) if closing < 0 else (closing + len(match.group()), STRING, True)
    if match := _NUMBER.match(text, start):
        return match.end(), NUMBER, True
    return start + 1, SYMBOL, True


def _string(text: str, body: int, backslash_escapes: bool) -> tuple[int, str, bool]:
    end, closed = _quoted(text, body, "'", backslash_escapes)
    return end, STRING, closed


def _quoted(text: str, position: int, quote: str, backslash_escapes: bool) -> tuple[int, bool]:
    """The end of a quoted string or identifier whose body starts at ``position``: a doubled quote
    is part of it, and so, with ``backslash_escapes``, is the character after a backslash."""
    length = len(text)
    while position < length:
        char = text[position]
        if backslash_escapes and char == "\\":
            position += 2
        elif char == quote:
            if text[position + 1:position + 2] != quote:
                return position + 1, True
            position += 2
        else:
            position += 1
    return length, False


def _block_comment(text: str, start: int) -> tuple[int, str, bool]:
    """``/* ... */``, nested as PostgreSQL nests them."""
    depth, position = 0, start
    while position < len(text):
        pair = text[position:position + 2]
        if pair == "/*":
            depth += 1
            position += 2
        elif pair == "*/":
            depth -= 1
            position += 2
            if depth == 0:
                return position, COMMENT, True
        else:
            position += 1
    return len(text), COMMENT, False


def _significant(tokens: list[Token]) -> list[Token]:
    return [token for token in tokens if token.kind not in (SPACE, COMMENT)]


def _statements(tokens: list[Token]) -> list[list[Token]]:
    """The significant tokens of each statement (split at ``;``), empty statements left out."""
    statements: list[list[Token]] = [[]]
    for token in _significant(tokens):
        if token.kind == SYMBOL and token.text == ";":
            statements.append([])
        else:
            statements[-1].append(token)
    return [statement for statement in statements if statement]


def _words(statement: list[Token]) -> list[str]:
    """The statement's leading keywords (after any opening parentheses), upper-cased."""
    words = []
    for token in statement:
        if token.kind == SYMBOL and token.text == "(" and not words:
            continue
        if token.kind != IDENTIFIER:
            break
        words.append(token.text.upper())
    return words


def command_tag(statement: list[Token]) -> str:
    """What the statement is, in PostgreSQL's command-tag style (``ALTER ROLE``, ``SET``, ``COPY``),
    made only of fixed keywords, so nothing the statement names or sets: ``statement`` when its
    first word is not a command."""
    words = _words(statement)
    if not words or words[0] not in COMMANDS:
        return "statement"
    tag = [words[0]]
    if words[0] in _DEFINES:
        rest = [word for word in words[1:7] if word not in _MODIFIERS]
        if rest and rest[0] in _OBJECTS:
            tag.append(rest[0])
            if len(rest) > 1 and _OBJECT_SECOND_WORDS.get(rest[0]) == rest[1]:
                tag.append(rest[1])
    return " ".join(tag)


def _plannable(statement: list[Token]) -> bool:
    words = _words(statement)
    return bool(words) and words[0] in PLANNABLE


def _masked(tokens: list[Token]) -> str:
    pieces = []
    for token in tokens:
        if token.kind in (SPACE, COMMENT):
            pieces.append(" ")
        elif token.kind == STRING:
            pieces.append(STRING_MASK)
        elif token.kind == NUMBER:
            pieces.append(NUMBER_MASK)
        else:
            pieces.append(token.text)
    return " ".join("".join(pieces).split())


def mask_statement(text: str) -> str:
    """The statement with its constants masked and comments removed, when every statement in
    ``text`` is plannable and read the same whichever way ``standard_conforming_strings`` was
    set; otherwise the first statement's command tag and ``(text not shown)``."""
    if text.strip() == NO_PRIVILEGE:
        return NO_PRIVILEGE
    tokens = tokenize(text)
    statements = _statements(tokens)
    if not statements:
        return ""
    hidden = next((statement for statement in statements if not _plannable(statement)), None)
    if hidden is not None:
        return f"{command_tag(hidden)} {HIDDEN}"
    masked = _masked(tokens)
    if not all(token.closed for token in tokens) or masked != _masked(tokenize(text, backslash_escapes=True)):
        return f"{command_tag(statements[0])} {HIDDEN}"
    return masked


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, between two tokens, with "…" when cut."""
    if len(text) <= limit:
        return text
    kept = ""
    for token in tokenize(text):
        if len(kept) + len(token.text) > limit - 1:
            break
        kept += token.text
    return (kept.rstrip() or text[:limit - 1]) + "…"


def sanitize_statement(text: str | None, limit: int = MAX_STATEMENT_CHARS,
                       redact: Callable[[str], str] | None = None) -> str:
    """One line of a statement's text that is safe to show: masked (``mask_statement``), then
    known secrets redacted (``redact``, e.g. a ``lib.redact.Redactor``), then cut to ``limit``
    (a command tag that does not fit with "(text not shown)" loses that first)."""
    masked = mask_statement(text or "")
    if redact is not None:
        masked = " ".join(redact(masked).split())
    if masked.endswith(HIDDEN) and len(masked) > limit:
        masked = masked.removesuffix(HIDDEN).rstrip()
    return shorten(masked, limit)

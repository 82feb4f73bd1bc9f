"""How each ``[sync.mask]`` rule is written in SQL (the server computes every masked value).

Contract: :func:`expression` returns the :class:`psycopg.sql.Composable` for one
rule on one column; every identifier goes through :class:`~psycopg.sql.Identifier`
and no ``%`` ever reaches the query text (psycopg would read it as a placeholder
in a query with parameters), so the expressions fit any ``SELECT`` or ``COPY``.
All hash-based rules derive from ``sha256(key || value)`` (built-in since
PostgreSQL 11, no pgcrypto). :class:`Secret` stands for the key: the query reads it
from the session (``current_setting``), never from its own text.
:mod:`pgferry.sync.masking` validates rules and decides which expression goes where.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from psycopg import sql

from pgferry.pg.catalog_types import Column

_TEXT_OIDS = {25, 1043, 1042, 19}  # text, varchar, bpchar, name
_FIRST_USER_OID = 16384  # FirstNormalObjectId: built-in types have smaller oids
HASH_TYPES = {"uuid": 2950, "bigint": 20, "bytea": 17}
_LEN_RE = re.compile(r"^(?:character varying|character|varchar|char)\((\d+)\)")

FIRST_NAMES = (
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Dennis",
    "Margaret",
    "Ken",
    "Radia",
    "John",
    "Hedy",
    "Tim",
    "Katherine",
)
LAST_NAMES = (
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Ritchie",
    "Hamilton",
    "Thompson",
    "Perlman",
    "Backus",
    "Lamarr",
    "Berners",
    "Johnson",
)
# the longest name the ``name`` rule can produce
_NAME_LEN = max(map(len, FIRST_NAMES)) + 1 + max(map(len, LAST_NAMES)) + 1 + 10
OUT_LEN = {
    "email": 2 + 16 + len("@example.invalid"),
    "phone": 7 + 12,
    "name": _NAME_LEN,
    "hash": 16,
}

KEY_MARK = "pgferry_mask_key_7f3a"
COL_MARK = "pgferry_mask_col_7f3a"


def text_literal(value: str) -> sql.Composable:
    """A text literal that holds no ``%``, so it survives a query with parameters too.

    psycopg does not escape ``%`` inside :class:`psycopg.sql.Literal`; a query that is
    later executed with parameters would take it for a placeholder.
    """
    if "%" not in value:
        return sql.Literal(value)
    return sql.SQL("convert_from(decode({}, 'hex'), 'UTF8')").format(
        sql.Literal(value.encode().hex())
    )


class Secret(sql.Composable):
    """The secret, as the SQL that reads it: ``current_setting('pgferry.mask_key')``.

    The key itself never enters SQL text (where ``pg_stat_activity`` and the server
    log of a failing query would show it): each source session receives it once as
    a bound parameter of ``set_config`` (:func:`pgferry.sync.session.pin`). The
    object keeps the key only so callers can tell whether one was given; its
    ``repr`` never shows it.
    """

    def __init__(self, key: str) -> None:
        super().__init__(key)

    def as_bytes(self, context: Any = None) -> bytes:
        return b"pg_catalog.current_setting('pgferry.mask_key')"

    def __repr__(self) -> str:
        return "Secret('***')"


def is_text(col: Column) -> bool:
    return col.type_oid in _TEXT_OIDS or col.type.split("(")[0] in (
        "text",
        "character varying",
        "character",
        "citext",
        "name",
    )


def user_type(col: Column) -> bool:
    """A type made by the user or an extension (a domain over text, citext): the server
    decides whether the masked text fits it (the expression is cast; :func:`probe` checks)."""
    return col.type_oid >= _FIRST_USER_OID


def max_len(col: Column) -> int | None:
    m = _LEN_RE.match(col.type)
    return int(m.group(1)) if m else None


def _digest(col: sql.Composable, key: sql.Composable) -> sql.Composed:
    """``sha256(key || value)`` as bytea: the one hash every rule derives from."""
    return sql.SQL("sha256(convert_to(CAST({} AS text) || CAST({} AS text), 'UTF8'))").format(
        key, col
    )


def _hex(col: sql.Composable, key: sql.Composable, n: int = 64) -> sql.Composed:
    return sql.SQL("left(encode({}, 'hex'), {})").format(_digest(col, key), sql.Literal(n))


def _array(values: Sequence[str]) -> sql.Composed:
    return sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(map(sql.Literal, values)))


def expression(kind: str, arg: str, col: Column, key: sql.Composable) -> sql.Composable:
    """The SQL of rule ``kind`` (with ``fixed:``/``sql:`` argument ``arg``) for ``col``."""
    c = sql.Identifier(col.name)
    ctype = sql.SQL(col.type)  # format_type() output: a valid, already-quoted type name
    if kind == "email":
        return sql.SQL("'u_' || {} || '@example.invalid'").format(_hex(c, key, 16))
    if kind == "keep_domain_email":
        return sql.SQL(
            "'u_' || {} || '@' || coalesce(substring(CAST({} AS text) from '@([^@]*)$'), "
            "'example.invalid')"
        ).format(_hex(c, key, 16), c)
    if kind == "name":
        d = _digest(c, key)
        return sql.SQL(
            "({first})[1 + mod(get_byte({d}, 0), {nf})] || ' ' || "
            "({last})[1 + mod(get_byte({d}, 1), {nl})] || ' ' || "
            "encode(substring({d} from 3 for 5), 'hex')"
        ).format(
            first=_array(FIRST_NAMES),
            last=_array(LAST_NAMES),
            d=d,
            nf=sql.Literal(len(FIRST_NAMES)),
            nl=sql.Literal(len(LAST_NAMES)),
        )
    if kind == "phone":
        # 48 bits of the hash as a number, shown as 12 decimal digits
        return sql.SQL(
            "'+1-555-' || lpad(CAST(mod(CAST(CAST(('x' || {}) AS bit(48)) AS bigint), "
            "1000000000000) AS text), 12, '0')"
        ).format(_hex(c, key, 12))
    if kind == "hash":
        if col.type_oid == HASH_TYPES["uuid"] or col.type == "uuid":
            return sql.SQL("CAST({} AS uuid)").format(_hex(c, key, 32))
        if col.type_oid == HASH_TYPES["bigint"] or col.type == "bigint":
            return sql.SQL(
                "CAST(CAST(('x' || {}) AS bit(64)) AS bigint) & 9223372036854775807"
            ).format(_hex(c, key, 16))
        if col.type_oid == HASH_TYPES["bytea"] or col.type == "bytea":
            return _digest(c, key)
        n = min(64, max_len(col) or 64)
        return sql.SQL("CAST({} AS {})").format(_hex(c, key, n), ctype)
    if kind == "redact":
        return sql.SQL("repeat('*', char_length({}))").format(c)
    if kind == "null":
        return sql.SQL("CAST(NULL AS {})").format(ctype)
    if kind == "fixed":
        return sql.SQL("CAST({} AS {})").format(text_literal(arg), ctype)
    # sql: the expression was parsed and deparsed by pglast in compile_rules
    pieces: list[sql.Composable] = []
    for i, chunk in enumerate(arg.split(KEY_MARK)):
        if i:
            pieces.append(sql.SQL("CAST({} AS text)").format(key))
        for j, part in enumerate(chunk.split(COL_MARK)):
            if j:
                pieces.append(c)
            pieces.append(sql.SQL(part))
    return sql.SQL("CAST(({}) AS {})").format(sql.Composed(pieces), ctype)

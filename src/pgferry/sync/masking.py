"""Masking personal data inside the source SELECT: ``[sync.mask]`` rules as SQL expressions.

Contract:
- :func:`compile_rules` validates ``[sync.mask]`` (``"schema.table.column" = "rule"``,
  fnmatch wildcards per part) and returns :class:`MaskRules`; an unknown rule, a
  malformed pattern or an ``sql:`` expression that is not exactly one expression
  raises :class:`~pgferry.errors.BadInput` naming the key (exit 2, before any write).
- :func:`mask_expressions` turns the rules that apply to one table into
  ``{column: psycopg.sql.Composable}``. The copy puts each expression in its
  source ``SELECT`` (``expr AS column``), so raw values never leave the source
  server. A rule that does not fit its column (``email`` on an integer, ``null``
  on a NOT NULL target column, a varchar too short for the masked value, a key
  column) raises BadInput naming the column.
- Masked values are deterministic under the secret ``PGFERRY_MASK_KEY``
  (:func:`mask_key`): ``sha256(key || value)``, computed by the server with
  built-ins only (PostgreSQL 11+, no pgcrypto). The same input gives the same
  output in every table and every run, and the hash-based rules (``email``,
  ``keep_domain_email``, ``name``, ``phone``, ``hash``) keep unique values unique
  (64 bits or more of the hash). NULL stays NULL.
- :func:`personal_columns_unmasked` lists columns whose names look personal
  (email, phone, name, address, iban, birth, ...) and that no rule covers;
  :func:`refuse_unmasked` turns that list into the policy refusal (exit 4) for a
  sync from a protected to an unprotected environment.

The SQL of each rule lives in :mod:`pgferry.sync.mask_sql`. The secret never
enters SQL text: the expressions read it with ``current_setting('pgferry.mask_key')``
and :func:`set_key` (or :func:`pgferry.sync.session.pin`) hands it to a session
as a bound parameter.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from psycopg import sql

from pgferry.errors import BadInput
from pgferry.pg.catalog_types import Column, Table
from pgferry.sync.mask_sql import (
    COL_MARK,
    HASH_TYPES,
    KEY_MARK,
    OUT_LEN,
    Secret,
    expression,
    is_text,
    max_len,
    user_type,
)

KEY_ENV = "PGFERRY_MASK_KEY"
MIN_KEY_LENGTH = 16

#: rule name -> what it does (the documentation table in docs/sync.md follows this)
RULES: dict[str, str] = {
    "email": "'u_' + 16 hex chars of the hash + '@example.invalid'",
    "keep_domain_email": "'u_' + 16 hex chars of the hash + '@' + the original domain",
    "name": "a name from a built-in list + 10 hex chars of the hash",
    "phone": "'+1-555-' + 12 digits derived from the hash",
    "hash": "hex sha256 (text), a uuid from the hash (uuid), 63 bits of it (bigint)",
    "redact": "'*' repeated to the value's length",
    "null": "NULL (the target column must allow it)",
    "fixed": "fixed:<value>, the value cast to the column type",
    "sql": "sql:<expression>, any SQL expression; {col} is the column, {key} the secret",
}
_NEEDS_KEY = {"email", "keep_domain_email", "name", "phone", "hash"}
_COLLAPSING = {"redact", "null", "fixed"}  # rules that do not keep unique values unique
_TEXT_ONLY = {"email", "keep_domain_email", "name", "phone", "redact"}


@dataclass(frozen=True)
class MaskRule:
    """One ``[sync.mask]`` entry: a ``schema.table.column`` pattern and its rule."""

    pattern: str
    kind: str  # a key of RULES
    arg: str = ""  # the value of fixed:, the (normalized) expression of sql:
    raw: str = ""  # the rule as written in the config
    #: environments the rule masks into (empty: wherever data leaves a protected env)
    targets: tuple[str, ...] = ()

    def applies(self, source: Any, target: Any) -> bool:
        """Whether this rule masks a sync from ``source`` into ``target`` (Targets)."""
        if self.targets:
            return target.name in self.targets
        return bool(source.protected and not target.protected)

    @property
    def parts(self) -> tuple[str, str, str]:
        s, t, c = self.pattern.split(".")
        return s, t, c

    @property
    def spec(self) -> str:
        """The rule as written in the config (``fixed:x``, ``sql:...``, ``email``)."""
        return self.raw or (f"{self.kind}:{self.arg}" if self.kind == "fixed" else self.kind)

    @property
    def specificity(self) -> int:
        """Characters that are not wildcards: an exact key beats ``*.*.email``."""
        return sum(ch not in "*?[]" for ch in self.pattern)

    def matches(self, schema: str, table: str, column: str) -> bool:
        return all(
            fnmatchcase(v, p) for v, p in zip((schema, table, column), self.parts, strict=True)
        )


@dataclass(frozen=True)
class MaskRules:
    """The compiled ``[sync.mask]`` table."""

    rules: tuple[MaskRule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rules)

    @property
    def needs_key(self) -> bool:
        return any(
            r.kind in _NEEDS_KEY or (r.kind == "sql" and "{key}" in r.arg) for r in self.rules
        )

    def direction(self, source: Any, target: Any) -> MaskRules:
        """The rules that apply from ``source`` into ``target`` (:class:`Target` objects).

        A rule applies where personal data leaves a protected environment for an
        unprotected one, or where its ``targets`` name the target. A rule never
        masks into a protected target: one that names it is BadInput (exit 2),
        before any connection writes.
        """
        bad = [r for r in self.rules if target.protected and target.name in r.targets]
        if bad:
            raise BadInput(
                f"[sync.mask] {bad[0].pattern!r} names the protected environment "
                f"{target.name!r} in its targets: masking would overwrite its real "
                "data with masked values; remove it from targets (masking is for "
                "copies that leave a protected environment)",
                key=bad[0].pattern,
            )
        return MaskRules(tuple(r for r in self.rules if r.applies(source, target)))

    def rule_for(self, table_qualname: str, column: str) -> MaskRule | None:
        """The most specific rule for a column (ties: the one written first), or None."""
        schema, _, table = table_qualname.partition(".")
        hits = [r for r in self.rules if r.matches(schema, table, column)]
        return max(hits, key=lambda r: r.specificity, default=None)

    def unused(self, tables: Iterable[Table]) -> list[str]:
        """Warnings for patterns that match no column of ``tables``."""
        cols = [(t.schema, t.name, c.name) for t in tables for c in t.columns]
        return [
            f"[sync.mask] {r.pattern!r} matches no column of the synced tables"
            for r in self.rules
            if not any(r.matches(*c) for c in cols)
        ]

    def warnings(self, tables: Iterable[Table]) -> list[str]:
        """What the plan should warn about: unused patterns, and rules that collapse values
        (``redact``, ``null``, ``fixed:``) on a column under a UNIQUE constraint, whose
        rows would then be dead-lettered."""
        ts = list(tables)
        out = self.unused(ts)
        for t in ts:
            for cols in t.unique_keys:
                for c in cols:
                    r = self.rule_for(t.qualname, c)
                    if r is not None and r.kind in _COLLAPSING:
                        out.append(
                            f"[sync.mask] {r.pattern!r} = {r.spec!r} on "
                            f"{t.qualname}.{c}, which is under a UNIQUE constraint: "
                            f"equal masked values will be dead-lettered; use a hash-based "
                            f"rule (email, name, phone, hash) to keep values unique"
                        )
        return out


def _parse_expression(key: str, text: str) -> str:
    """``text`` as one SQL expression, deparsed by pglast (comments and tricks gone)."""
    import pglast  # only for sql: rules (the parser costs ~70 ms to import)
    from pglast.stream import RawStream

    body = text.replace("{col}", COL_MARK).replace("{key}", KEY_MARK)
    if not body.strip():
        raise BadInput(f"[sync.mask] {key!r}: sql: needs an expression, e.g. sql:left({{col}}, 1)")
    try:
        stmts = pglast.parse_sql(f"SELECT (\n{body}\n)")
    except pglast.parser.ParseError as e:
        raise BadInput(f"[sync.mask] {key!r}: sql: is not an SQL expression ({e})") from None
    stmt: Any = stmts[0].stmt if len(stmts) == 1 else None
    clauses = (
        "fromClause",
        "whereClause",
        "groupClause",
        "havingClause",
        "sortClause",
        "limitCount",
        "limitOffset",
        "windowClause",
        "withClause",
        "intoClause",
        "distinctClause",
        "valuesLists",
        "lockingClause",
        "larg",
    )
    if (
        type(stmt).__name__ != "SelectStmt"
        or len(stmt.targetList or ()) != 1
        or any(getattr(stmt, c, None) for c in clauses)
    ):
        raise BadInput(
            f"[sync.mask] {key!r}: sql: must be exactly one expression, not a statement or a list"
        )
    text = str(RawStream()(stmt.targetList[0].val))
    if "%" in text:  # psycopg would read it as a placeholder in a query with parameters
        raise BadInput(
            f"[sync.mask] {key!r}: sql: may not contain '%'; use mod(a, b) for the "
            f"modulo and chr(37) for a literal percent sign"
        )
    return text


def compile_rules(mask_config: Mapping[str, Any]) -> MaskRules:
    """Validate ``[sync.mask]`` and compile it; BadInput names the first bad key.

    A value is the rule (``"email"``) or a table ``{ rule = "email", targets = [...] }``
    (:class:`pgferry.config.sections.MaskRuleConfig`).
    """
    rules = []
    for pattern, value in mask_config.items():
        targets: tuple[str, ...] = ()
        raw: Any = value
        if not isinstance(value, str) and hasattr(value, "rule"):
            raw, targets = value.rule, tuple(value.targets)
        parts = pattern.split(".")
        if len(parts) != 3 or not all(parts):
            raise BadInput(
                f'[sync.mask] {pattern!r}: the key must be "schema.table.column" '
                f'(wildcards allowed, e.g. "*.*.email")',
                key=pattern,
            )
        if not isinstance(raw, str):
            raise BadInput(f"[sync.mask] {pattern!r}: the rule must be a string", key=pattern)
        kind, sep, arg = raw.strip().partition(":")
        kind = kind.strip()
        if kind not in RULES:
            known = ", ".join(k + ":..." if k in ("fixed", "sql") else k for k in RULES)
            raise BadInput(
                f"[sync.mask] {pattern!r}: unknown rule {raw!r} (known: {known})", key=pattern
            )
        if kind in ("fixed", "sql") and not sep:
            raise BadInput(
                f"[sync.mask] {pattern!r}: {kind} needs a value, e.g. "
                f"{'fixed:n/a' if kind == 'fixed' else 'sql:left({col}, 1)'}",
                key=pattern,
            )
        if kind not in ("fixed", "sql") and sep:
            raise BadInput(f"[sync.mask] {pattern!r}: rule {kind!r} takes no argument", key=pattern)
        if kind == "sql":
            arg = _parse_expression(pattern, arg)
        rules.append(MaskRule(pattern, kind, arg, raw.strip(), targets))
    return MaskRules(tuple(rules))


def mask_key(dotenv: Mapping[str, str] | None = None) -> str:
    """The secret from ``PGFERRY_MASK_KEY`` (process environment, then ``dotenv``)."""
    key = os.environ.get(KEY_ENV) or (dotenv or {}).get(KEY_ENV) or ""
    if len(key) < MIN_KEY_LENGTH:
        what = "is not set" if not key else f"is shorter than {MIN_KEY_LENGTH} characters"
        raise BadInput(
            f"{KEY_ENV} {what}: masking rules need a secret key so masked values are "
            f"deterministic and cannot be guessed; set it in the environment or .env"
        )
    return key


def set_key(conn: Any, key: str) -> None:
    """Give ``conn``'s session the masking key (a bound parameter, never SQL text)."""
    conn.execute("SELECT set_config('pgferry.mask_key', %s, false)", [key])


def _check_fit(
    where: str, rule: MaskRule, col: Column, target: Column | None, key_columns: Sequence[str]
) -> None:
    if col.name in key_columns:
        raise BadInput(
            f"[sync.mask] {rule.pattern!r} masks {where}, a key column of the sync; "
            f"mask a non-key column or sync this table with another key"
        )
    if rule.kind in _TEXT_ONLY and not (is_text(col) or user_type(col)):
        raise BadInput(
            f"[sync.mask] {rule.pattern!r}: rule {rule.kind!r} needs a text column, "
            f"but {where} is {col.type}"
        )
    if (
        rule.kind == "hash"
        and not (is_text(col) or user_type(col))
        and (col.type not in HASH_TYPES)
    ):
        raise BadInput(
            f"[sync.mask] {rule.pattern!r}: rule 'hash' needs a text, uuid, bigint or "
            f"bytea column, but {where} is {col.type}"
        )
    limits = [
        n for c in (col, target) if c is not None and is_text(c) if (n := max_len(c)) is not None
    ]
    limit = min(limits, default=None)
    need = OUT_LEN.get("email" if rule.kind == "keep_domain_email" else rule.kind)
    if limit is not None and need is not None and limit < need:
        raise BadInput(
            f"[sync.mask] {rule.pattern!r}: {where} is {col.type}, too short for the "
            f"{rule.kind!r} rule's {need} characters; widen it or use another rule"
        )
    nn = target if target is not None else col
    if rule.kind == "null" and nn.not_null:
        raise BadInput(
            f"[sync.mask] {rule.pattern!r}: rule 'null' on {where}, but the target "
            f"column is NOT NULL; use fixed:<value> or another rule"
        )


def mask_expressions(
    rules: MaskRules,
    table_qualname: str,
    columns: Sequence[Column],
    key: str | None,
    *,
    target_columns: Sequence[Column] | None = None,
    key_columns: Sequence[str] = (),
) -> dict[str, sql.Composable]:
    """``{column: expression}`` for the masked columns of one table (others are absent).

    Args:
        rules: from :func:`compile_rules`.
        table_qualname: ``"schema.table"``.
        columns: the columns the source SELECT reads.
        key: the secret (:func:`mask_key`); may be None only when no rule needs it.
        target_columns: the target's columns, to check NOT NULL and lengths there too.
        key_columns: the sync key of the table; masking one of them is refused.
    """
    out: dict[str, sql.Composable] = {}
    tgt = {c.name: c for c in target_columns or ()}
    applied = [(c, r) for c in columns if (r := rules.rule_for(table_qualname, c.name))]
    if not applied:
        return out
    needs = any(r.kind in _NEEDS_KEY or (r.kind == "sql" and KEY_MARK in r.arg) for _, r in applied)
    if needs and not key:
        raise BadInput(f"{KEY_ENV} is not set: masking rules need a secret key")
    secret = Secret(key or "")
    for col, rule in applied:
        if col.generated:
            continue  # generated columns are not copied at all
        where = f"{table_qualname}.{col.name}"
        _check_fit(where, rule, col, tgt.get(col.name), key_columns)
        expr = expression(rule.kind, rule.arg, col, secret)
        if rule.kind in _TEXT_ONLY and not is_text(col):  # a domain over text, citext
            expr = sql.SQL("CAST(({}) AS {})").format(expr, sql.SQL(col.type))
        out[col.name] = expr
    return out


def probe(
    conn: Any,
    table_qualname: str,
    columns: Sequence[Column],
    masks: Mapping[str, sql.Composable],
    rules: MaskRules,
) -> None:
    """Have the source server evaluate each mask on one row (``LIMIT 1``; only a count
    comes back).

    Catches what only the server knows before any write: a ``fixed:`` value that does
    not cast to the column type, an ``sql:`` expression naming an unknown column or
    function, an aggregate, masked text that a domain type refuses. BadInput names the
    rule; the transaction is left usable (the probe runs in a savepoint).
    """
    import psycopg

    from pgferry.pg.errors import map_db_error
    from pgferry.sync.personal import HIDDEN

    schema, _, name = table_qualname.partition(".")
    first = sql.Identifier(columns[0].name) if columns else sql.SQL("1")
    for column, expr in masks.items():
        # the outer count() forces evaluation; the plain first column makes an aggregate
        # in the expression an error, as it would be in the copy's SELECT
        q = sql.SQL(
            "SELECT count({c}) FROM (SELECT {first}, {expr} AS {c} FROM {t} LIMIT 1) AS probe"
        ).format(c=sql.Identifier(column), first=first, expr=expr, t=sql.Identifier(schema, name))
        try:
            with conn.transaction():
                conn.execute(q)
        except psycopg.Error as e:
            rule = rules.rule_for(table_qualname, column)
            spec = f"{rule.pattern!r} = {rule.spec!r}" if rule else column
            # (the one row read is unmasked: what the server says of its value is left out)
            msg = map_db_error(e, hidden=HIDDEN).message
            raise BadInput(
                f"[sync.mask] {spec} does not work on {table_qualname}.{column}: {msg}",
                sqlstate=e.sqlstate or "",
            ) from None


def select_list(columns: Sequence[Column], masks: Mapping[str, sql.Composable]) -> sql.Composed:
    """``col1, expr AS col2, ...``: the source SELECT list with masks in place."""
    items = [
        sql.SQL("{} AS {}").format(masks[c.name], sql.Identifier(c.name))
        if c.name in masks
        else sql.Identifier(c.name)
        for c in columns
    ]
    return sql.SQL(", ").join(items)


# the gate lives in its own module; re-exported here as part of the masking API
from pgferry.sync.personal import (  # noqa: E402
    personal_columns_unmasked,
    personal_kind,
    refuse_unmasked,
    unmasked_message,
)

__all__ = [
    "KEY_ENV",
    "RULES",
    "MaskRule",
    "MaskRules",
    "compile_rules",
    "mask_expressions",
    "mask_key",
    "personal_columns_unmasked",
    "personal_kind",
    "probe",
    "refuse_unmasked",
    "select_list",
    "unmasked_message",
]

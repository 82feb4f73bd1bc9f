"""The target side of a sync: staging tables, what a write reports, the user triggers.

Contract: every function runs inside the caller's open transaction on the
target connection and never commits. Rows arrive in a temporary staging table
(:func:`staging`, filled by ``COPY``; keys alone in :func:`key_staging`), created once
per transaction and then truncated for each batch (:func:`temp_table`).
:mod:`pgferry.sync.upserts` applies them (and reports :class:`Counts`);
:mod:`pgferry.sync.deletes` removes what the source no longer has. Both write as the
:class:`WriteContext` and, when the table keeps them, save what they change in
``pgferry.before_images`` (:data:`IMAGES`, :func:`key_json`). :func:`triggers` disables
and re-enables the table's user triggers inside the unit's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgferry.pg import errors as pgerrors
from pgferry.sync.copy import cols, table_ident
from pgferry.sync.plan import TablePlan
from pgferry.sync.result import DeadLetter

STAGE = "pgferry_stage"
KEYS = "pgferry_keys"


# errors a single row can cause (data exceptions, integrity violations, errors raised by
# triggers and functions: pgferry.pg.errors.ROW). Anything else (a cancel, a lost
# connection, disk full, a permission) fails the batch as a whole instead of being bisected.
row_error = pgerrors.row_error


@dataclass
class Counts:
    inserted: int = 0
    updated: int = 0
    staged: int = 0
    dead: list[DeadLetter] = field(default_factory=list)
    #: rows of a self-referencing table put aside until the rest of the table is written
    later: int = 0

    @property
    def unchanged(self) -> int:
        return self.staged - self.inserted - self.updated - len(self.dead) - self.later


@dataclass
class WriteContext:
    """Who is writing: for dead-letter rows."""

    run_id: str
    source: str


def staging(conn: psycopg.Connection[Any], t: TablePlan, name: str = STAGE) -> sql.Identifier:
    """An empty temp table shaped like ``t``'s synced columns (dropped at commit).

    Columns in ``t.text_columns`` are ``text`` here: their values are cast to the
    target type in the upsert, row by row, so a value the target refuses (a label
    its enum lacks, a domain check, a text that is no number) fails one row, which
    is dead-lettered, instead of the whole ``COPY``.
    """
    items = [
        sql.SQL("CAST({c} AS text) AS {c}").format(c=sql.Identifier(c))
        if c in t.text_columns
        else sql.Identifier(c)
        for c in t.columns
    ]
    return temp_table(
        conn,
        f"{name}_{t.order}",
        sql.SQL("SELECT {} FROM {} WITH NO DATA").format(sql.SQL(", ").join(items), table_ident(t)),
    )


def temp_table(conn: psycopg.Connection[Any], name: str, shape: sql.Composable) -> sql.Identifier:
    """The temp table ``name``, made empty: created once per transaction, then truncated.

    A unit is one transaction: a table dropped and created again for every batch
    would pile up catalog entries and locks until the commit (a 2M-row full sync
    took 1.7x as long).
    """
    ident = sql.Identifier(name)
    row = conn.execute("SELECT to_regclass(%s)", [f"pg_temp.{name}"]).fetchone()
    if row and row[0]:
        conn.execute(sql.SQL("TRUNCATE {}").format(ident))
    else:
        conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS {}").format(ident, shape))
    return ident


def key_staging(conn: psycopg.Connection[Any], t: TablePlan) -> sql.Identifier:
    return temp_table(
        conn,
        f"{KEYS}_{t.order}",
        sql.SQL("SELECT {} FROM {} WITH NO DATA").format(cols(t.key), table_ident(t)),
    )


def key_json(t: TablePlan, alias: str) -> sql.Composable:
    keys = t.key or tuple(t.columns)
    return sql.SQL("jsonb_build_object({})").format(
        sql.SQL(", ").join(
            sql.SQL("{}, {}").format(sql.Literal(k), sql.Identifier(alias, k)) for k in keys
        )
    )


def typed_values(
    t: TablePlan, prefix: str | None = None, names: list[str] | None = None
) -> sql.Composable:
    """The staged columns (``names``, default all) as the target's types (text columns
    cast back)."""
    out: list[sql.Composable] = []
    for c in t.columns if names is None else names:
        ref: sql.Composable = sql.Identifier(prefix, c) if prefix else sql.Identifier(c)
        if c in t.text_columns:
            # the type text is the target's own format_type() output, not user input
            ref = sql.SQL("CAST({} AS {})").format(ref, sql.SQL(t.column_types[c]))
        out.append(ref)
    return sql.SQL(", ").join(out)


def fingerprint(alias: str) -> sql.Composable:
    """The fingerprint ``sync revert`` checks a row against: md5 of the row as jsonb."""
    return sql.SQL("md5(to_jsonb({})::text)").format(sql.Identifier(alias))


IMAGES = sql.SQL(
    "INSERT INTO pgferry.before_images (run_id, source, table_name, action, key,"
    " row_data, after_hash) "
)


def triggers(conn: psycopg.Connection[Any], t: TablePlan, enable: bool) -> None:
    """Disable (or re-enable as they were) the table's firing user triggers, by name.

    Runs inside the unit's transaction, so a crash can never leave them disabled;
    triggers the user had disabled stay disabled, ENABLE ALWAYS ones come back so.
    """
    if t.triggers != "disable" or not t.user_triggers:
        return
    for name in t.user_triggers:
        if not enable:
            verb = sql.SQL("DISABLE")
        elif t.trigger_modes.get(name) == "A":
            verb = sql.SQL("ENABLE ALWAYS")
        else:
            verb = sql.SQL("ENABLE")
        on, trigger = table_ident(t), name
        if name in t.trigger_tables:  # a partition's own trigger
            leaf, trigger = t.trigger_tables[name]
            on = sql.Identifier(*leaf.split(".", 1))
        conn.execute(
            sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(on, verb, sql.Identifier(trigger))
        )

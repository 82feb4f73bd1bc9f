"""Rows whose unique values move between rows: written together, delete and insert at once.

Contract: :func:`write` takes the staged rows an upsert could not write alone because a
unique or exclusion constraint refused their values (23505, 23P01: another row holds
them) and writes them together, in one statement that deletes their target rows and
inserts the source's (a *replace*), so that values which swap or rotate between rows
(positions in a list, slugs, e-mail addresses) or pass from one row to another (a chain)
move the way the source moved them in one transaction. PostgreSQL checks a constraint
that is not ``DEFERRABLE`` row by row, so no order of single-row updates can write a
swap; a replace can: every row the statement deletes has left the constraint's index
before the first row is inserted (the inserts wait for the count of the deleted rows).

A replace is a delete and an insert, which a ``NO ACTION`` foreign key (the default)
accepts: it checks a referenced key at the end of the statement, when the row is back.
So a replace is tried only where nothing but the rows can see the difference
(:func:`refused_because`): the table has a key, no user trigger fires on it (none, or
disabled by the sync's ``triggers = "disable"``), no foreign key deletes, nulls or
refuses at once (``ON DELETE CASCADE | SET NULL | SET DEFAULT | RESTRICT``) the rows
referencing it, and no ``GENERATED ALWAYS`` identity column outside the key keeps the
target's own numbers (an update leaves them; an insert would not).

The upserts (:mod:`pgferry.sync.upserts`) put such rows aside, batch after batch;
:func:`pgferry.sync.flush.flush_clashes` hands them here once the table's other rows are
written (where a replace is refused, it tries each row alone once more instead). A
group the server refuses is tried again without the rows whose values a row outside it
holds (:func:`_for_good`: a plain unique index says which),
else halved, until the rows it refuses are alone: they stay dead letters, as before,
with the reason when no replace was tried. Runs in the caller's transaction, each try
in a savepoint; never commits. With before-images a replaced row is saved as the update
it is; ``sync revert`` restores swapped rows the same way (:mod:`pgferry.sync.revert`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from pgferry.pg.connect import is_transient
from pgferry.sync.copy import cols, table_ident
from pgferry.sync.plan import TablePlan
from pgferry.sync.write import (
    IMAGES,
    Counts,
    WriteContext,
    fingerprint,
    key_json,
    row_error,
    typed_values,
)

#: a row (its number in the numbered staging table) and the error that refused it alone
Refused = tuple[int, psycopg.Error]


def refused_because(
    conn: psycopg.Connection[Any], table: sql.Composable, key: Sequence[str]
) -> str | None:
    """Why a replace of rows of ``table`` would change more than those rows (None: it
    would not), as the catalog says inside the caller's transaction (where a sync has
    disabled the table's triggers)."""
    if not key:
        return "the table has no key"
    row = conn.execute(
        sql.SQL(
            "SELECT has_table_privilege({t}, 'DELETE') AND has_table_privilege({t}, 'INSERT')"
        ).format(t=sql.Literal(table.as_string(conn)))
    ).fetchone()
    if not (row and row[0]):
        return "this role may not delete from the table and insert into it"
    tree = _tree(conn, table)
    row = conn.execute(
        sql.SQL(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled IN ('O', 'A') "
            "AND tgrelid IN ({}) ORDER BY 1 LIMIT 1"
        ).format(tree)
    ).fetchone()
    if row:
        return f"the table's user trigger {row[0]} would fire on them"
    row = conn.execute(
        sql.SQL(
            "SELECT c.conname::text, c.confdeltype::text, c.conrelid::regclass::text "
            "FROM pg_constraint c WHERE c.contype = 'f' AND c.confdeltype <> 'a' "
            "AND c.confrelid IN ({}) ORDER BY 1 LIMIT 1"
        ).format(tree)
    ).fetchone()
    if row:
        what = {"c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT", "r": "RESTRICT"}[row[1]]
        return f"the foreign key {row[0]} of {row[2]} (ON DELETE {what}) would act on the delete"
    return None


def _tree(conn: psycopg.Connection[Any], table: sql.Composable) -> sql.Composable:
    """The table and, when it is partitioned, its partitions (pg_partition_tree lists no
    row for a table outside a partition tree)."""
    return sql.SQL(
        "SELECT {t}::regclass UNION SELECT relid FROM pg_partition_tree({t}::regclass)"
    ).format(t=sql.Literal(table.as_string(conn)))


def refused(conn: psycopg.Connection[Any], t: TablePlan) -> str | None:
    """Why rows of ``t`` are not replaced (:func:`refused_because`, and an identity column
    the target numbers itself); None: they may be."""
    why = refused_because(conn, table_ident(t), t.key)
    if why is None and t.always_columns:
        # an update keeps the target's value there (it cannot be set); an insert would not
        why = f"the insert would renumber the GENERATED ALWAYS column {t.always_columns[0]}"
    return why


def write(
    conn: psycopg.Connection[Any],
    t: TablePlan,
    ctx: WriteContext,
    numbered: sql.Identifier,
    part: list[int],
    counts: Counts,
) -> list[Refused]:
    """Replace the rows ``part`` of ``numbered`` together (the caller asked
    :func:`refused` first); when the server refuses them, leave out the rows that clash
    with a row outside them (:func:`_for_good`) and try again, else halve them. The rows
    still refused, each with the error that refused it."""
    left: list[Refused] = []
    while part:
        try:
            with conn.transaction():
                ins, upd = _replace(conn, t, ctx, numbered, part)
            counts.inserted += ins
            counts.updated += upd
            return left
        except psycopg.Error as e:
            if is_transient(e) or conn.broken or not row_error(e):
                raise
            if len(part) == 1:
                return [*left, (part[0], e)]
            bad = _for_good(conn, t, numbered, part, e)
            left += [(n, e) for n in part if n in bad]
        if not bad:
            break
        part = [n for n in part if n not in bad]
    mid = len(part) // 2
    if not mid:
        return left
    return (
        left
        + write(conn, t, ctx, numbered, part[:mid], counts)
        + write(conn, t, ctx, numbered, part[mid:], counts)
    )


def _for_good(
    conn: psycopg.Connection[Any],
    t: TablePlan,
    numbered: sql.Identifier,
    ns: list[int],
    e: psycopg.Error,
) -> set[int]:
    """The rows of ``ns`` whose values of the unique index that refused them (``e``) a
    row outside ``ns`` holds, or another row of ``ns`` too: no replace of ``ns`` can write
    them. Empty when that cannot be told (an exclusion constraint, an index on
    expressions or with a predicate, a column not synced)."""
    name = e.diag.constraint_name if isinstance(e, psycopg.errors.UniqueViolation) else None
    if not name:
        return set()
    row = conn.execute(
        sql.SQL(
            "SELECT array_agg(a.attname::text ORDER BY k.o) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid CROSS JOIN LATERAL unnest(i.indkey) "
            "WITH ORDINALITY AS k(n, o) JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = k.n WHERE c.relname = %s AND i.indpred IS NULL AND "
            "i.indexprs IS NULL AND k.o <= i.indnkeyatts AND i.indrelid IN ({}) "
            "GROUP BY i.indexrelid LIMIT 1"
        ).format(_tree(conn, table_ident(t))),
        [name],
    ).fetchone()
    names: list[str] = list(row[0]) if row and row[0] else []
    if not names or any(c not in t.columns for c in names):
        return set()

    found = conn.execute(
        sql.SQL(
            "SELECT s.pgferry_n FROM {s} s WHERE s.pgferry_n = ANY(%(ns)s) AND (EXISTS (SELECT 1 "
            "FROM {tbl} x WHERE ({xv}) = ({sv}) AND ({xk}) NOT IN (SELECT {k} FROM {s} WHERE "
            "pgferry_n = ANY(%(ns)s))) OR EXISTS (SELECT 1 FROM {s} y WHERE y.pgferry_n = "
            "ANY(%(ns)s) AND y.pgferry_n <> s.pgferry_n AND ({yv}) = ({sv})))"
        ).format(
            s=numbered,
            tbl=table_ident(t),
            xv=cols(names, "x"),
            sv=typed_values(t, "s", names),
            yv=typed_values(t, "y", names),
            xk=cols(t.key, "x"),
            k=cols(t.key),
        ),
        {"ns": ns},
    ).fetchall()
    return {int(r[0]) for r in found}


def _replace(
    conn: psycopg.Connection[Any],
    t: TablePlan,
    ctx: WriteContext,
    numbered: sql.Identifier,
    ns: list[int],
) -> tuple[int, int]:
    """Delete the target rows of the staged rows ``ns`` and insert those rows, in one
    statement: (inserted, updated)."""
    override = sql.SQL(" OVERRIDING SYSTEM VALUE") if t.identity_always else sql.SQL("")
    saved: sql.Composable = sql.SQL("")
    if t.before_images:
        saved = sql.SQL(
            ", saved AS ({images} SELECT %(run)s, %(source)s, %(table)s, CASE WHEN "
            "gone.pgferry_row IS NULL THEN 'insert' ELSE 'update' END, {kj}, "
            "gone.pgferry_row, up.pgferry_h FROM up LEFT JOIN gone ON ({kg}) = ({ku}))"
        ).format(images=IMAGES, kj=key_json(t, "up"), kg=cols(t.key, "gone"), ku=cols(t.key, "up"))
    q = sql.SQL(
        # the inserts read the count of the deleted rows: none starts before every delete
        # is done (a row inserted earlier could meet a value not yet deleted)
        "WITH gone AS (DELETE FROM {tbl} AS pgferry_o WHERE ({k}) IN (SELECT {k} FROM {s} "
        "WHERE pgferry_n = ANY(%(ns)s)) RETURNING {ko}, to_jsonb(pgferry_o) AS pgferry_row), "
        "done AS (SELECT count(*) AS pgferry_c FROM gone), "
        "up AS (INSERT INTO {tbl} AS pgferry_t ({c}){o} SELECT {v} FROM {s}, done "
        "WHERE pgferry_n = ANY(%(ns)s) AND done.pgferry_c >= 0 RETURNING {kt}, {h} AS pgferry_h)"
        "{saved} SELECT count(*) FILTER (WHERE gone.pgferry_row IS NULL), "
        "count(*) FILTER (WHERE gone.pgferry_row IS NOT NULL) "
        "FROM up LEFT JOIN gone ON ({kg}) = ({ku})"
    ).format(
        tbl=table_ident(t),
        k=cols(t.key),
        s=numbered,
        ko=cols(t.key, "pgferry_o"),
        c=cols(t.columns),
        o=override,
        v=typed_values(t),
        kt=cols(t.key, "pgferry_t"),
        h=fingerprint("pgferry_t"),
        saved=saved,
        kg=cols(t.key, "gone"),
        ku=cols(t.key, "up"),
    )
    row = conn.execute(
        q, {"ns": ns, "run": ctx.run_id, "source": ctx.source, "table": t.qualname}
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])

"""``pgferry sync revert RUN_ID``: put back what one sync changed, from its before-images.

Contract: :func:`revert` reads ``pgferry.before_images`` of the run in the
target (rows the run updated or deleted, as they were, and the keys it
inserted, each with the fingerprint of the row the run wrote) and, in one
``REPEATABLE READ`` transaction under the sync locks of those tables
(:mod:`pgferry.sync.locks`), first checks that no row changed since the run:
a row the run wrote must still be exactly that row (same fingerprint), a row it
deleted must still be absent. If one did, nothing is written and
:class:`~pgferry.errors.Refused` (exit 4) names the table, the key and how many
rows changed. Otherwise it inserts again the rows the run deleted and restores
the rows it updated (parents first), deletes the rows it inserted (children
first) — a step a constraint refuses waits for the others (:func:`_run_steps`)
—, deletes the run's before-images and commits. Sequences are not moved
back (they never move backwards). The caller journals the outcome.
:func:`runs_with_images` says which of some runs hold before-images (what a revert
can put back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgferry.errors import BadInput, OperationFailed, Refused
from pgferry.pg import catalog
from pgferry.pg import errors as pgerrors
from pgferry.pg.connect import Target, begin_repeatable_read, connect, map_db_error
from pgferry.sync import locks, session, swaps

_IMAGES = sql.SQL("pgferry.before_images")


@dataclass
class TableRevert:
    table: str
    #: rows the run inserted, deleted again; rows it deleted, inserted again; rows it
    #: updated, restored
    removed: int = 0
    reinserted: int = 0
    restored: int = 0


@dataclass
class RevertResult:
    run_id: str
    env: str
    tables: list[TableRevert] = field(default_factory=list)
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "run_id": self.run_id,
            "env": self.env,
            "dry_run": self.dry_run,
            "warnings": list(self.warnings),
            "tables": [vars(t) for t in self.tables],
            "totals": {
                k: sum(getattr(t, k) for t in self.tables)
                for k in ("removed", "reinserted", "restored")
            },
        }


def _ident(qualname: str) -> sql.Identifier:
    schema, _, name = qualname.partition(".")
    return sql.Identifier(schema, name)


def _order(tables: dict[str, catalog.Table], names: list[str]) -> list[str]:
    """``names`` parents first (a table after the tables it references, where it can)."""
    out: list[str] = []
    todo = sorted(names)
    while todo:
        ready = [
            n
            for n in todo
            if not any(fk.ref_table in todo and fk.ref_table != n for fk in tables[n].foreign_keys)
        ]
        nxt = ready[0] if ready else todo[0]  # a cycle: deferrable FKs make it work
        out.append(nxt)
        todo.remove(nxt)
    return out


def _loose_keys(t: catalog.Table) -> list[str]:
    """Key columns whose equality is looser than identity (citext, interval, an ICU
    collation): 'ann@x' and 'Ann@x' are one key there, yet another row to put back."""
    return [
        c.name
        for c in t.columns
        if c.name in t.primary_key and (c.compare_text or c.nondeterministic)
    ]


def _key_match(t: catalog.Table, alias: str, json: sql.Composable) -> sql.Composable:
    """``alias``'s key is the key in the jsonb ``json`` (typed through the table's row):
    equal, and a key column of :func:`_loose_keys` identical too (by its text)."""
    rec = sql.SQL("jsonb_populate_record(NULL::{}, {})").format(_ident(t.qualname), json)
    match = sql.SQL("({}) = (SELECT {} FROM {} AS k)").format(
        sql.SQL(", ").join(sql.Identifier(alias, k) for k in t.primary_key),
        sql.SQL(", ").join(sql.Identifier("k", k) for k in t.primary_key),
        rec,
    )
    loose = _loose_keys(t)
    if not loose:
        return match
    return sql.SQL("{} AND ({}) = (SELECT {} FROM {} AS k)").format(
        match,
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(alias, k)) for k in loose),
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier("k", k)) for k in loose),
        rec,
    )


def _changed(conn: psycopg.Connection[Any], run_id: str, t: catalog.Table) -> tuple[int, Any]:
    """How many rows of ``t`` changed since the run, and the first such key."""
    ti = _ident(t.qualname)
    q = sql.SQL(
        "SELECT count(*), min(b.key::text) FROM {images} b WHERE b.run_id = %s AND "
        "b.table_name = %s AND CASE WHEN b.action = 'delete' THEN EXISTS "
        "(SELECT 1 FROM {t} pgferry_x WHERE {m}) ELSE NOT EXISTS (SELECT 1 FROM {t} pgferry_x "
        "WHERE {m} AND md5(to_jsonb(pgferry_x)::text) = b.after_hash) END"
    ).format(images=_IMAGES, t=ti, m=_key_match(t, "pgferry_x", sql.SQL("b.key")))
    row = conn.execute(q, [run_id, t.qualname]).fetchone()
    return (int(row[0]), row[1]) if row else (0, None)


def _columns(t: catalog.Table, *, update: bool) -> list[str]:
    out = []
    loose = _loose_keys(t)
    for c in t.columns:
        if c.generated:
            continue
        if update and c.identity == "a":
            continue
        if update and c.name in t.primary_key and c.name not in loose:
            continue  # the row is found by it (a loose one may have been respelled)
        out.append(c.name)
    return out


def _apply(
    conn: psycopg.Connection[Any], run_id: str, t: catalog.Table, res: TableRevert, step: str
) -> None:
    ti = _ident(t.qualname)
    args = [run_id, t.qualname]
    rows = sql.SQL(
        "(SELECT (jsonb_populate_record(NULL::{t}, b.row_data)).* FROM {images} b "
        "WHERE b.run_id = %s AND b.table_name = %s AND b.action = {a})"
    )
    if step == "remove":
        cur = conn.execute(
            sql.SQL(
                "DELETE FROM {t} x USING {images} b WHERE b.run_id = %s AND b.table_name = %s AND "
                "b.action = 'insert' AND {m}"
            ).format(t=ti, images=_IMAGES, m=_key_match(t, "x", sql.SQL("b.key"))),
            args,
        )
        res.removed += max(cur.rowcount, 0)
    elif step == "reinsert":
        cols = _columns(t, update=False)
        override = (
            sql.SQL(" OVERRIDING SYSTEM VALUE")
            if any(c.identity == "a" for c in t.columns)
            else sql.SQL("")
        )
        cur = conn.execute(
            sql.SQL("INSERT INTO {t} ({c}){o} SELECT {c} FROM {r} r").format(
                t=ti,
                c=sql.SQL(", ").join(map(sql.Identifier, cols)),
                o=override,
                r=rows.format(t=ti, images=_IMAGES, a=sql.Literal("delete")),
            ),
            args,
        )
        res.reinserted += max(cur.rowcount, 0)
    else:
        cols = _columns(t, update=True)
        if not cols:
            return
        if _loose_keys(t):
            # found by the key it was written with (b.key): a loose key column may have
            # been respelled by the sync, and gets its old spelling back
            r = sql.SQL(
                "(SELECT (jsonb_populate_record(NULL::{t}, b.row_data)).*, b.key AS "
                "pgferry_key FROM {images} b WHERE b.run_id = %s AND b.table_name = %s "
                "AND b.action = 'update')"
            ).format(t=ti, images=_IMAGES)
            m = _key_match(t, "x", sql.SQL("r.pgferry_key"))
        else:  # a join on the key, which the planner can hash
            r = rows.format(t=ti, images=_IMAGES, a=sql.Literal("update"))
            m = sql.SQL("({}) = ({})").format(
                sql.SQL(", ").join(sql.Identifier("x", k) for k in t.primary_key),
                sql.SQL(", ").join(sql.Identifier("r", k) for k in t.primary_key),
            )
        try:
            with conn.transaction():
                cur = conn.execute(
                    sql.SQL("UPDATE {t} x SET ({c}) = ROW({rc}) FROM {r} r WHERE {m}").format(
                        t=ti,
                        c=sql.SQL(", ").join(map(sql.Identifier, cols)),
                        rc=sql.SQL(", ").join(sql.Identifier("r", c) for c in cols),
                        r=r,
                        m=m,
                    ),
                    args,
                )
        except psycopg.Error as e:
            # values the run swapped between rows cannot be swapped back row by row
            if not pgerrors.clash(e) or conn.broken:
                raise
            if swaps.refused_because(conn, ti, t.primary_key) is not None:
                raise
            cur = _replace_updated(conn, run_id, t)
        res.restored += max(cur.rowcount, 0)


def _replace_updated(
    conn: psycopg.Connection[Any], run_id: str, t: catalog.Table
) -> psycopg.Cursor[Any]:
    """The rows the run updated, restored by one statement that deletes them and inserts
    their images (:mod:`pgferry.sync.swaps`): values the run swapped between rows go back."""
    ti = _ident(t.qualname)
    cols = _columns(t, update=False)
    override = (
        sql.SQL(" OVERRIDING SYSTEM VALUE")
        if any(c.identity == "a" for c in t.columns)
        else sql.SQL("")
    )
    return conn.execute(
        sql.SQL(
            "WITH gone AS (DELETE FROM {t} x USING {images} b WHERE b.run_id = %s AND "
            "b.table_name = %s AND b.action = 'update' AND {m} RETURNING 1), "
            "done AS (SELECT count(*) AS pgferry_c FROM gone) "
            "INSERT INTO {t} ({c}){o} SELECT {rc} FROM (SELECT (jsonb_populate_record("
            "NULL::{t}, b.row_data)).* FROM {images} b WHERE b.run_id = %s AND "
            "b.table_name = %s AND b.action = 'update') r, done WHERE done.pgferry_c >= 0"
        ).format(
            t=ti,
            images=_IMAGES,
            m=_key_match(t, "x", sql.SQL("b.key")),
            c=sql.SQL(", ").join(map(sql.Identifier, cols)),
            o=override,
            rc=sql.SQL(", ").join(sql.Identifier("r", c) for c in cols),
        ),
        [run_id, t.qualname, run_id, t.qualname],
    )


def _run_steps(
    conn: psycopg.Connection[Any],
    run_id: str,
    tables: dict[str, catalog.Table],
    results: dict[str, TableRevert],
    steps: list[tuple[str, str]],
) -> None:
    """Run the steps, each in a savepoint, in passes until all are done.

    The order above suits most data (rows the run deleted come back first, so the
    rows it changed can point at them again; rows it inserted go last, children
    first). A step a constraint refuses (class 23: a row still points at one to
    remove, a unique value still held) waits for the next pass; a pass that
    finishes nothing runs the first waiting step bare, so its error is the answer.
    """
    pending = list(steps)
    while pending:
        left = []
        for n, step in pending:
            counts = vars(results[n]).copy()
            try:
                with conn.transaction():
                    _apply(conn, run_id, tables[n], results[n], step)
            except psycopg.Error as e:
                if not pgerrors.integrity(e) or conn.broken:
                    raise
                vars(results[n]).update(counts)
                left.append((n, step))
        if len(left) == len(pending):
            n, step = left[0]
            _apply(conn, run_id, tables[n], results[n], step)  # raises the real error
            left = left[1:]
        pending = left


def runs_with_images(target: Target, run_ids: list[str]) -> list[str]:
    """Those of ``run_ids`` that have before-images in ``target`` (in the order given): the
    runs a revert can put back; none when the target holds no before-images at all."""
    try:
        with connect(target.dsn, autocommit=True) as conn:
            if conn.execute("SELECT to_regclass('pgferry.before_images')").fetchone() == (None,):
                return []
            held = {
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT run_id FROM pgferry.before_images WHERE run_id = ANY(%s)",
                    [run_ids],
                )
            }
    except psycopg.Error as e:
        raise map_db_error(e, f"reading the before-images of {target.name}") from None
    return [r for r in run_ids if r in held]


def revert(
    target: Target, run_id: str, *, lock_wait_s: float = 60.0, dry_run: bool = False
) -> RevertResult:
    """Revert sync run ``run_id`` on ``target`` (see the module docstring)."""
    out = RevertResult(run_id, target.name, dry_run=dry_run)
    with connect(target.dsn, application_name="pgferry sync revert") as conn:
        session.pin(conn, lock_timeout="5s")
        if conn.execute("SELECT to_regclass('pgferry.before_images')").fetchone() == (None,):
            raise BadInput(
                f"{target.name} holds no before-images: no sync into it kept any "
                "(they are kept on protected targets and with [sync] "
                "keep_before_images = true)"
            )
        names = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT table_name FROM "
                "pgferry.before_images WHERE run_id = %s ORDER BY 1",
                [run_id],
            )
        ]
        conn.commit()
        if not names:
            raise BadInput(
                f"no before-images of sync run {run_id!r} in {target.name}: check the "
                f"run id (pgferry journal --env {target.name}); a run that was "
                "reverted already, or is older than [sync] keep_before_images_for, "
                "has none"
            )
        schemas = sorted({n.partition(".")[0] for n in names})
        tables = catalog.tables(conn, schemas)
        gone = [n for n in names if n not in tables]
        if gone:
            raise BadInput(
                f"sync run {run_id} changed {gone[0]}, which no longer exists in "
                f"{target.name}; nothing was reverted"
            )
        for n in names:
            if not tables[n].primary_key:
                raise BadInput(
                    f"{n} has no primary key: its rows cannot be matched to their "
                    "before-images; nothing was reverted"
                )
        conn.commit()
        lock = locks.acquire(target, names, lock_wait_s, f"revert-{run_id}")
        try:
            order = _order(tables, names)
            results = {n: TableRevert(n) for n in order}
            begin_repeatable_read(conn)
            conn.execute("SET CONSTRAINTS ALL DEFERRED")
            for n in order:
                changed, first = _changed(conn, run_id, tables[n])
                if changed:
                    raise Refused(
                        f"{n}: {changed} row(s) changed since sync run {run_id} (first key "
                        f"{first}); reverting would overwrite those changes, so nothing was "
                        "reverted; compare with `pgferry verify` and fix by hand or sync again",
                        table=n,
                        changed=changed,
                    )
            steps = (
                [(n, "reinsert") for n in order]
                + [(n, "restore") for n in order]
                + [(n, "remove") for n in reversed(order)]
            )
            _run_steps(conn, run_id, tables, results, steps)
            if dry_run:
                conn.rollback()
            else:
                conn.execute("DELETE FROM pgferry.before_images WHERE run_id = %s", [run_id])
                conn.commit()
            out.tables = [results[n] for n in order]
        except psycopg.Error as e:
            conn.rollback()
            err = map_db_error(e, f"sync revert {run_id}")
            raise OperationFailed(f"{err.message}; nothing was reverted", **err.details) from None
        except BaseException:
            conn.rollback()
            raise
        finally:
            lock.close()
    return out

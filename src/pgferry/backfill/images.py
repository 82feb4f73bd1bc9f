"""Before-images of a backfill's batches, and putting them back.

Contract:

- For an ``UPDATE`` backfill, each batch (in its own transaction, before the statement)
  locks the rows of its key range ``FOR UPDATE`` and copies the columns the statement
  sets into a temporary table; after the statement, every row whose columns changed is
  written to ``pgferry.backfill_images`` with ``before`` and ``after`` (the columns as
  the batch left them). Rows the batch did not change cost nothing there.
- For an ``INSERT ... SELECT`` backfill, the statement is given a ``RETURNING`` clause
  (through pglast's tree) and each inserted row is recorded (``before`` is JSON null,
  ``after`` the row).
- :func:`revert` undoes batches newest first, each in its own transaction: an updated
  row gets its ``before`` columns back, an inserted row is deleted — but only where the
  row is still as the batch left it (``after``): a row the application changed since is
  kept, and counted. The images of a reverted batch are deleted with it. A batch whose
  old values break a constraint the table has now (an expand's ``CHECK (... IS NOT NULL)
  NOT VALID`` forbids putting a NULL back) stops the revert there: that batch and the
  older ones stay as the backfill left them, and :class:`Reverted` names the constraint.
- ``DELETE`` backfills keep no images (``supported`` is False): a rollback stops them.
- :func:`expire` drops images older than ``[backfill] keep_before_images_for``.

Every identifier goes through :mod:`psycopg.sql`; values are parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgferry.backfill.files import BackfillFile
from pgferry.pg import errors as pg_errors

TEMP = sql.Identifier("pgferry_backfill_before")


def supported(bf: BackfillFile) -> bool:
    return bf.kind in ("update", "insert")


def _rel(name: tuple[str | None, str]) -> sql.Composable:
    return sql.Identifier(*[p for p in name if p])


def _cols_json(table: tuple[str | None, str], cols: list[str]) -> sql.Composable:
    """``jsonb_build_object('a', t.a, 'b', t.b)`` for the table's columns."""
    parts: list[sql.Composable] = []
    for c in cols:
        parts += [sql.Literal(c), sql.Identifier(*[p for p in table if p], c)]
    return sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(parts))


@dataclass
class Capture:
    """What one backfill needs to record its batches' images (made once per run)."""

    bf: BackfillFile
    key: str
    where: str | None
    name: str
    scope: str
    run_id: str

    def prepare(self, conn: psycopg.Connection[Any]) -> None:
        """The temporary table of an UPDATE backfill (once per session)."""
        if self.bf.kind != "update":
            return
        t = self.bf.table
        conn.execute(
            sql.SQL(
                "CREATE TEMPORARY TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS "
                "SELECT {} AS key, {} AS before FROM {} WITH NO DATA"
            ).format(
                TEMP,
                sql.Identifier(*[p for p in t if p], self.key),
                _cols_json(t, self.bf.set_columns),
                _rel(t),
            )
        )

    def before(self, conn: psycopg.Connection[Any], params: dict[str, Any]) -> None:
        """In the batch's transaction, before the statement: lock and copy the range."""
        if self.bf.kind != "update":
            return
        t = self.bf.table
        where = sql.SQL(" AND ({})").format(sql.SQL(self.where)) if self.where else sql.SQL("")
        conn.execute(
            sql.SQL(
                "INSERT INTO {} SELECT {}, {} FROM {} WHERE {} BETWEEN %(lo)s AND %(hi)s{} "
                "FOR UPDATE"
            ).format(
                TEMP,
                sql.Identifier(*[p for p in t if p], self.key),
                _cols_json(t, self.bf.set_columns),
                _rel(t),
                sql.Identifier(*[p for p in t if p], self.key),
                where,
            ),
            params,
        )

    def statement(self, text: str, pk: list[str]) -> sql.Composed | sql.SQL:
        """The statement to run: as written, or (INSERT) recording what it inserted."""
        if self.bf.kind != "insert":
            return sql.SQL(text)
        return sql.SQL(
            "WITH pgferry_inserted AS ({} RETURNING to_jsonb({}.*) AS row) "
            "INSERT INTO pgferry.backfill_images (name, scope, run_id, batch, key, before, after)"
            " SELECT %(bf_name)s, %(bf_scope)s, %(bf_run)s, %(bf_batch)s, {}, 'null'::jsonb, row"
            " FROM pgferry_inserted"
        ).format(
            sql.SQL(text),
            sql.Identifier(self.bf.target[1]),
            sql.SQL("jsonb_build_object({})").format(
                sql.SQL(", ").join(
                    sql.SQL("{}, row->{}").format(sql.Literal(c), sql.Literal(c)) for c in pk
                )
            ),
        )

    def after(self, conn: psycopg.Connection[Any], batch: int) -> int:
        """In the batch's transaction, after the statement: record the changed rows."""
        if self.bf.kind != "update":
            return 0
        t = self.bf.table
        now = _cols_json(t, self.bf.set_columns)
        cur = conn.execute(
            sql.SQL(
                "INSERT INTO pgferry.backfill_images (name, "
                "scope, run_id, batch, key, before, after)"
                " SELECT %s, %s, %s, %s, jsonb_build_object(%s::text, b.key), b.before, {now}"
                " FROM {tmp} b JOIN {t} ON {k} = b.key WHERE b.before IS DISTINCT FROM {now}"
            ).format(
                now=now, tmp=TEMP, t=_rel(t), k=sql.Identifier(*[p for p in t if p], self.key)
            ),
            [self.name, self.scope, self.run_id, batch, self.key],
        )
        return cur.rowcount


@dataclass
class Reverted:
    batches: int = 0
    rows: int = 0
    kept: int = 0  # rows changed since the batch: left as they are
    #: the batch that could not be put back (its old values break a constraint the table has
    #: now, e.g. the NOT VALID check an expand added); it and every older batch stay
    stopped_at: int | None = None
    constraint: str | None = None
    last_key: str | None = None  # the highest key of the stopped batch (the new checkpoint)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _batches(conn: psycopg.Connection[Any], name: str, scope: str) -> list[int]:
    return [
        int(r[0])
        for r in conn.execute(
            "SELECT DISTINCT batch FROM pgferry.backfill_images WHERE name = %s AND scope = %s"
            " ORDER BY 1 DESC",
            [name, scope],
        )
    ]


def _put_back(
    conn: psycopg.Connection[Any], bf: BackfillFile, key: str, pk: list[str], args: list[Any]
) -> int:
    """One batch's rows back as they were (in the caller's transaction); how many."""
    if bf.kind == "update":
        t = bf.table
        cur = conn.execute(
            sql.SQL(
                "UPDATE {t} SET {sets} FROM pgferry.backfill_images i,"
                " LATERAL jsonb_populate_record(NULL::{t}, i.before) r,"
                " LATERAL jsonb_populate_record(NULL::{t}, i.key) k"
                " WHERE i.name = %s AND i.scope = %s AND i.batch = %s"
                " AND {tk} = k.{key} AND {now} = i.after"
            ).format(
                t=_rel(t),
                key=sql.Identifier(key),
                tk=sql.Identifier(*[p for p in t if p], key),
                now=_cols_json(t, bf.set_columns),
                sets=sql.SQL(", ").join(
                    sql.SQL("{} = r.{}").format(sql.Identifier(c), sql.Identifier(c))
                    for c in bf.set_columns
                ),
            ),
            args,
        )
        return cur.rowcount
    t = bf.target
    match = sql.SQL(" AND ").join(
        sql.SQL("{} = k.{}").format(sql.Identifier(*[p for p in t if p], c), sql.Identifier(c))
        for c in pk
    )
    cur = conn.execute(
        sql.SQL(
            "DELETE FROM {t} USING pgferry.backfill_images i,"
            " LATERAL jsonb_populate_record(NULL::{t}, i.key) k"
            " WHERE i.name = %s AND i.scope = %s AND i.batch = %s"
            " AND {match} AND to_jsonb({tn}.*) = i.after"
        ).format(t=_rel(t), match=match, tn=sql.Identifier(t[1])),
        args,
    )
    return cur.rowcount


def revert(
    conn: psycopg.Connection[Any],
    bf: BackfillFile,
    key: str,
    pk: list[str],
    name: str,
    scope: str,
    *,
    lock_timeout: str,
    retries: int = 8,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> Reverted:
    """Put the recorded batches of ``name``/``scope`` back, newest first (see above); a lock
    timeout or deadlock is retried; a batch whose old values break a constraint stops it."""
    import random
    import time

    out = Reverted()
    for batch in _batches(conn, name, scope):
        args = [name, scope, batch]
        for attempt in range(retries + 1):
            try:
                with conn.transaction():
                    conn.execute("SELECT set_config('lock_timeout', %s, true)", [lock_timeout])
                    total = conn.execute(
                        "SELECT count(*) FROM pgferry.backfill_images WHERE name = %s"
                        " AND scope = %s AND batch = %s",
                        args,
                    ).fetchone()
                    done = _put_back(conn, bf, key, pk, args)
                    conn.execute(
                        "DELETE FROM pgferry.backfill_images WHERE name = %s"
                        " AND scope = %s AND batch = %s",
                        args,
                    )
                break
            except psycopg.errors.IntegrityError as e:
                out.stopped_at = batch
                out.constraint = (e.diag.constraint_name if e.diag else None) or e.sqlstate
                row = (
                    conn.execute(
                        sql.SQL(
                            "SELECT max((jsonb_populate_record(NULL::{t}, key)).{k})::text"
                            " FROM pgferry.backfill_images WHERE name = %s AND scope = %s"
                            " AND batch = %s"
                        ).format(t=_rel(bf.table), k=sql.Identifier(key)),
                        args,
                    ).fetchone()
                    if bf.kind == "update"
                    else None
                )
                out.last_key = str(row[0]) if row and row[0] is not None else None
                return out
            except psycopg.Error as e:
                if not pg_errors.retry_statement(e) or attempt == retries:
                    raise
                time.sleep(random.uniform(0, min(5.0, 0.1 * 2**attempt)))
        n = int(total[0]) if total else 0
        out.batches += 1
        out.rows += done
        out.kept += n - done
        if on_batch is not None:
            on_batch(batch, done, n - done)
    return out


def expire(conn: psycopg.Connection[Any], older_than_s: float) -> int:
    """Drop images older than ``older_than_s`` seconds."""
    cur = conn.execute(
        "DELETE FROM pgferry.backfill_images WHERE at < clock_timestamp() - "
        "make_interval(secs => %s)",
        [older_than_s],
    )
    return cur.rowcount

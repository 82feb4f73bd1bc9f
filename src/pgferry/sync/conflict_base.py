"""The conflicts base: one table per source and synced table, what each row was when the
last sync left it (its key and row hash; :mod:`pgferry.sync.conflicts` says what it is for).

Contract: :func:`spec_of` is what the base's hashes depend on (its layout, the key, how
each column is hashed); :func:`version_of` / :func:`usable` say whether the base there
can be read, and in which row hash version; :func:`update_base` moves it after a table's
writes, :func:`rebuild` makes it anew from the target. The small SQL pieces both modules
build with (:func:`tmp`, :func:`key_of`, :func:`where`, :func:`hash_of`) live here.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from pgferry.sync import state
from pgferry.sync.copy import cols, table_ident

if TYPE_CHECKING:
    from pgferry.sync.checksum import Side
    from pgferry.sync.plan import TablePlan
    from pgferry.sync.tables import Link

#: the layout of the base tables (part of their spec: an older layout is rebuilt)
_LAYOUT = "base v2: key, pgferry_h, pgferry_open"


def tmp(kind: str, t: TablePlan) -> sql.Identifier:
    return sql.Identifier(f"pgferry_{kind}_{t.order}")


def base_name(source: str, t: TablePlan) -> str:
    digest = hashlib.sha1(f"{source}|{t.qualname}".encode()).hexdigest()[:16]
    return f"base_{digest}"


def base_ident(source: str, t: TablePlan) -> sql.Identifier:
    return sql.Identifier("pgferry", base_name(source, t))


def spec_of(
    conn: psycopg.Connection[Any], t: TablePlan, tgt: Side, version: int | None = None
) -> str:
    """What the base's hashes depend on: key, columns, types and how each is hashed.

    ``version``: of the row hash (:mod:`pgferry.sync.rowhash`; the comparison's,
    :attr:`Side.hash_version`, when None); a base made by an earlier release, or
    with a PostgreSQL 13 side (version 3), has the spec of that version.
    """
    text = "|".join(
        [
            _LAYOUT,
            t.qualname,
            ",".join(t.key),
            tgt.row_hash(version).as_string(conn),
            tgt.key_row_hash(version).as_string(conn),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()


def version_of(conn: psycopg.Connection[Any], source: str, t: TablePlan, tgt: Side) -> int:
    """The row hash version of ``t``'s base, 0 when there is no usable base.

    Usable: it exists and its hashes were made the way version 2 or 3 (or, by an
    earlier release, version 1) makes them for the table as it is now. A base of
    another version than the comparison's (version 1; or 2 where the table is now
    hashed in 3, :func:`pgferry.sync.sides.agree`) is read once in its own version and
    then rebuilt (:func:`rebuild`) in the comparison's. A version 2 base is not usable
    while a side runs PostgreSQL 13 (``tgt.record_hash`` false): that server cannot
    compute it.
    """
    if conn.execute("SELECT to_regclass('pgferry.sync_state')").fetchone() == (None,):
        return 0  # nothing synced into this database yet (a dry run writes nothing)
    mark = state.read(conn, source, t.qualname, "base")
    spec = (mark.checkpoint or {}).get("spec")
    # the comparison's own version first; version 2 only where both servers have it
    if tgt.hash_version == 2:
        tried: tuple[int, ...] = (2, 1, 3)
    else:  # version 2 (a base made before a table was hashed in 3) where both servers have it
        tried = (3, 2, 1) if tgt.record_hash else (3, 1)
    version = next((v for v in tried if spec == spec_of(conn, t, tgt, v)), 0)
    if not version:
        return 0
    row = conn.execute("SELECT to_regclass(%s)", [base_ident(source, t).as_string(conn)]).fetchone()
    return version if row and row[0] else 0


def usable(conn: psycopg.Connection[Any], source: str, t: TablePlan, tgt: Side) -> bool:
    """A base exists for ``t`` and its hashes can be compared (:func:`version_of`)."""
    return version_of(conn, source, t, tgt) > 0


def key_of(alias: str, t: TablePlan) -> sql.Composable:
    return sql.SQL("({})").format(cols(t.key, alias))


def where(t: TablePlan) -> sql.Composable:
    return (
        sql.SQL(" AND ({})").format(sql.SQL(t.where.replace("%", "%%"))) if t.where else sql.SQL("")
    )


def hash_of(t: TablePlan, tgt: Side, alias: str, version: int | None = None) -> sql.Composable:
    """The target's row hash of the row whose key equals ``alias``'s (NULL when none)."""
    return sql.SQL("(SELECT {h} FROM {tbl} WHERE ({k}) = {a}{w})").format(
        h=tgt.row_hash(version), tbl=table_ident(t), k=cols(t.key), a=key_of(alias, t), w=where(t)
    )


def update_base(
    link: Link,
    t: TablePlan,
    tgt: Side,
    version: int | None = None,
    *,
    written_as_staged: bool = False,
) -> None:
    """After the table's writes: the base of every row now equal to the source's is that row.

    Rows left alone keep their base (see the module docstring); a conflict kept is
    marked open, so that every later sync looks at it again, and closed (its base
    moved) once both sides agree. ``version``: the row hash version the base holds
    (a version 1 base keeps version 1 while it holds kept rows, whose base is known
    only in that version; :func:`rebuild` makes a base of the comparison's version
    otherwise).
    ``written_as_staged``: no row of the table was dead-lettered and no user trigger
    fired, so every row the writes did not leave alone now is the source's row (its
    hash need not be read again).
    """
    conn, base = link.tgt, base_ident(link.ctx.source, t)
    cls, skip = tmp("cls", t), tmp("skip", t)
    conn.execute(
        sql.SQL(
            "WITH c AS (SELECT k.*, EXISTS (SELECT 1 FROM "
            "{skip} x WHERE {xk} = {kk}) AS pgferry_kept,"
            " {now} IS NOT DISTINCT FROM k.pgferry_s AS pgferry_equal FROM {cls} k), "
            "gone AS (DELETE FROM {base} b USING c WHERE {bk} = {ck} AND NOT c.pgferry_kept AND "
            "c.pgferry_equal AND c.pgferry_s IS NULL RETURNING 1), "
            "held AS (UPDATE {base} b SET pgferry_open = true FROM c WHERE {bk} = {ck} AND "
            "c.pgferry_kept AND c.pgferry_b IS DISTINCT FROM c.pgferry_s AND c.pgferry_b IS "
            "DISTINCT FROM c.pgferry_t RETURNING 1) "
            "INSERT INTO {base} ({keys}, pgferry_h) SELECT {cc}, c.pgferry_s FROM c WHERE "
            "NOT c.pgferry_kept AND c.pgferry_equal AND c.pgferry_s IS NOT NULL "
            "ON CONFLICT ({keys}) DO UPDATE SET pgferry_h = excluded.pgferry_h, "
            "pgferry_open = false"
        ).format(
            skip=skip,
            xk=key_of("x", t),
            kk=key_of("k", t),
            now=sql.SQL("k.pgferry_s") if written_as_staged else hash_of(t, tgt, "k", version),
            cls=cls,
            base=base,
            bk=key_of("b", t),
            ck=key_of("c", t),
            keys=cols(t.key),
            cc=cols(t.key, "c"),
        )
    )


def rebuild(link: Link, t: TablePlan, tgt: Side) -> None:
    """Make the base of ``t`` from the target as it is now (after the table's writes)."""
    conn, source = link.tgt, link.ctx.source
    base = base_ident(source, t)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(base))
    conn.execute(
        sql.SQL(
            # room on every page: a later sync moves the base of the rows it wrote in place
            # (a HOT update), instead of a new row version and index entry elsewhere
            "CREATE TABLE {b} WITH (fillfactor = 85) AS SELECT {k}, {h} AS pgferry_h "
            "FROM {tbl} WHERE true{w}"
        ).format(b=base, k=cols(t.key), h=tgt.row_hash(), tbl=table_ident(t), w=where(t))
    )
    conn.execute(
        sql.SQL(
            "ALTER TABLE {} ADD PRIMARY KEY ({}), ADD pgferry_open boolean NOT NULL DEFAULT false"
        ).format(base, cols(t.key))
    )
    # open conflicts are looked up on every sync: a (nearly always empty) partial index
    conn.execute(
        sql.SQL("CREATE INDEX {} ON {} ({}) WHERE pgferry_open").format(
            sql.Identifier(f"{base_name(source, t)}_open"), base, cols(t.key)
        )
    )
    state.write(
        conn,
        source,
        t.qualname,
        "base",
        state.Mark(None, [], {"table": base.as_string(conn), "spec": spec_of(conn, t, tgt)}),
    )

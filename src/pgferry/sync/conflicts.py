"""Conflicts: target rows someone changed since the last sync that this sync would change.

Contract: after each sync of a table (checksum strategy), the target keeps in
``pgferry.base_<id>`` (one table per source environment and synced table,
registered in ``pgferry.sync_state`` under strategy ``base``) what every row
was when the sync left it: its key and its 64-bit row hash — the *base*, the
common ancestor of a three-way merge. On the next sync, for every key the
comparison found different (and every row of a range it found different as a
whole), :func:`classify` puts the row hashes of the base (b), the source (s)
and the target (t) side by side, on the target server, in temp tables (the
source hashes are streamed there by ``COPY``; nothing per row passes through
Python), and decides (:func:`decide`, pure):

- ``same``: s = t, nothing to do;
- ``normal``: b = t, only the source changed: the sync writes it;
- ``target_only``: b = s, only the target changed: written back to the source's
  row, or kept (and listed) with ``keep_target_changes``;
- ``conflict``: both changed, differently. ``on_conflict = "stop"`` leaves the
  table as it was (the caller skips it); ``"source"`` writes it, with the
  overwritten rows saved in the before-images for ``sync revert``;
  ``"target"`` keeps the target's row.

A missing key in the base means the row did not exist then; a missing row
(s or t) is a delete or a row not created yet. The rows to leave alone go into
a temp table the writes exclude (``TablePlan.skip``). After the table's writes,
:func:`~pgferry.sync.conflict_base.update_base` moves the base of every classified
row the write made equal to the source's row to that row. A kept row keeps its base:
a conflict kept under ``"target"`` is a conflict again on the next sync (kept again
while the policy says so; stopped at, under ``"stop"``), and a kept target change
stays a target-only change. No usable base yet (the first sync, or columns or types
changed since), :func:`~pgferry.sync.conflict_base.rebuild` makes one from the
target once it is written, and conflicts could not be known for that run.

Exact, whatever happens between two syncs: no transaction ids are compared, so
wraparound, ``VACUUM FREEZE`` or a killed run (its transaction rolled back,
the base with it) cannot fool it. Cost: the base holds a key and 8 bytes per
row; a sync reads and writes it only for the rows that differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from psycopg import sql

from pgferry.sync.conflict_base import (
    base_ident,
    hash_of,
    key_of,
    tmp,
    version_of,
    where,
)
from pgferry.sync.copy import cols, key_match, pipe, select_sql, table_ident
from pgferry.sync.sides import settings

if TYPE_CHECKING:
    from pgferry.sync.checksum import Side
    from pgferry.sync.plan import TablePlan
    from pgferry.sync.tables import Link

Decision = Literal["same", "normal", "target_only", "conflict"]
#: conflicts listed per table in the result (all are counted)
SHOWN = 20


def decide(b: int | None, s: int | None, t: int | None) -> Decision:
    """The three-way decision for one key (None: no row; see the module docstring)."""
    if s == t:
        return "same"
    if b == t:
        return "normal"
    if b == s:
        return "target_only"
    return "conflict"


@dataclass
class Classified:
    """What :func:`classify` found for one table."""

    #: False when there was no usable base (first sync): conflicts could not be known
    known: bool = True
    conflicts: int = 0
    target_only: int = 0
    #: rows left as the target has them (conflicts under "target", kept target changes)
    kept: int = 0
    first: list[dict[str, Any]] = field(default_factory=list)
    #: the table must not be written (conflicts under "stop")
    stop: bool = False
    #: the row hash version the base was read with (1: rebuilt after the writes)
    version: int = 2
    #: nothing differed and no conflict was held: nothing classified, the base stands as it
    #: is (no temp table was made)
    nothing: bool = False


def classify(
    link: Link,
    t: TablePlan,
    masks: dict[str, sql.Composable],
    src: Side,
    tgt: Side,
    *,
    keys: list[Any],
    deletes: list[Any],
    src_ranges: list[tuple[sql.Composable, list[Any]]],
    tgt_ranges: list[tuple[sql.Composable, list[Any]]],
    known: dict[Any, tuple[int | None, int | None]] | None = None,
) -> Classified:
    """Classify every row the comparison found different (see the module docstring).

    ``keys`` / ``deletes``: the differing keys (source side / only on the target);
    ``src_ranges`` / ``tgt_ranges``: predicates of the ranges found different as a
    whole, on each side. ``known``: the comparison's own row hashes (source,
    target; None: no row) of those keys, read in the same snapshots: they are
    copied to the target as they are instead of being read and hashed again.
    Runs in the unit's transaction on the target; leaves the temp tables
    ``pgferry_cls_N`` (classification) and ``pgferry_skip_N`` (keys the writes must
    leave alone) for the rest of the transaction.
    """
    conn, source = link.tgt, link.ctx.source
    out = Classified()
    base = base_ident(source, t)
    out.version = version = version_of(conn, source, t, tgt)
    if not version:
        out.known = False
        return out
    # conflicts kept earlier are looked at again (they may be settled now: both sides agree)
    held = [
        tuple(r)
        for r in conn.execute(
            sql.SQL("SELECT {} FROM {} WHERE pgferry_open").format(tgt.key_values(), base)
        )
    ]
    t.skip = False
    if not (keys or deletes or src_ranges or tgt_ranges or held):
        out.nothing = True  # nothing differs and nothing is held: no row to classify
        return out
    sh, touch, cls, skip = (tmp(k, t) for k in ("srch", "touch", "cls", "skip"))
    like = sql.SQL("SELECT {} FROM {} WITH NO DATA").format(cols(t.key), table_ident(t))
    for name in (sh, touch):
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
        conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS {}").format(name, like))
    conn.execute(sql.SQL("ALTER TABLE {} ADD pgferry_h int8").format(sh))
    th = tmp("tgth", t)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(th))
    conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS {}").format(th, like))
    conn.execute(
        sql.SQL(
            "ALTER TABLE {} ADD pgferry_h int8, ADD pgferry_seen bool NOT NULL DEFAULT true"
        ).format(th)
    )
    if known is not None and version == tgt.hash_version:
        _copy_known(conn, t, sh, th, known)
        keys, deletes = [k for k in held if k not in known], []
    else:
        keys = [*keys, *held]
    # the source's hashes of the rows concerned, streamed into the target's temp table
    sel = sql.SQL("SELECT {k}, {h} FROM {tbl} WHERE {p}")
    n = max(1, 60000 // max(1, len(t.key)))
    for batch in (keys[i : i + n] for i in range(0, len(keys), n)):
        p, params = key_match(t, batch)
        pipe(
            link.src,
            conn,
            sel.format(
                k=cols(t.key),
                h=src.row_hash(version),
                tbl=table_ident(t),
                p=sql.SQL("{}{}").format(p, where(t)),
            ),
            params,
            sh,
            [*t.key, "pgferry_h"],
            binary=t.binary_copy,
        )
    for p, params in src_ranges:
        pipe(
            link.src,
            conn,
            sel.format(k=cols(t.key), h=src.row_hash(version), tbl=table_ident(t), p=p),
            params,
            sh,
            [*t.key, "pgferry_h"],
            binary=t.binary_copy,
        )
    # every key concerned: the source's, the target-only ones, the target rows of ranges
    conn.execute(sql.SQL("INSERT INTO {} SELECT {} FROM {}").format(touch, cols(t.key), sh))
    conn.execute(sql.SQL("INSERT INTO {} SELECT {} FROM {}").format(touch, cols(t.key), th))
    for batch in (deletes[i : i + n] for i in range(0, len(deletes), n)):
        p, params = key_match(t, batch)
        conn.execute(
            sql.SQL("INSERT INTO {} SELECT {} FROM {} WHERE {}").format(
                touch, cols(t.key), table_ident(t), p
            ),
            params,
        )
    conn.execute(
        sql.SQL("INSERT INTO {} SELECT {} FROM {} WHERE pgferry_open").format(
            touch, cols(t.key), base
        )
    )
    for p, params in tgt_ranges:
        conn.execute(
            sql.SQL("INSERT INTO {} SELECT {} FROM {} WHERE {}").format(
                touch, cols(t.key), table_ident(t), p
            ),
            params,
        )
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(cls))
    # the keys made distinct by sorting, not hashing: the base (as big as the table, most
    # of it out of shared buffers) is then probed in key order, each page read once in
    # turn; and the classification is stored in key order, which the base's update after
    # the writes probes it in (4M rows, 40,000 keys: 550 -> 360 ms, docs/benchmarks.md)
    with settings(conn, enable_hashagg="off"):
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE {cls} ON COMMIT DROP AS SELECT k.*, s.pgferry_h AS pgferry_s, "
                "CASE WHEN x.pgferry_seen THEN x.pgferry_h ELSE {th} END AS pgferry_t, "
                "b.pgferry_h AS pgferry_b FROM (SELECT DISTINCT * FROM {touch}) k "
                "LEFT JOIN (SELECT DISTINCT * FROM {sh}) s ON {sk} = {kk} "
                "LEFT JOIN {tk} x ON {xk} = {kk} LEFT JOIN {base} b ON {bk} = {kk} "
                "ORDER BY {order}"
            ).format(
                cls=cls,
                th=hash_of(t, tgt, "k", version),
                touch=touch,
                sh=sh,
                sk=key_of("s", t),
                kk=key_of("k", t),
                tk=th,
                xk=key_of("x", t),
                base=base,
                bk=key_of("b", t),
                order=cols(t.key, "k"),
            )
        )
    decision = sql.SQL(
        "CASE WHEN pgferry_s IS NOT DISTINCT FROM pgferry_t THEN 'same' "
        "WHEN pgferry_b IS NOT DISTINCT FROM pgferry_t THEN 'normal' "
        "WHEN pgferry_b IS NOT DISTINCT FROM pgferry_s THEN 'target_only' "
        "ELSE 'conflict' END"
    )
    counts = dict(
        conn.execute(
            sql.SQL("SELECT d, count(*) FROM (SELECT {} AS d FROM {}) x GROUP BY d").format(
                decision, cls
            )
        ).fetchall()
    )
    out.conflicts = int(counts.get("conflict", 0))
    out.target_only = int(counts.get("target_only", 0))
    keep = ["conflict"] if t.on_conflict in ("stop", "target") else []
    if t.keep_target_changes:
        keep.append("target_only")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(skip))
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WHERE {} = ANY(%s::text[])"
        ).format(skip, cols(t.key), cls, decision),
        [keep],
    )
    out.kept = out.conflicts * (t.on_conflict == "target") + (
        out.target_only if t.keep_target_changes else 0
    )
    out.stop = out.conflicts > 0 and t.on_conflict == "stop"
    t.skip = out.kept > 0
    if out.conflicts:
        out.first = _first(link, t, tgt, masks, cls, decision)
    return out


def _copy_known(
    conn: psycopg.Connection[Any],
    t: TablePlan,
    sh: sql.Identifier,
    th: sql.Identifier,
    known: dict[Any, tuple[int | None, int | None]],
) -> None:
    """The comparison's hashes of the differing keys into ``sh`` (source) and ``th`` (target)."""
    names = [*t.key, "pgferry_h"]
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(sh, cols(names))) as cp:
        for key, (s, _) in known.items():
            if s is not None:
                cp.write_row((*key, s))
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(th, cols(names))) as cp:
        for key, (_, tt) in known.items():
            cp.write_row((*key, tt))


def _first(
    link: Link,
    t: TablePlan,
    tgt: Side,
    masks: dict[str, sql.Composable],
    cls: sql.Identifier,
    decision: sql.Composable,
) -> list[dict[str, Any]]:
    """The first conflicts, each with the target's row and the source's (masked) row."""
    rows = link.tgt.execute(
        sql.SQL(
            "SELECT {v}, pgferry_s IS NULL, pgferry_t IS NULL FROM {cls} WHERE {d} = 'conflict' "
            "ORDER BY {k} LIMIT {n}"
        ).format(v=tgt.key_values(), k=cols(t.key), cls=cls, d=decision, n=sql.Literal(SHOWN))
    ).fetchall()
    out = []
    for r in rows:
        key = tuple(r[: len(t.key)])
        no_src, no_tgt = r[len(t.key)], r[len(t.key) + 1]
        p, params = key_match(t, [key])
        trow = link.tgt.execute(
            sql.SQL("SELECT to_jsonb(pgferry_r) FROM {} pgferry_r WHERE {}").format(
                table_ident(t), p
            ),
            params,
        ).fetchone()
        srow = link.src.execute(
            sql.SQL("SELECT to_jsonb(pgferry_r) FROM ({}) pgferry_r").format(
                select_sql(t, masks, p)
            ),
            params,
        ).fetchone()
        out.append(
            {
                "key": dict(zip(t.key, map(_plain, key), strict=True)),
                "kind": "delete" if no_src else "insert" if no_tgt else "update",
                "target_row": trow[0] if trow else None,
                "source_row": srow[0] if srow else None,
            }
        )
    return out


def _plain(v: Any) -> Any:
    return v if v is None or isinstance(v, bool | int | float | str) else str(v)


def skip_filter(t: TablePlan, alias: sql.Composable) -> sql.Composable:
    """``NOT EXISTS`` a row of the skip table with ``alias``'s key (for upserts and deletes)."""
    return sql.SQL("NOT EXISTS (SELECT 1 FROM {s} pgferry_k WHERE ({kk}) = ({ka}))").format(
        s=tmp("skip", t),
        kk=cols(t.key, "pgferry_k"),
        ka=sql.SQL(", ").join(sql.SQL("{}.{}").format(alias, sql.Identifier(k)) for k in t.key),
    )

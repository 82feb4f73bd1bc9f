"""Comparing a table without a key: both sides as multisets of rows.

Contract: :func:`compare` reads, on each server (the source in the run's
snapshot, the target in a read-only transaction of its own), the row count and
an order-free digest of every row: the sum modulo 2^64 of the 64-bit row hashes
of :meth:`pgferry.sync.sides.Side.row_hash` (a sum, not an XOR: two equal rows
must not cancel out). Equal counts and digests mean the two tables hold the
same rows the same number of times; anything else is "differs", with the counts.
Which rows differ is not known without a key: the table is then reported, and
a full-mode sync reloads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from pgferry.pg.connect import map_db_error
from pgferry.sync import checksum as ck
from pgferry.sync.chunks import KeyRange
from pgferry.sync.verify import reading

if TYPE_CHECKING:
    from pgferry.sync.context import RunContext
    from pgferry.sync.plan import TablePlan
    from pgferry.sync.tables import Link

_MOD = 1 << 64


@dataclass
class Multiset:
    table: str
    source_rows: int
    target_rows: int
    source_digest: int
    target_digest: int

    @property
    def identical(self) -> bool:
        return (self.source_rows, self.source_digest) == (self.target_rows, self.target_digest)

    def fill(self, r: Any) -> None:
        r.checksum_source = f"{self.source_rows}:{self.source_digest:016x}"
        r.checksum_target = f"{self.target_rows}:{self.target_digest:016x}"
        r.matched = self.source_rows if self.identical else 0
        r.source_rows = self.source_rows
        if not self.identical:
            r.note = (
                f"no key: compared as multisets of rows ({self.source_rows:,} rows on the "
                f"source, {self.target_rows:,} on the target); which rows differ is not "
                "known"
            )


def _digest(conn: psycopg.Connection[Any], s: ck.Side) -> tuple[int, int]:
    pred, params = s.predicate(KeyRange())
    q = sql.SQL("SELECT count(*), coalesce(sum({h}), 0)::text FROM {t} WHERE {p}").format(
        h=s.row_hash(), t=s.table, p=pred
    )
    row = conn.execute(q, params).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]) % _MOD


def compare(ctx: RunContext, t: TablePlan, link: Link) -> Multiset:
    """Count and digest ``t`` on both sides (read-only on both)."""
    masks = {c: e for c, e in ctx.masks.get(t.qualname, {}).items() if c in t.columns}
    # Side needs a key only to order ranges; a multiset reads the whole table
    pseudo = tuple(t.columns[:1])
    link.tgt.rollback()
    try:
        with reading(link.src), reading(link.tgt):
            a, b = ck.agree(
                ck.side(
                    link.src,
                    t.schema,
                    t.name,
                    pseudo,
                    t.columns,
                    exprs=masks or None,
                    where=t.where,
                ),
                ck.side(link.tgt, t.schema, t.name, pseudo, t.columns, where=t.where),
            )
            sn, sd = _digest(link.src, a)
            tn, td = _digest(link.tgt, b)
    except psycopg.Error as e:
        raise map_db_error(e, f"verify {t.qualname}") from None
    return Multiset(t.qualname, sn, tn, sd, td)

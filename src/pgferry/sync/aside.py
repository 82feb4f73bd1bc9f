"""Secondary indexes set aside while an empty table is loaded, then rebuilt in parallel.

Contract: on an unprotected target (``[sync] defer_indexes``, on by default;
never on a protected target, which :func:`pgferry.sync.plan.build_plan` sees to),
the fast path into an *empty* table (:func:`pgferry.sync.tables.full_load`) loads
it without the indexes it does not need while loading, and builds them after the
unit commits, several at a time — as pgcopydb and ``pg_restore`` do. Building an
index once over loaded rows costs far less than maintaining it row by row.

- :func:`plan` reads the target's catalog (and the source's, for unique indexes)
  and says what may be set aside: every valid index that no foreign key references
  and that is not the replica identity or the clustered index; a unique index, a
  (non-deferrable) unique constraint or the primary key (nothing in the load's unit
  looks a row up by key; a run that finds it set aside plans with the source's and
  rebuilds it first, :func:`primary_keys_set_aside`) only when the source has the same
  one and the load writes the source's values of its columns as they are (synced, same
  types, not masked, no nondeterministic collation on the target), so its rows satisfy
  it (a constraint: only on a b-tree, which ``USING INDEX`` takes; ``WITHOUT OVERLAPS``
  keys stay); on a partitioned table whose partitions are all leaves, indexes and (on
  the same terms) its primary key and unique constraints, each rebuilt per partition
  and attached, keys as ``pg_dump`` restores them (:func:`_partitioned_constraint`).
  Foreign keys, check and exclusion constraints stay: they decide, row by row, which
  rows are dead letters.
- :func:`record` writes every definition (``pg_get_indexdef``, and the ``ALTER
  TABLE ... ADD CONSTRAINT ... USING INDEX`` or ``ALTER INDEX ... ATTACH
  PARTITION`` that completes it; a partitioned key's own ``ALTER TABLE ONLY ... ADD
  CONSTRAINT``) into ``pgferry.set_aside`` and **commits**, before anything is
  dropped.
- :func:`drop` drops them inside the fast path's subtransaction: if the load
  fails on a row, the rollback to it puts them back before the load in batches
  (whose dead letters need every unique index in place).
- Building them back is :mod:`pgferry.sync.rebuild`: after the unit commits
  (:class:`~pgferry.sync.rebuild.RebuildGuard`, which keeps writers out until they are
  back), or on the next sync after a crash (:func:`~pgferry.sync.rebuild.recover`,
  from the records :func:`pending` reads).

Definitions are the server's own ``pg_get_indexdef`` / ``pg_get_constraintdef``
text (identifiers quoted by the server), executed as they are, as ``pg_restore``
executes a dump's; every other name goes through :class:`psycopg.sql.Identifier`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from pgferry.pg.connect import connect

if TYPE_CHECKING:
    from pgferry.sync.plan import TablePlan

_INDEXES = """
SELECT ic.relname, pg_get_indexdef(i.indexrelid), i.indisunique,
       con.conname, con.contype::text, coalesce(con.condeferrable, false),
       ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o),
       i.indisreplident OR i.indisclustered OR NOT i.indisvalid
           OR NOT i.indisready
           OR EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f'
                      AND f.conindid = i.indexrelid),
       ic.relkind = 'I',
       -- a partitioned index's partition indexes: schema, name, definition, on a leaf?,
       -- the partition's name and the name of the constraint the index completes there
       ARRAY(SELECT ARRAY[pn.nspname::text, pc.relname::text, pg_get_indexdef(pc.oid),
                          (tc.relkind = 'r')::text, tc.relname::text,
                          coalesce(cc.conname::text, '')]
             FROM pg_inherits h JOIN pg_class pc ON pc.oid = h.inhrelid
             JOIN pg_namespace pn ON pn.oid = pc.relnamespace
             JOIN pg_index pi ON pi.indexrelid = pc.oid
             JOIN pg_class tc ON tc.oid = pi.indrelid
             LEFT JOIN pg_constraint cc ON cc.conindid = pc.oid AND cc.conrelid = tc.oid
                  AND cc.contype IN ('p', 'u')
             WHERE h.inhparent = i.indexrelid ORDER BY pc.relname),
       i.indexprs IS NOT NULL,
       -- what one build costs per row, roughly (:func:`_weight`): its access method, and
       -- whether it sorts variable-length values or computes expressions
       am.amname::text,
       i.indexprs IS NOT NULL OR EXISTS (
           SELECT 1 FROM unnest(i.indkey) k(n) JOIN pg_attribute a
           ON a.attrelid = i.indrelid AND a.attnum = k.n WHERE a.attlen = -1),
       -- a constraint's definition leaves out its index's storage parameters
       pg_get_constraintdef(con.oid), coalesce(ic.reloptions, '{}'),
       -- a nondeterministic collation (ICU, case- or accent-insensitive) makes values
       -- equal that the source's index tells apart: its uniqueness does not carry over
       EXISTS (SELECT 1 FROM unnest(i.indcollation) k(c)
               JOIN pg_collation co ON co.oid = k.c WHERE NOT co.collisdeterministic)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
     AND con.contype IN ('p', 'u', 'x')
WHERE i.indrelid = %s::regclass
ORDER BY ic.relname
"""


#: the constraints an index completes that may be set aside, and how each is added back
#: (a primary key's columns stay NOT NULL when it is dropped, on every version, so adding
#: it back does not scan the table)
_ADD = {"p": sql.SQL("PRIMARY KEY"), "u": sql.SQL("UNIQUE")}


@dataclass(frozen=True)
class RebuildStep:
    """One statement of a rebuild (its steps: :mod:`pgferry.pg.ownschema.v3`)."""

    table: str  # schema.table
    name: str  # schema-qualified name of the index (or of the object the step completes)
    step: int
    definition: str
    needs: str  # schema-qualified index that exists once this step is done
    #: a build's estimated cost (:func:`_weight` x the source table's bytes), which orders
    #: the builds, biggest first; 0 when unknown (steps read back from the records)
    cost: int = field(default=0, compare=False)
    #: a build's index access method ("btree", "gin", ...); "" when unknown
    method: str = field(default="", compare=False)


@dataclass
class SetAside:
    """What :func:`plan` set aside for one table: the drops and the rebuild steps."""

    table: str
    drops: list[sql.Composed]
    items: list[RebuildStep]

    @property
    def names(self) -> list[str]:
        return [i.name.split(".", 1)[1] for i in self.items if i.step == 1]


def plan(
    tgt: psycopg.Connection[Any], src: psycopg.Connection[Any], t: TablePlan
) -> SetAside | None:
    """What the target table ``t`` can load without (see the module docstring); None: nothing."""
    ident = sql.Identifier(t.schema, t.name).as_string(tgt)
    source = {r[0]: r[1] for r in src.execute(_INDEXES, [ident])}
    out = SetAside(t.qualname, [], [])
    q = sql.Identifier
    for (
        name,
        idef,
        unique,
        conname,
        contype,
        deferrable,
        cols,
        keep,
        partitioned,
        children,
        expressions,
        am,
        varlena,
        condef,
        options,
        loose,
    ) in tgt.execute(_INDEXES, [ident]):
        cost = _weight(am, varlena) * max(t.total_bytes, 1)
        if keep or (tuple(cols) == tuple(t.key) and contype != "p"):
            continue  # referenced or special, or the sync key's unique index (planned with)
        if unique and (loose or not _holds(t, source.get(name) == idef, cols, expressions)):
            continue  # a uniqueness the loaded rows may not hold
        if partitioned and (not children or any(c[3] != "true" for c in children)):
            continue  # a partition that is partitioned itself: left in place
        full = f"{t.schema}.{name}"
        if conname is not None and (contype not in _ADD or deferrable or am != "btree"):
            continue  # ADD CONSTRAINT ... USING INDEX takes a b-tree (not WITHOUT OVERLAPS)
        if conname is not None and partitioned:
            added = _with_options(condef, options)
            _partitioned_constraint(
                tgt, t, out, (name, conname, contype, added), children, cost, am
            )
        elif conname is not None:
            out.drops.append(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(q(t.schema, t.name), q(conname))
            )
            out.items.append(RebuildStep(t.qualname, full, 1, idef, full, cost, am))
            out.items.append(
                RebuildStep(
                    t.qualname,
                    f"{t.schema}.{conname}",
                    2,
                    sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} USING INDEX {}")
                    .format(q(t.schema, t.name), q(conname), _ADD[contype], q(name))
                    .as_string(tgt),
                    full,
                )
            )
        elif partitioned:
            out.drops.append(sql.SQL("DROP INDEX {}").format(q(t.schema, name)))
            out.items.append(RebuildStep(t.qualname, full, 0, idef, full))
            for cschema, cname, cdef, *_ in children:
                child = f"{cschema}.{cname}"
                out.items.append(RebuildStep(t.qualname, child, 1, cdef, child, cost, am))
                out.items.append(_attach(tgt, t, name, (cschema, cname), 2))
        else:
            out.drops.append(sql.SQL("DROP INDEX {}").format(q(t.schema, name)))
            out.items.append(RebuildStep(t.qualname, full, 1, idef, full, cost, am))
    return out if out.items else None


def _weight(am: str, varlena: bool) -> int:
    """How much one row costs a build of this kind, relatively (orders the builds only).

    GIN, GiST and SP-GiST builds cost several times a btree's per row (a GIN build of
    jsonb took 10x the btree of a timestamptz on the same rows); a btree that sorts
    variable-length values (text, numeric) or computes expressions about 3x one of
    fixed-width values.
    """
    if am in ("gin", "gist", "spgist"):
        return 8
    return 3 if varlena else 1


def _attach(
    tgt: psycopg.Connection[Any], t: TablePlan, parent: str, child: tuple[str, str], step: int
) -> RebuildStep:
    """The step attaching partition index ``child`` (schema, name) to ``t``'s ``parent``."""
    q = sql.Identifier
    return RebuildStep(
        t.qualname,
        ".".join(child),
        step,
        sql.SQL("ALTER INDEX {} ATTACH PARTITION {}")
        .format(q(t.schema, parent), q(*child))
        .as_string(tgt),
        f"{t.schema}.{parent}",
    )


def _with_options(condef: str, options: Sequence[str]) -> sql.Composable:
    """``pg_get_constraintdef`` text and its index's storage parameters (``WITH (...)``,
    which it leaves out; a key's definition ends with its columns: nothing deferrable)."""
    if not options:
        return sql.SQL(condef)
    pairs = [o.split("=", 1) for o in options]
    return sql.SQL("{} WITH ({})").format(
        sql.SQL(condef),
        sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in pairs
        ),
    )


def _partitioned_constraint(
    tgt: psycopg.Connection[Any],
    t: TablePlan,
    out: SetAside,
    key: tuple[str, str, str, sql.Composable],
    children: Sequence[Sequence[str]],
    cost: int,
    am: str,
) -> None:
    """A partitioned table's primary key or unique constraint, set aside as pg_dump does it.

    Dropped on the parent (which drops every partition's); rebuilt as each partition's
    unique index (step 1, the builds, in parallel: ``CREATE INDEX`` takes the SHARE lock
    the guard holds, where ``ALTER TABLE ... ADD CONSTRAINT`` would wait for the guard),
    then on the guard the parent's own constraint ``ALTER TABLE ONLY`` (an invalid index
    until every partition's is attached) and each partition's ``USING INDEX`` (step 2),
    and the attachments (step 3), each with the name it had. The parent's constraint
    comes after the builds, not before them as a partitioned index does (step 0): it
    takes ACCESS EXCLUSIVE, and readers go on while the indexes build.
    """
    if any(not c[5] for c in children):
        return  # a partition's index completes no constraint there: cannot be attached
    name, conname, contype, condef = key  # the parent's index, constraint, type, definition
    q = sql.Identifier
    full = f"{t.schema}.{name}"
    out.drops.append(
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(q(t.schema, t.name), q(conname))
    )
    out.items.append(
        RebuildStep(
            t.qualname,
            f"{t.schema}.{conname}",
            2,
            sql.SQL("ALTER TABLE ONLY {} ADD CONSTRAINT {} {}")
            .format(q(t.schema, t.name), q(conname), condef)
            .as_string(tgt),
            full,
        )
    )
    for cschema, cname, cdef, _, ctable, cconname in children:
        child = f"{cschema}.{cname}"
        out.items.append(RebuildStep(t.qualname, child, 1, cdef, child, cost, am))
        out.items.append(
            RebuildStep(
                t.qualname,
                f"{cschema}.{cconname}",
                2,
                sql.SQL("ALTER TABLE ONLY {} ADD CONSTRAINT {} {} USING INDEX {}")
                .format(q(cschema, ctable), q(cconname), _ADD[contype], q(cname))
                .as_string(tgt),
                child,
            )
        )
        out.items.append(_attach(tgt, t, name, (cschema, cname), 3))


def _holds(t: TablePlan, same_on_source: bool, cols: Sequence[str], expressions: bool) -> bool:
    """Do the rows a load writes satisfy a unique index the source has too?

    Only when they are the source's rows as they are: the same index on the source, and
    every column it covers synced, of the same type on both sides and not masked (a
    ``fixed:`` or ``redact`` rule makes equal values; a target-only or unsynced column
    gets its default in every row; a type that differs may compare otherwise, citext).
    An index on expressions may read any column: kept when any column is masked or
    differs in type.
    """
    if not same_on_source:
        return False
    for c in cols:
        if c not in t.columns or c in t.masked or t.source_types.get(c) != t.column_types.get(c):
            return False
    return not (expressions and (t.masked or not t.same_types))


def record(dsn: str, run_id: str, s: SetAside) -> None:
    """Write the definitions into ``pgferry.set_aside`` and commit (before any drop)."""
    with connect(dsn, autocommit=True, application_name="pgferry sync set-aside") as c:
        with c.transaction():
            for i in s.items:
                c.execute(
                    "INSERT INTO pgferry.set_aside (table_name, name, step, definition, needs,"
                    " run_id) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (table_name, name,"
                    " step) DO UPDATE SET definition = excluded.definition,"
                    " needs = excluded.needs, run_id = excluded.run_id, at = clock_timestamp()",
                    [i.table, i.name, i.step, i.definition, i.needs, run_id],
                )


def forget(dsn: str, tables: Sequence[str]) -> None:
    """Delete the records of ``tables`` (their drops rolled back: nothing is missing)."""
    with connect(dsn, autocommit=True, application_name="pgferry sync set-aside") as c:
        c.execute("DELETE FROM pgferry.set_aside WHERE table_name = ANY(%s)", [list(tables)])


def drop(conn: psycopg.Connection[Any], s: SetAside) -> None:
    """Drop what was set aside (inside the caller's transaction; the record is committed)."""
    for d in s.drops:
        conn.execute(d)


def pending(conn: psycopg.Connection[Any]) -> dict[str, list[RebuildStep]]:
    """The recorded steps per table (``pgferry.set_aside``; none when it does not exist)."""
    if conn.execute("SELECT to_regclass('pgferry.set_aside')").fetchone() == (None,):
        return {}
    out: dict[str, list[RebuildStep]] = {}
    for t, name, step, definition, needs in conn.execute(
        "SELECT table_name, name, step, definition, needs FROM pgferry.set_aside"
        " ORDER BY table_name, step, name"
    ):
        out.setdefault(t, []).append(RebuildStep(t, name, step, definition, needs))
    return out


def primary_keys_set_aside(conn: psycopg.Connection[Any]) -> list[str]:
    """Tables whose primary key an interrupted run set aside (recorded, not yet rebuilt)."""
    return [table for table, steps in pending(conn).items() if any(map(_adds_key, steps))]


def _adds_key(i: RebuildStep) -> bool:
    """Does step ``i`` add a primary key (``USING INDEX``, or a partitioned table's own)?"""
    d = i.definition
    return i.step == 2 and d.startswith("ALTER TABLE") and " PRIMARY KEY " in d

"""Rules about building, dropping and rebuilding indexes and detaching partitions."""

from __future__ import annotations

from collections.abc import Iterator

from pgferry.lint.effects import qualified
from pgferry.lint.model import Context, Hit, Rule, Stmt
from pgferry.lint.rules._util import alter_actions
from pgferry.sqltext.nodes import defnames, list_name, qualname


def _index_table(cx: Context, index: str) -> str | None:
    """The table an index ("schema.name") belongs to: created in this run, else from the
    catalog (an index lives in its table's schema); None when neither knows it."""
    table = cx.index_table(index)
    if table is not None or cx.catalog is None:
        return table
    schema, _, name = index.partition(".")
    found = None
    for t in cx.catalog.tables.values():
        if any(i.name == name for i in t.indexes):
            if t.name.startswith(f"{schema}."):
                return t.name
            found = found or t.name
    return found


class RequireConcurrentIndexCreation(Rule):
    """CREATE INDEX without CONCURRENTLY blocks writes to the table while it builds.

    Not reported for tables created earlier in the same run (same file or an
    earlier pending migration), nor, in catalog mode, for empty tables.

    Anti-pattern::

        CREATE INDEX orders_created_idx ON orders (created_at);

    Safe (in a file of its own: it cannot run inside a transaction)::

        CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_created_idx ON orders (created_at);
    """

    code, name, severity = "PF040", "require-concurrent-index-creation", "error"
    message = "CREATE INDEX without CONCURRENTLY blocks writes while it builds"
    help = "CREATE INDEX CONCURRENTLY, in a migration file of its own."
    kinds = ("IndexStmt",)
    lock, work = "SHARE", "index"
    squawk = ("require-concurrent-index-creation",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        table = qualname(st.node.get("relation"))
        if not st.node.get("concurrent") and cx.existing(table):
            t = cx.catalog.tables.get(table) if cx.catalog else None
            if t is not None and t.kind == "p" and st.node.get("relation", {}).get("inh", True):
                yield Hit(
                    None,
                    table,
                    f"CREATE INDEX on partitioned {table} blocks writes to "
                    "every partition; CONCURRENTLY does not work on the parent: CREATE "
                    "INDEX ON ONLY the parent, build each partition's index CONCURRENTLY, "
                    "then ALTER INDEX ... ATTACH PARTITION",
                )
            else:
                yield Hit(None, table)


class RequireConcurrentIndexDeletion(Rule):
    """DROP INDEX without CONCURRENTLY takes ACCESS EXCLUSIVE on the table.

    Exempt as CREATE INDEX is: not reported when the index's table is new (created
    earlier in the same file, or by a pending migration on a target that lacks
    it) nor, in catalog mode, when the table is empty.

    Anti-pattern::

        DROP INDEX orders_created_idx;

    Safe::

        DROP INDEX CONCURRENTLY IF EXISTS orders_created_idx;
    """

    code, name, severity = "PF041", "require-concurrent-index-deletion", "error"
    message = "DROP INDEX without CONCURRENTLY blocks reads and writes on the table"
    help = "DROP INDEX CONCURRENTLY, in a migration file of its own."
    kinds = ("DropStmt",)
    lock = "ACCESS EXCLUSIVE"
    squawk = ("require-concurrent-index-deletion",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        if st.node.get("removeType") != "OBJECT_INDEX" or st.node.get("concurrent"):
            return
        for obj in st.node.get("objects") or []:
            table = _index_table(cx, qualified(list_name(obj)))
            if table is None or cx.existing(table):
                yield Hit(None, table)
                return


class RequireConcurrentReindex(Rule):
    """REINDEX without CONCURRENTLY blocks writes (and reads using the index).

    Anti-pattern::

        REINDEX INDEX orders_created_idx;

    Safe::

        REINDEX INDEX CONCURRENTLY orders_created_idx;
    """

    code, name, severity = "PF042", "require-concurrent-reindex", "error"
    message = "REINDEX without CONCURRENTLY blocks writes while it rebuilds"
    help = "REINDEX ... CONCURRENTLY (PostgreSQL 12+)."
    kinds = ("ReindexStmt",)
    min_pg = 12
    lock, work = "SHARE", "index"
    squawk = ("require-concurrent-reindex",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        if "concurrently" not in defnames(st.node.get("params")):
            rel = st.node.get("relation")
            yield Hit(None, qualname(rel) if rel else None)


class RequireConcurrentPartitionDetach(Rule):
    """DETACH PARTITION without CONCURRENTLY takes ACCESS EXCLUSIVE on the parent.

    Anti-pattern::

        ALTER TABLE measurements DETACH PARTITION measurements_2020;

    Safe::

        ALTER TABLE measurements DETACH PARTITION measurements_2020 CONCURRENTLY;
    """

    code, name, severity = "PF043", "require-concurrent-partition-detach", "warning"
    message = "DETACH PARTITION without CONCURRENTLY blocks reads and writes on the parent"
    help = "DETACH PARTITION ... CONCURRENTLY (PostgreSQL 14+)."
    kinds = ("AlterTableStmt",)
    subtypes = frozenset({"AT_DetachPartition"})
    min_pg = 14
    lock = "ACCESS EXCLUSIVE"
    squawk = ("require-concurrent-partition-detach",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        for table, cmd, _, body, off in alter_actions(cx, st):
            if cmd.get("subtype") == "AT_DetachPartition" and not body.get("concurrent"):
                yield Hit(off, table)


class BanConcurrentIndexCreationInTransaction(Rule):
    """CREATE INDEX CONCURRENTLY inside BEGIN ... COMMIT fails.

    Anti-pattern::

        BEGIN;
        CREATE INDEX CONCURRENTLY orders_created_idx ON orders (created_at);
        COMMIT;

    Safe::

        CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_created_idx ON orders (created_at);
    """

    code, name, severity = "PF044", "ban-concurrent-index-creation-in-transaction", "error"
    message = "CREATE INDEX CONCURRENTLY cannot run inside a transaction block"
    help = "Remove BEGIN/COMMIT; pgferry runs files with CONCURRENTLY outside a transaction."
    kinds = ("IndexStmt",)
    squawk = ("ban-concurrent-index-creation-in-transaction",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        if st.node.get("concurrent") and st.explicit_tx:
            yield Hit(None)


class IndexTooManyColumns(Rule):
    """A non-unique index over more than 3 columns is rarely used in full and costs writes.

    Anti-pattern::

        CREATE INDEX CONCURRENTLY ev_idx ON events (account_id, kind, created_at, user_id);

    Safe::

        CREATE INDEX CONCURRENTLY ev_idx ON events (account_id, created_at);
    """

    code, name, severity = "PF045", "index-too-many-columns", "warning"
    message = "non-unique index over more than 3 columns: usually only the leading ones help"
    help = "Index the 1-3 most selective leading columns."
    kinds = ("IndexStmt",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        if not st.node.get("unique") and len(st.node.get("indexParams") or []) > 3:
            yield Hit(None, qualname(st.node.get("relation")))


RULES: list[type[Rule]] = [
    RequireConcurrentIndexCreation,
    RequireConcurrentIndexDeletion,
    RequireConcurrentReindex,
    RequireConcurrentPartitionDetach,
    BanConcurrentIndexCreationInTransaction,
    IndexTooManyColumns,
]

"""Other rules: enum ordering, duplicate assignments, long names, rewrites, triggers, backfills."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

from pgferry.lint.effects import DATA_KINDS
from pgferry.lint.model import Context, Hit, Rule, Stmt
from pgferry.lint.rules._util import alter_actions
from pgferry.sqltext.nodes import defnames, loc, qualname, unwrap


class RequireEnumValueOrdering(Rule):
    """ALTER TYPE ... ADD VALUE without BEFORE/AFTER appends the label at the end.

    Enum order drives ``ORDER BY`` and comparisons; say where the label goes.

    Anti-pattern::

        ALTER TYPE status ADD VALUE 'paused';

    Safe::

        ALTER TYPE status ADD VALUE IF NOT EXISTS 'paused' AFTER 'active';
    """

    code, name, severity = "PF070", "require-enum-value-ordering", "warning"
    message = "ADD VALUE without BEFORE/AFTER: the new label sorts last"
    help = "Say BEFORE 'x' or AFTER 'y'."
    kinds = ("AlterEnumStmt",)
    squawk = ("require-enum-value-ordering",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        n = st.node
        if n.get("newVal") and not n.get("oldVal") and not n.get("newValNeighbor"):
            yield Hit(None)


class BanDuplicateColumnAssignments(Rule):
    """The same column assigned twice in one UPDATE ... SET fails at run time.

    Anti-pattern::

        UPDATE users SET email = lower(email), email = trim(email);

    Safe::

        UPDATE users SET email = lower(trim(email));
    """

    code, name, severity = "PF071", "ban-duplicate-column-assignments", "error"
    message = "column assigned more than once in SET: PostgreSQL rejects it"
    help = "Assign each column once."
    kinds = ("UpdateStmt", "InsertStmt")
    squawk = ("ban-duplicate-column-assignments",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        targets = st.node.get("targetList") or []
        if st.kind == "InsertStmt":
            _, occ = unwrap(st.node.get("onConflictClause"))
            targets = occ.get("targetList") or []
        res = [t["ResTarget"] for t in targets if "ResTarget" in t]
        counts = Counter(r.get("name") for r in res)
        for r in res:
            if counts[r.get("name")] > 1:
                yield Hit(loc(r), message=f"column {r.get('name')} is assigned more than once")


_LONG = re.compile(r'[^\s"\'(),;.]{64,}|"(?:[^"]|""){64,}"')


class IdentifierTooLong(Rule):
    """PostgreSQL silently truncates identifiers to 63 bytes; two long names can collide.

    Anti-pattern::

        CREATE INDEX CONCURRENTLY index_on_customer_invoices_by_billing_period_and_status_and_region
            ON customer_invoices (billing_period, status, region);

    Safe::

        CREATE INDEX CONCURRENTLY customer_invoices_period_status_idx
            ON customer_invoices (billing_period, status, region);
    """

    code, name, severity = "PF072", "identifier-too-long", "error"
    message = "identifier longer than 63 bytes: PostgreSQL truncates it silently"
    help = "Use a name of at most 63 bytes."
    kinds = (
        "CreateStmt",
        "AlterTableStmt",
        "IndexStmt",
        "RenameStmt",
        "CreateDomainStmt",
        "CreateEnumStmt",
        "CompositeTypeStmt",
        "CreateSeqStmt",
        "ViewStmt",
        "CreateFunctionStmt",
        "CreateTrigStmt",
        "CreateSchemaStmt",
        "CreateTableAsStmt",
        "AlterDomainStmt",
    )
    squawk = ("identifier-too-long",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        # The parser has already truncated names, so look at the source tokens.
        if not cx.file:
            return iter(())
        long_file = cx.scratch.get("long_words")
        if long_file is None:  # str.split is far cheaper than the regex; most files stop here
            text = cx.file.text
            long_file = max(map(len, text.split()), default=0) >= 64 and bool(_LONG.search(text))
            cx.scratch["long_words"] = long_file
        return self._scan(st, cx) if long_file else iter(())

    def _scan(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        assert cx.file is not None
        raw = cx.file.data[st.start : st.end]
        text = raw.decode("utf-8", "replace")
        if not _LONG.search(text):
            return
        from pgferry.sqltext.parser import parser

        scan = parser().scan
        for tok in scan(text):
            if tok.name != "IDENT":
                continue
            word = text[tok.start : tok.end + 1]
            size = len(word.strip('"').replace('""', '"').encode("utf-8"))
            if size > 63:
                at = st.start + len(text[: tok.start].encode("utf-8"))
                yield Hit(
                    at,
                    message=f"identifier {word[:24]}... is {size} bytes; "
                    "PostgreSQL keeps 63 and truncates the rest silently",
                )


class PreferRepack(Rule):
    """VACUUM FULL and CLUSTER rewrite the table under ACCESS EXCLUSIVE.

    Anti-pattern::

        VACUUM FULL orders;

    Safe::

        -- pg_repack / pg_squeeze rebuild online; plain VACUUM does not lock
        VACUUM (ANALYZE) orders;
    """

    code, name, severity = "PF073", "prefer-repack", "error"
    message = "VACUUM FULL / CLUSTER rewrites the table under ACCESS EXCLUSIVE"
    help = "Use pg_repack or pg_squeeze; plain VACUUM does not block."
    kinds = ("VacuumStmt", "ClusterStmt")
    lock, work = "ACCESS EXCLUSIVE", "rewrite"
    squawk = ("prefer-repack",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        n = st.node
        if st.kind == "ClusterStmt":
            yield Hit(None, qualname(n.get("relation")) if n.get("relation") else None)
        elif n.get("is_vacuumcmd") and "full" in defnames(n.get("options")):
            rels = [unwrap(r)[1].get("relation") for r in n.get("rels") or []]
            yield Hit(None, qualname(rels[0]) if rels and rels[0] else None)


class SetLoggedUnlogged(Rule):
    """SET LOGGED / SET UNLOGGED rewrites the table under ACCESS EXCLUSIVE.

    Anti-pattern::

        ALTER TABLE events SET LOGGED;

    Safe::

        -- create the table with the persistence it needs; or copy into a new table
    """

    code, name, severity = "PF074", "set-logged-unlogged", "error"
    message = "SET LOGGED/UNLOGGED rewrites the table under ACCESS EXCLUSIVE"
    help = "Choose persistence at CREATE TABLE; otherwise copy into a new table and swap."
    kinds = ("AlterTableStmt",)
    subtypes = frozenset({"AT_SetLogged", "AT_SetUnLogged"})
    lock, work = "ACCESS EXCLUSIVE", "rewrite"

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        for table, cmd, _, _, off in alter_actions(cx, st):
            if cmd.get("subtype") in ("AT_SetLogged", "AT_SetUnLogged") and cx.existing(table):
                yield Hit(off, table)


class CreateTriggerOnExistingTable(Rule):
    """CREATE TRIGGER takes SHARE ROW EXCLUSIVE: writes wait, and queue behind long reads.

    Anti-pattern::

        CREATE TRIGGER audit AFTER UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION audit();

    Safe::

        SET lock_timeout = '2s';  -- pgferry sets it and retries; keep the file short
        CREATE OR REPLACE TRIGGER audit AFTER UPDATE ON orders
            FOR EACH ROW EXECUTE FUNCTION audit();
    """

    code, name, severity = "PF075", "create-trigger-on-existing-table", "warning"
    message = "CREATE TRIGGER on an existing table blocks writes while it waits for its lock"
    help = "Keep the migration short and rely on lock_timeout with retries."
    kinds = ("CreateTrigStmt",)
    lock = "SHARE ROW EXCLUSIVE"

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        table = qualname(st.node.get("relation"))
        if cx.existing(table):
            yield Hit(None, table)


class BackfillWithoutWhere(Rule):
    """UPDATE or DELETE of a whole table in one statement locks every row until commit.

    A warning, and an error when the catalog says the table has more rows than
    ``[lint] big_table_rows`` (default 100,000), as strong_migrations does for
    backfills of big tables.

    Anti-pattern::

        UPDATE users SET plan = 'free';

    Safe::

        UPDATE users SET plan = 'free' WHERE id >= 1 AND id < 10001 AND plan IS NULL;
        -- repeat in batches (pgferry sync/backfill jobs, or a loop outside migrations)
    """

    code, name, severity = "PF076", "backfill-without-where", "warning"
    message = "UPDATE/DELETE without WHERE changes every row in one transaction"
    help = "Backfill in batches by key range, outside the schema migration."
    kinds = ("UpdateStmt", "DeleteStmt")
    lock, work = "ROW EXCLUSIVE", "rewrite"

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        table = qualname(st.node.get("relation"))
        if st.node.get("whereClause") or not cx.existing(table):
            return
        t = cx.catalog.tables.get(table) if cx.catalog is not None else None
        if t is not None and t.rows > cx.big_table_rows:
            from pgferry.lint.impact import human_rows

            verb = "UPDATE" if st.kind == "UpdateStmt" else "DELETE"
            yield Hit(
                None,
                table,
                f"{verb} without WHERE changes every row of {table} "
                f"({human_rows(t.rows)}, over big_table_rows {cx.big_table_rows:,}) "
                "in one transaction",
                severity="error",
            )
        else:
            yield Hit(None, table)


class DataChangeWithDdl(Rule):
    """Changing data in the same transaction as DDL keeps the DDL's lock for the whole backfill.

    Reported once per file and altered table, at the first data change after
    the ALTER TABLE, with the number of data-changing statements that follow it.

    Anti-pattern::

        ALTER TABLE users ADD COLUMN plan text;
        UPDATE users SET plan = 'free' WHERE plan IS NULL;

    Safe::

        -- V7__add_plan.sql
        ALTER TABLE users ADD COLUMN plan text;
        -- V8__backfill_plan.sql (or a batched job)
        UPDATE users SET plan = 'free' WHERE plan IS NULL;
    """

    code, name, severity = "PF077", "data-change-with-ddl", "warning"
    message = "data change in the same transaction as ALTER TABLE: the lock is held until commit"
    help = "Put the backfill in its own migration (or a batched job)."
    kinds = tuple(sorted(DATA_KINDS))
    lock = "ACCESS EXCLUSIVE"

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        if st.in_tx and cx.tx_ddl_tables:
            # table -> [offset of the first data change after its DDL, data changes]
            seen: dict[str, list[int]] = cx.scratch.setdefault("data_after_ddl", {})
            for table in sorted(cx.tx_ddl_tables):
                entry = seen.setdefault(table, [st.start, 0])
                entry[1] += 1
        return iter(())

    def finish(self, cx: Context) -> Iterator[Hit]:
        for table, (at, count) in cx.scratch.get("data_after_ddl", {}).items():
            more = f" ({count} data-changing statements in this file)" if count > 1 else ""
            yield Hit(
                at,
                table,
                f"data change after ALTER TABLE {table} in the same "
                f"transaction: its ACCESS EXCLUSIVE lock is held until commit{more}",
            )


class SyntaxError_(Rule):
    """SQL that PostgreSQL's parser rejects (reported with file, line and the parser's words).

    ``pgferry lint`` exits 2; ``migrate plan`` shows it beside the file and
    ``migrate up`` refuses the file.
    """

    code, name, severity = "PF000", "syntax-error", "error"
    message = "SQL does not parse"
    help = "Fix the statement; the message quotes PostgreSQL's parser."


class UnusedIgnore(Rule):
    """A ``-- pgferry:ignore`` comment that suppresses nothing (or names an unknown rule).

    Stale ignores hide the next real problem; remove them.

    Anti-pattern::

        -- pgferry:ignore ban-drop-table -- legacy
        ALTER TABLE users ADD COLUMN nickname text;
    """

    code, name, severity = "PF900", "unused-ignore", "warning"
    message = "pgferry:ignore suppresses nothing"
    help = "Delete the comment, or move it before the statement it is meant for."


RULES: list[type[Rule]] = [
    RequireEnumValueOrdering,
    BanDuplicateColumnAssignments,
    IdentifierTooLong,
    PreferRepack,
    SetLoggedUnlogged,
    CreateTriggerOnExistingTable,
    BackfillWithoutWhere,
    DataChangeWithDdl,
    SyntaxError_,
    UnusedIgnore,
]

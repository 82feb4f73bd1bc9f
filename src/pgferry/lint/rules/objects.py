"""Rules about dropping, truncating and renaming whole objects."""

from __future__ import annotations

from collections.abc import Iterator

from pgferry.lint.model import Context, Hit, Rule, Stmt
from pgferry.lint.nodes import list_name, qualname, unwrap


class BanDropTable(Rule):
    """DROP TABLE destroys data and breaks every client of the table.

    Not reported for tables created earlier in the same run.

    Anti-pattern::

        DROP TABLE invoices;

    Safe::

        -- stop using the table in the application first; keep a backup;
        -- then, in a later release:
        DROP TABLE IF EXISTS invoices;
    """

    code, name, severity = "PF050", "ban-drop-table", "error"
    message = "DROP TABLE destroys data and breaks clients that still use the table"
    help = "Remove all uses first, take a backup, drop in a later release."
    kinds = ("DropStmt",)
    lock = "ACCESS EXCLUSIVE"
    squawk = ("ban-drop-table",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        if st.node.get("removeType") != "OBJECT_TABLE":
            return
        for obj in st.node.get("objects") or []:
            name = list_name(obj)
            table = name if "." in name else f"public.{name}"
            if not cx.is_new(table):
                yield Hit(None, table)
                return


class BanDropDatabase(Rule):
    """DROP DATABASE in a migration destroys everything.

    Anti-pattern::

        DROP DATABASE analytics;

    Safe::

        -- never from a migration; do it by hand, after a backup
    """

    code, name, severity = "PF051", "ban-drop-database", "error"
    message = "DROP DATABASE does not belong in a migration"
    help = "Drop databases by hand, after a backup."
    kinds = ("DropdbStmt",)
    squawk = ("ban-drop-database",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        yield Hit(None)


class BanTruncateCascade(Rule):
    """TRUNCATE ... CASCADE also empties every table that references it, recursively.

    Anti-pattern::

        TRUNCATE users CASCADE;

    Safe::

        TRUNCATE users, sessions, orders;  -- name every table you mean to empty
    """

    code, name, severity = "PF052", "ban-truncate-cascade", "error"
    message = "TRUNCATE CASCADE silently empties every referencing table too"
    help = "List the tables to truncate explicitly."
    kinds = ("TruncateStmt",)
    lock = "ACCESS EXCLUSIVE"
    squawk = ("ban-truncate-cascade",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        if st.node.get("behavior") == "DROP_CASCADE":
            rels = st.node.get("relations") or []
            yield Hit(None, qualname(unwrap(rels[0])[1]) if rels else None)


class RenamingTable(Rule):
    """RENAME TABLE breaks every client that uses the old name.

    Anti-pattern::

        ALTER TABLE users RENAME TO accounts;

    Safe::

        ALTER TABLE users RENAME TO accounts;
        CREATE VIEW users AS SELECT * FROM accounts;  -- same migration: old name keeps working
        -- drop the view once no client uses it
    """

    code, name, severity = "PF053", "renaming-table", "warning"
    message = "RENAME TABLE breaks clients that still use the old name"
    help = "Rename and create a view with the old name in the same transaction."
    kinds = ("RenameStmt",)
    squawk = ("renaming-table",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        if st.node.get("renameType") == "OBJECT_TABLE":
            table = qualname(st.node.get("relation"))
            if not cx.is_new(table):
                yield Hit(None, table)


class RenamingEnumValue(Rule):
    """ALTER TYPE ... RENAME VALUE breaks every client that sends or compares the old label.

    Anti-pattern::

        ALTER TYPE status RENAME VALUE 'canceled' TO 'cancelled';

    Safe::

        ALTER TYPE status ADD VALUE IF NOT EXISTS 'cancelled' AFTER 'canceled';
        -- migrate rows and clients, then stop using the old label
    """

    code, name, severity = "PF054", "renaming-enum-value", "warning"
    message = "RENAME VALUE breaks clients that still use the old enum label"
    help = "Add the new label, migrate data and clients, retire the old label."
    kinds = ("AlterEnumStmt",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        if st.node.get("oldVal"):
            yield Hit(None)


class RenamingSchema(Rule):
    """ALTER SCHEMA ... RENAME breaks every qualified reference and search_path.

    Anti-pattern::

        ALTER SCHEMA billing RENAME TO invoicing;

    Safe::

        -- create the new schema, move objects one by one, keep the old names working
    """

    code, name, severity = "PF055", "renaming-schema", "warning"
    message = "renaming a schema breaks every qualified name and search_path that uses it"
    help = "Create the new schema and move objects gradually."
    kinds = ("RenameStmt",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        if st.node.get("renameType") == "OBJECT_SCHEMA":
            yield Hit(None)


RULES: list[type[Rule]] = [
    BanDropTable, BanDropDatabase, BanTruncateCascade, RenamingTable, RenamingEnumValue,
    RenamingSchema,
]

"""Rules about dropping, truncating and renaming whole objects."""

from __future__ import annotations

from collections.abc import Iterator

from pgferry.lint.effects import qualified
from pgferry.lint.model import Context, Hit, Rule, Stmt
from pgferry.sqltext.nodes import list_name, names, qualname, unwrap


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
            table = qualified(list_name(obj))
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
    """RENAME TABLE breaks every running client that uses the old name.

    squawk and strong_migrations treat this as an error too. Rename in three
    steps: *expand* (make the new name work beside the old one: rename and keep
    a view with the old name, in the same migration), *dual-write* (both names
    take reads and writes while clients move), *contract* (drop the view once no
    client uses the old name).

    Anti-pattern::

        ALTER TABLE users RENAME TO accounts;

    Safe::

        -- expand (one migration, one transaction: the old name never disappears):
        ALTER TABLE users RENAME TO accounts;
        CREATE VIEW users AS SELECT * FROM accounts;  -- simple views take writes too
        -- move every client to accounts; contract, in a later release:
        DROP VIEW users;
    """

    code, name, severity = "PF053", "renaming-table", "error"
    message = (
        "RENAME TABLE breaks running clients that use the old name: expand, "
        "dual-write, contract instead"
    )
    help = (
        "Expand: rename and create a view with the old name in the same migration; "
        "move clients; contract: drop the view in a later release."
    )
    kinds = ("RenameStmt",)
    squawk = ("renaming-table",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        if st.node.get("renameType") == "OBJECT_TABLE":
            table = qualname(st.node.get("relation"))
            if not cx.is_new(table):
                old, new = table.split(".", 1)[1], st.node.get("newname", "")
                yield Hit(
                    None,
                    table,
                    f"RENAME TABLE {old} TO {new} breaks every running "
                    f"client that uses {old}: expand (rename and create a view {old} "
                    "in the same migration), dual-write (both names work while "
                    "clients move), then contract (drop the view) in a later release",
                )


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
    squawk = ("renaming-object",)

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
    squawk = ("renaming-object",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        if st.node.get("renameType") == "OBJECT_SCHEMA":
            yield Hit(None)


_OBJECTS = {
    "OBJECT_VIEW": "view",
    "OBJECT_MATVIEW": "materialized view",
    "OBJECT_FUNCTION": "function",
    "OBJECT_PROCEDURE": "procedure",
    "OBJECT_TYPE": "type",
    "OBJECT_SEQUENCE": "sequence",
    "OBJECT_DOMAIN": "domain",
    "OBJECT_INDEX": "index",
}


class RenamingObject(Rule):
    """Renaming a view, function, type, sequence, domain or index breaks clients using it.

    (Tables, columns, schemas and enum values have rules of their own.)

    Anti-pattern::

        ALTER VIEW active_users RENAME TO current_users;

    Safe::

        CREATE VIEW current_users AS SELECT * FROM active_users;
        -- move clients, then drop the old name in a later release
    """

    code, name, severity = "PF056", "renaming-object", "warning"
    message = "renaming a database object breaks clients that still use the old name"
    help = "Create the new name alongside the old one, move clients, drop the old one later."
    kinds = ("RenameStmt",)
    squawk = ("renaming-object",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        what = _OBJECTS.get(st.node.get("renameType", ""))
        if what:
            yield Hit(None, message=f"renaming a {what} breaks clients that still use the old name")


class RequireTableSchema(Rule):
    """CREATE TABLE without a schema lands wherever search_path points at run time.

    Off by default (``[lint] enable = ["require-table-schema"]``).

    Anti-pattern::

        CREATE TABLE invoices (id bigint);

    Safe::

        CREATE TABLE billing.invoices (id bigint);
    """

    code, name, severity = "PF057", "require-table-schema", "warning"
    message = "CREATE TABLE without a schema: the table goes wherever search_path points"
    help = "Qualify the table name with its schema."
    kinds = ("CreateStmt",)
    opt_in = True
    squawk = ("require-table-schema",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        if not (st.node.get("relation") or {}).get("schemaname"):
            yield Hit(None)


class EnumLabelMismatch(Rule):
    """ALTER TYPE on an enum label the target does not have (or already has): it fails.

    Catalog mode only: pgferry compares the statement with the enum's labels in
    the target. ``ADD VALUE 'x'`` without ``IF NOT EXISTS`` when 'x' exists,
    ``BEFORE``/``AFTER`` a label that does not exist, or ``RENAME VALUE`` of a
    missing label all stop the migration (half-way, when the file runs outside a
    transaction).

    Anti-pattern (status already has 'paused')::

        ALTER TYPE status ADD VALUE 'paused' AFTER 'activ';

    Safe::

        ALTER TYPE status ADD VALUE IF NOT EXISTS 'paused' AFTER 'active';
    """

    code, name, severity = "PF058", "enum-label-mismatch", "error"
    message = "enum label does not match the target: the statement will fail"
    help = "Use IF NOT EXISTS and the target's real labels (see the catalog)."
    kinds = ("AlterEnumStmt",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        if cx.catalog is None:
            return
        name = ".".join(names(st.node.get("typeName")))
        key = qualified(name)
        labels = cx.catalog.enums.get(key)
        if labels is None:
            return
        n = st.node
        new, old, near = n.get("newVal"), n.get("oldVal"), n.get("newValNeighbor")
        if old:
            if old not in labels:
                yield Hit(
                    None,
                    message=f"{key} has no label {old!r} to rename (labels: {', '.join(labels)})",
                )
            return
        if new in labels and not n.get("skipIfNewValExists"):
            yield Hit(
                None,
                message=f"{key} already has label {new!r}: ADD VALUE fails (add IF NOT EXISTS)",
            )
        if near and near not in labels:
            yield Hit(
                None,
                message=f"{key} has no label {near!r} to add {new!r} "
                f"{'AFTER' if n.get('newValIsAfter') else 'BEFORE'} "
                f"(labels: {', '.join(labels)})",
            )


RULES: list[type[Rule]] = [
    BanDropTable,
    BanDropDatabase,
    BanTruncateCascade,
    RenamingTable,
    RenamingEnumValue,
    RenamingSchema,
    RenamingObject,
    RequireTableSchema,
    EnumLabelMismatch,
]

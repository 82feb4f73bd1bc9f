"""Rules about adding, changing and removing columns of existing tables."""

from __future__ import annotations

from collections.abc import Iterator

from pgferry.lint.model import Context, Hit, Node, Rule, Stmt
from pgferry.lint.rules._util import alter_actions
from pgferry.lint.rules.volatility import is_volatile
from pgferry.lint.types import binary_coercible
from pgferry.sqltext.nodes import constraints, func_calls, loc, type_name, type_text


def _added_columns(cx: Context, st: Stmt) -> Iterator[tuple[str, Node, int]]:
    for table, cmd, kind, body, off in alter_actions(cx, st):
        if cmd.get("subtype") == "AT_AddColumn" and kind == "ColumnDef" and cx.existing(table):
            yield table, body, off


class AddingFieldWithDefault(Rule):
    """ADD COLUMN with a volatile DEFAULT rewrites the whole table.

    Since PostgreSQL 11 a constant (or stable) default is stored in the catalog
    and costs nothing; a volatile one (``random()``, ``gen_random_uuid()``,
    ``clock_timestamp()``, ``nextval()``, or a user function marked VOLATILE)
    must be computed for every existing row, so the table is rewritten under
    ACCESS EXCLUSIVE. Before 11 every non-NULL default rewrites. In catalog mode
    user functions are judged by ``pg_proc.provolatile``; without a catalog an
    unknown function counts as volatile.

    Anti-pattern::

        ALTER TABLE accounts ADD COLUMN token uuid DEFAULT gen_random_uuid();

    Safe::

        ALTER TABLE accounts ADD COLUMN token uuid;
        ALTER TABLE accounts ALTER COLUMN token SET DEFAULT gen_random_uuid();
        -- backfill existing rows in batches, in later migrations
        UPDATE accounts SET token = gen_random_uuid() WHERE id BETWEEN 1 AND 10000;
    """

    code, name, severity = "PF001", "adding-field-with-default", "error"
    message = "ADD COLUMN with a volatile default rewrites the table under ACCESS EXCLUSIVE"
    help = "Add the column without the default, SET DEFAULT separately, backfill in batches."
    kinds = ("AlterTableStmt",)
    subtypes = frozenset({"AT_AddColumn"})
    lock, work = "ACCESS EXCLUSIVE", "rewrite"
    squawk = ("adding-field-with-default",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        for table, col, _ in _added_columns(cx, st):
            for con in constraints(col):
                if con.get("contype") != "CONSTR_DEFAULT":
                    continue
                expr = con.get("raw_expr")
                if cx.pg_version < 11:
                    if "A_Const" in (expr or {}) and (expr or {})["A_Const"].get("isnull"):
                        continue
                    yield Hit(
                        loc(con),
                        table,
                        "ADD COLUMN with a DEFAULT rewrites the table "
                        f"before PostgreSQL 11 (linting for {cx.pg_version})",
                    )
                    continue
                bad = [
                    f"{s + '.' if s else ''}{n}()"
                    for s, n, _ in func_calls(expr)
                    if is_volatile(cx, s, n)
                ]
                if bad:
                    where = _expr_loc(expr) or loc(con)
                    yield Hit(
                        where,
                        table,
                        f"ADD COLUMN default {bad[0]} is volatile: it "
                        "rewrites the table under ACCESS EXCLUSIVE",
                    )


def _expr_loc(expr: Node | None) -> int | None:
    if not expr:
        return None
    return loc(next(iter(expr.values()))) if isinstance(expr, dict) else None


class AddingRequiredField(Rule):
    """ADD COLUMN ... NOT NULL without a DEFAULT fails on a table that has rows.

    Anti-pattern::

        ALTER TABLE orders ADD COLUMN region text NOT NULL;

    Safe::

        ALTER TABLE orders ADD COLUMN region text NOT NULL DEFAULT 'eu';
        -- or: add it nullable, backfill, then add NOT NULL the safe way
        ALTER TABLE orders ADD COLUMN region text;
    """

    code, name, severity = "PF002", "adding-required-field", "error"
    message = "ADD COLUMN NOT NULL without a DEFAULT fails when the table has rows"
    help = "Give it a constant DEFAULT, or add it nullable, backfill, then enforce NOT NULL."
    kinds = ("AlterTableStmt",)
    subtypes = frozenset({"AT_AddColumn"})
    lock = "ACCESS EXCLUSIVE"
    squawk = ("adding-required-field",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        for table, col, off in _added_columns(cx, st):
            kinds = {c.get("contype") for c in constraints(col)}
            if (
                "CONSTR_NOTNULL" in kinds
                and not kinds & {"CONSTR_DEFAULT", "CONSTR_GENERATED", "CONSTR_IDENTITY"}
                and type_name(col.get("typeName"))[0]
                not in ("serial", "bigserial", "smallserial", "serial4", "serial8", "serial2")
            ):
                yield Hit(off, table)


class AddingNotNullableField(Rule):
    """SET NOT NULL on an existing column scans the table under ACCESS EXCLUSIVE.

    From PostgreSQL 12 the scan is skipped when a validated
    ``CHECK (col IS NOT NULL)`` already proves it (in catalog mode pgferry looks
    the check up; without a catalog it accepts one validated earlier in the run).

    Anti-pattern::

        ALTER TABLE users ALTER COLUMN email SET NOT NULL;

    Safe::

        ALTER TABLE users ADD CONSTRAINT users_email_nn CHECK (email IS NOT NULL) NOT VALID;
        -- next migration:
        ALTER TABLE users VALIDATE CONSTRAINT users_email_nn;
        ALTER TABLE users ALTER COLUMN email SET NOT NULL;
        ALTER TABLE users DROP CONSTRAINT users_email_nn;
    """

    code, name, severity = "PF003", "adding-not-nullable-field", "error"
    message = "SET NOT NULL scans the whole table under ACCESS EXCLUSIVE"
    help = (
        "Add CHECK (col IS NOT NULL) NOT VALID, VALIDATE it in the next migration, "
        "then SET NOT NULL (PostgreSQL 12+ skips the scan)."
    )
    kinds = ("AlterTableStmt",)
    subtypes = frozenset({"AT_SetNotNull"})
    lock, work = "ACCESS EXCLUSIVE", "scan"
    squawk = ("adding-not-nullable-field",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        for table, cmd, _, _, off in alter_actions(cx, st):
            if cmd.get("subtype") != "AT_SetNotNull" or not cx.existing(table):
                continue
            col = cmd.get("name", "")
            if cx.pg_version >= 12 and cx.validated_not_null(table, col):
                continue
            t = cx.catalog.tables.get(table) if cx.catalog else None
            if t is not None and (
                col in t.not_null or (cx.pg_version >= 12 and t.not_null_proven(col))
            ):
                continue
            yield Hit(off, table)


class AddingStoredGeneratedColumn(Rule):
    """ADD COLUMN ... GENERATED ALWAYS AS (...) STORED rewrites the table.

    Anti-pattern::

        ALTER TABLE orders ADD COLUMN total numeric GENERATED ALWAYS AS (qty * price) STORED;

    Safe::

        ALTER TABLE orders ADD COLUMN total numeric;
        -- fill it from a trigger for new rows and backfill old rows in batches,
        -- or compute it in a view
    """

    code, name, severity = "PF004", "adding-stored-generated-column", "error"
    message = "adding a stored generated column rewrites the table under ACCESS EXCLUSIVE"
    help = "Add a plain column, keep it current with a trigger, backfill in batches."
    kinds = ("AlterTableStmt",)
    subtypes = frozenset({"AT_AddColumn"})
    lock, work = "ACCESS EXCLUSIVE", "rewrite"
    squawk = ("adding-field-with-default",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        for table, col, _ in _added_columns(cx, st):
            for con in constraints(col):
                if (
                    con.get("contype") == "CONSTR_GENERATED"
                    and con.get("generated_kind", "s") == "s"
                ):
                    yield Hit(loc(con), table)


class AddingIdentityColumn(Rule):
    """Adding an identity or serial column to an existing table rewrites it.

    Every existing row needs a value from the sequence, so PostgreSQL rewrites
    the table under ACCESS EXCLUSIVE.

    Anti-pattern::

        ALTER TABLE events ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;

    Safe::

        ALTER TABLE events ADD COLUMN id bigint;
        CREATE SEQUENCE events_id_seq OWNED BY events.id;
        ALTER TABLE events ALTER COLUMN id SET DEFAULT nextval('events_id_seq');
        -- backfill old rows in batches, then add NOT NULL and the key the safe way
    """

    code, name, severity = "PF005", "adding-identity-column", "error"
    message = "adding an identity/serial column rewrites the table under ACCESS EXCLUSIVE"
    help = "Add a nullable column with a sequence default, backfill in batches."
    kinds = ("AlterTableStmt",)
    subtypes = frozenset({"AT_AddColumn"})
    lock, work = "ACCESS EXCLUSIVE", "rewrite"
    squawk = ("adding-field-with-default",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        for table, col, off in _added_columns(cx, st):
            serial = type_name(col.get("typeName"))[0] in (
                "serial",
                "bigserial",
                "smallserial",
                "serial2",
                "serial4",
                "serial8",
            )
            ident = any(c.get("contype") == "CONSTR_IDENTITY" for c in constraints(col))
            if serial or ident:
                yield Hit(off, table)


class BanDropColumn(Rule):
    """DROP COLUMN breaks every client that still reads or writes the column.

    Anti-pattern::

        ALTER TABLE users DROP COLUMN legacy_flag;

    Safe::

        -- 1. deploy code that no longer uses the column (ORMs: mark it ignored)
        -- 2. then, in a later migration:
        ALTER TABLE users DROP COLUMN IF EXISTS legacy_flag;
    """

    code, name, severity = "PF006", "ban-drop-column", "warning"
    message = "DROP COLUMN breaks clients that still use the column; the data is gone"
    help = (
        "Stop using the column in the application first, then drop it in a later release "
        "(a file with `-- pgferry:phase contract` and a `require-no-clients` guard waits "
        "for that)."
    )
    kinds = ("AlterTableStmt",)
    subtypes = frozenset({"AT_DropColumn"})
    lock = "ACCESS EXCLUSIVE"
    squawk = ("ban-drop-column",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        for table, cmd, _, _, off in alter_actions(cx, st):
            if cmd.get("subtype") == "AT_DropColumn" and not cx.is_new(table):
                yield Hit(off, table)


class BanDropNotNull(Rule):
    """DROP NOT NULL lets NULLs in that clients may not expect.

    Anti-pattern::

        ALTER TABLE users ALTER COLUMN email DROP NOT NULL;

    Safe::

        -- make sure every reader handles NULL first, then drop the constraint
    """

    code, name, severity = "PF007", "ban-drop-not-null", "warning"
    message = "DROP NOT NULL lets NULLs in that existing clients may not expect"
    help = "Make sure every reader handles NULL before dropping the constraint."
    kinds = ("AlterTableStmt",)
    subtypes = frozenset({"AT_DropNotNull"})
    squawk = ("ban-drop-not-null",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        for table, cmd, _, _, off in alter_actions(cx, st):
            if cmd.get("subtype") == "AT_DropNotNull" and not cx.is_new(table):
                yield Hit(off, table)


_MAYBE_FREE = {"text", "varchar", "numeric", "varbit", "inet"}


class ChangingColumnType(Rule):
    """ALTER COLUMN TYPE usually rewrites the table (and its indexes).

    Binary-coercible changes are free and are not reported: ``varchar(n)`` →
    ``text``, ``varchar(n)`` → ``varchar(m)`` with m ≥ n, ``numeric(p,s)`` →
    ``numeric(q,s)`` with q ≥ p, ``cidr`` → ``inet``. pgferry knows the current
    type from the catalog, or from a CREATE TABLE / ADD COLUMN earlier in the run;
    when it knows neither it reports the change.

    Anti-pattern::

        ALTER TABLE events ALTER COLUMN id TYPE bigint;

    Safe::

        ALTER TABLE events ADD COLUMN id_new bigint;
        -- trigger to keep id_new = id, backfill in batches, then swap the columns
    """

    code, name, severity = "PF008", "changing-column-type", "error"
    message = "ALTER COLUMN TYPE rewrites the table and its indexes under ACCESS EXCLUSIVE"
    help = (
        "Add a new column, keep it in sync with a trigger, backfill, then swap (`pgferry "
        'migrate new --expand-contract "change type of TABLE.COLUMN to TYPE"` scaffolds '
        "it)."
    )
    kinds = ("AlterTableStmt",)
    subtypes = frozenset({"AT_AlterColumnType"})
    lock, work = "ACCESS EXCLUSIVE", "rewrite"
    squawk = ("changing-column-type",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        for table, cmd, kind, body, off in alter_actions(cx, st):
            if cmd.get("subtype") != "AT_AlterColumnType" or not cx.existing(table):
                continue
            col = cmd.get("name", "")
            old = cx.column_type(table, col)
            t = cx.catalog.tables.get(table) if cx.catalog else None
            if old is None and t is not None:
                old = t.columns.get(col)
            tn = body.get("typeName") if kind == "ColumnDef" else None
            if old and tn and binary_coercible(old, tn) and not body.get("raw_default"):
                continue
            where = loc(tn) if tn else None
            msg = None
            if old is None and tn and type_name(tn)[0] in _MAYBE_FREE:
                msg = (
                    f"ALTER COLUMN {col} TYPE {type_text(tn)}: rewrites the table under "
                    "ACCESS EXCLUSIVE unless the current type is binary-coercible (e.g. "
                    "varchar(n) to text); lint with --env or --catalog to know"
                )
            yield Hit(where if where is not None else off, table, msg)


class RenamingColumn(Rule):
    """RENAME COLUMN breaks every running client that uses the old name.

    Application servers, workers and reports keep sending the old name until
    they are redeployed; squawk and strong_migrations treat this as an error too.
    Rename in three steps instead: *expand* (add the new column), *dual-write*
    (write both, backfill the new one, move readers), *contract* (drop the old
    column once no client uses it).

    Anti-pattern::

        ALTER TABLE users RENAME COLUMN name TO full_name;

    Safe::

        -- expand:
        ALTER TABLE users ADD COLUMN full_name text;
        -- dual-write: the app (or a trigger) writes both; backfill full_name in
        -- batches; move readers to full_name
        -- contract, in a later release:
        ALTER TABLE users DROP COLUMN name;
    """

    code, name, severity = "PF009", "renaming-column", "error"
    message = (
        "RENAME COLUMN breaks running clients that use the old name: expand, "
        "dual-write, contract instead"
    )
    help = (
        "Expand: add the new column; dual-write: write both, backfill, move readers; "
        "contract: drop the old column in a later release (`pgferry migrate new "
        '--expand-contract "rename TABLE.OLD to NEW"` scaffolds the three steps).'
    )
    kinds = ("RenameStmt",)
    squawk = ("renaming-column",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        from pgferry.sqltext.nodes import qualname

        n = st.node
        if n.get("renameType") == "OBJECT_COLUMN":
            table = qualname(n.get("relation"))
            if not cx.is_new(table):
                old, new = n.get("subname", ""), n.get("newname", "")
                yield Hit(
                    None,
                    table,
                    f"RENAME COLUMN {old} TO {new} breaks every running "
                    f"client that uses {old}: expand (add {new}), dual-write (write "
                    f"both, backfill, move readers), then contract (drop {old}) in a "
                    "later release",
                )


RULES: list[type[Rule]] = [
    AddingFieldWithDefault,
    AddingRequiredField,
    AddingNotNullableField,
    AddingStoredGeneratedColumn,
    AddingIdentityColumn,
    BanDropColumn,
    BanDropNotNull,
    ChangingColumnType,
    RenamingColumn,
]

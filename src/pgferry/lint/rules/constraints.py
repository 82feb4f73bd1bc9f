"""Rules about constraints added to existing tables and domains."""

from __future__ import annotations

from collections.abc import Iterator

from pgferry.lint.model import Context, Hit, Node, Rule, Stmt
from pgferry.lint.rules._util import alter_actions
from pgferry.sqltext.nodes import constraints, loc


def _added(cx: Context, st: Stmt) -> Iterator[tuple[str, Node, int]]:
    """(table, Constraint body, offset) for constraints added to existing tables."""
    for table, cmd, kind, body, off in alter_actions(cx, st):
        if not cx.existing(table):
            continue
        sub = cmd.get("subtype")
        if sub == "AT_AddConstraint" and kind == "Constraint":
            yield table, body, off
        elif sub == "AT_AddColumn" and kind == "ColumnDef":
            for con in constraints(body):
                yield table, con, loc(con) or off


class AddingForeignKeyConstraint(Rule):
    """A foreign key added without NOT VALID scans both tables under SHARE ROW EXCLUSIVE.

    Writes to the table and to the referenced table block while every row is
    checked.

    Anti-pattern::

        ALTER TABLE orders ADD CONSTRAINT orders_user_fk
            FOREIGN KEY (user_id) REFERENCES users (id);

    Safe::

        ALTER TABLE orders ADD CONSTRAINT orders_user_fk
            FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;
        -- next migration (SHARE UPDATE EXCLUSIVE: reads and writes go on):
        ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;
    """

    code, name, severity = "PF030", "adding-foreign-key-constraint", "error"
    message = "FOREIGN KEY without NOT VALID blocks writes on both tables while it checks rows"
    help = "Add it NOT VALID, then VALIDATE CONSTRAINT in the next migration."
    kinds = ("AlterTableStmt",)
    subtypes = frozenset({"AT_AddConstraint", "AT_AddColumn", "AT_ValidateConstraint"})
    lock, work = "SHARE ROW EXCLUSIVE", "scan"
    squawk = ("adding-foreign-key-constraint",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        for table, con, off in _added(cx, st):
            if con.get("contype") == "CONSTR_FOREIGN" and not con.get("skip_validation"):
                yield Hit(off, table)


class ConstraintMissingNotValid(Rule):
    """CHECK or FOREIGN KEY validated under the ALTER TABLE lock.

    Reported when such a constraint is added to an existing table without
    ``NOT VALID``, or when it is added ``NOT VALID`` and validated in the same
    transaction (the lock from the ADD is still held while VALIDATE scans).

    Anti-pattern::

        ALTER TABLE orders ADD CONSTRAINT qty_positive CHECK (qty > 0);

    Safe::

        ALTER TABLE orders ADD CONSTRAINT qty_positive CHECK (qty > 0) NOT VALID;
        -- next migration:
        ALTER TABLE orders VALIDATE CONSTRAINT qty_positive;
    """

    code, name, severity = "PF031", "constraint-missing-not-valid", "error"
    message = "constraint validated under ACCESS EXCLUSIVE: add it NOT VALID, validate later"
    help = "ADD ... NOT VALID here; VALIDATE CONSTRAINT in a separate migration."
    kinds = ("AlterTableStmt",)
    subtypes = frozenset({"AT_AddConstraint", "AT_AddColumn", "AT_ValidateConstraint"})
    lock, work = "ACCESS EXCLUSIVE", "scan"
    squawk = ("constraint-missing-not-valid",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        for table, con, off in _added(cx, st):
            if con.get("contype") == "CONSTR_CHECK" and not con.get("skip_validation"):
                yield Hit(off, table)
        for table, cmd, _, _, off in alter_actions(cx, st):
            if cmd.get("subtype") == "AT_ValidateConstraint" and st.in_tx:
                name = cmd.get("name", "")
                if cx.tx_not_valid.get(name) == table:
                    yield Hit(
                        off,
                        table,
                        f"VALIDATE CONSTRAINT {name} in the same transaction "
                        "that added it NOT VALID keeps the table locked while it scans",
                        work="scan",
                    )


class DisallowedUniqueConstraint(Rule):
    """ADD UNIQUE builds its index under ACCESS EXCLUSIVE: reads and writes wait.

    Anti-pattern::

        ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);

    Safe::

        CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email);
        -- next migration:
        ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_key;
    """

    code, name, severity = "PF032", "disallowed-unique-constraint", "error"
    message = "ADD UNIQUE builds an index under ACCESS EXCLUSIVE"
    help = "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE USING INDEX."
    kinds = ("AlterTableStmt",)
    subtypes = frozenset({"AT_AddConstraint", "AT_AddColumn", "AT_ValidateConstraint"})
    lock, work = "ACCESS EXCLUSIVE", "index"
    squawk = ("disallowed-unique-constraint",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        for table, con, off in _added(cx, st):
            if con.get("contype") == "CONSTR_UNIQUE" and not con.get("indexname"):
                yield Hit(off, table)


class AddingPrimaryKeyConstraint(Rule):
    """ADD PRIMARY KEY builds an index (and checks NOT NULL) under ACCESS EXCLUSIVE.

    Anti-pattern::

        ALTER TABLE items ADD PRIMARY KEY (id);

    Safe::

        CREATE UNIQUE INDEX CONCURRENTLY items_pkey ON items (id);
        -- next migration:
        ALTER TABLE items ADD CONSTRAINT items_pkey PRIMARY KEY USING INDEX items_pkey;
    """

    code, name, severity = "PF033", "adding-primary-key-constraint", "error"
    message = "ADD PRIMARY KEY builds an index under ACCESS EXCLUSIVE"
    help = "CREATE UNIQUE INDEX CONCURRENTLY, then ADD PRIMARY KEY USING INDEX."
    kinds = ("AlterTableStmt",)
    subtypes = frozenset({"AT_AddConstraint", "AT_AddColumn", "AT_ValidateConstraint"})
    lock, work = "ACCESS EXCLUSIVE", "index"
    squawk = ("adding-serial-primary-key-field",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        for table, con, off in _added(cx, st):
            if con.get("contype") == "CONSTR_PRIMARY" and not con.get("indexname"):
                yield Hit(off, table)


class BanExclusionConstraint(Rule):
    """Adding an exclusion constraint blocks reads and writes while every row is checked.

    Exclusion constraints cannot be added NOT VALID or from a concurrently built
    index, so on an existing table there is no lock-free way; create them with
    the table.

    Anti-pattern::

        ALTER TABLE bookings ADD CONSTRAINT no_overlap
            EXCLUDE USING gist (room WITH =, during WITH &&);

    Safe::

        -- define it in CREATE TABLE, or build a new table and swap it in
    """

    code, name, severity = "PF034", "ban-exclusion-constraint", "error"
    message = "adding an EXCLUDE constraint blocks reads and writes while it builds"
    help = "Create exclusion constraints with the table; there is no online way to add one."
    kinds = ("AlterTableStmt",)
    subtypes = frozenset({"AT_AddConstraint", "AT_AddColumn", "AT_ValidateConstraint"})
    lock, work = "ACCESS EXCLUSIVE", "index"

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        for table, con, off in _added(cx, st):
            if con.get("contype") == "CONSTR_EXCLUSION":
                yield Hit(off, table)


class BanCreateDomainWithConstraint(Rule):
    """A domain's CHECK cannot be changed later without scanning every column using it.

    Anti-pattern::

        CREATE DOMAIN positive_int AS bigint CHECK (VALUE > 0);

    Safe::

        CREATE DOMAIN positive_int AS bigint;
        -- put the CHECK on the table columns instead
    """

    code, name, severity = "PF035", "ban-create-domain-with-constraint", "warning"
    message = "domain with a CHECK: changing it later scans every column that uses it"
    help = "Put CHECK constraints on table columns, not on domains."
    kinds = ("CreateDomainStmt",)
    squawk = ("ban-create-domain-with-constraint",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        for c in st.node.get("constraints") or []:
            con = c.get("Constraint", {})
            if con.get("contype") == "CONSTR_CHECK":
                yield Hit(loc(con))


class BanAlterDomainWithAddConstraint(Rule):
    """ALTER DOMAIN ADD CONSTRAINT scans every column of that domain, holding locks.

    Anti-pattern::

        ALTER DOMAIN positive_int ADD CONSTRAINT positive CHECK (VALUE > 0);

    Safe::

        ALTER DOMAIN positive_int ADD CONSTRAINT positive CHECK (VALUE > 0) NOT VALID;
        -- then, separately: ALTER DOMAIN positive_int VALIDATE CONSTRAINT positive;
    """

    code, name, severity = "PF036", "ban-alter-domain-with-add-constraint", "error"
    message = "ALTER DOMAIN ADD CONSTRAINT checks every column of the domain under lock"
    help = "Add it NOT VALID and VALIDATE separately, or constrain the columns directly."
    kinds = ("AlterDomainStmt",)
    squawk = ("ban-alter-domain-with-add-constraint",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        if st.node.get("subtype") == "C":
            con = (st.node.get("def") or {}).get("Constraint", {})
            if not con.get("skip_validation"):
                yield Hit(loc(con))


RULES: list[type[Rule]] = [
    AddingForeignKeyConstraint,
    ConstraintMissingNotValid,
    DisallowedUniqueConstraint,
    AddingPrimaryKeyConstraint,
    BanExclusionConstraint,
    BanCreateDomainWithConstraint,
    BanAlterDomainWithAddConstraint,
]

"""Rules about transactions, re-runnable statements and timeouts.

pgferry's runner wraps each file in one transaction unless the file holds a
statement that cannot run in one (CONCURRENTLY, VACUUM, an ALTER TYPE ADD VALUE whose
new label the same file uses); then it runs the statements one by one. These rules
judge a file by that model, which is the runner's own (:mod:`pgferry.sqltext.model`).
"""

from __future__ import annotations

from collections.abc import Iterator

from pgferry.lint import effects
from pgferry.lint.model import Context, Hit, Rule, Stmt
from pgferry.lint.rules._util import alter_actions
from pgferry.sqltext.nodes import unwrap


class BanUncommittedTransaction(Rule):
    """BEGIN without a matching COMMIT leaves the migration's work uncommitted.

    Anti-pattern::

        BEGIN;
        ALTER TABLE users ADD COLUMN nickname text;

    Safe::

        ALTER TABLE users ADD COLUMN nickname text;  -- pgferry wraps the file itself
    """

    code, name, severity = "PF060", "ban-uncommitted-transaction", "error"
    message = "BEGIN without COMMIT: the file leaves a transaction open"
    help = "Add COMMIT, or drop BEGIN: pgferry already runs the file in a transaction."
    kinds = ("TransactionStmt",)
    squawk = ("ban-uncommitted-transaction",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        depth = cx.scratch.get("uncommitted_depth", 0)
        if effects.is_begin(st):
            cx.scratch["uncommitted_at"] = st.start
        cx.scratch["uncommitted_depth"] = effects.tx_depth_after(st, depth)
        return iter(())

    def finish(self, cx: Context) -> Iterator[Hit]:
        if cx.scratch.get("uncommitted_depth", 0) > 0:
            yield Hit(cx.scratch.get("uncommitted_at"))


class TransactionNesting(Rule):
    """BEGIN/COMMIT inside a file pgferry already runs in a transaction, or nested BEGIN.

    A COMMIT in such a file ends the runner's transaction early, so a later
    failure can no longer roll the whole file back.

    Anti-pattern::

        BEGIN;
        ALTER TABLE users ADD COLUMN nickname text;
        COMMIT;

    Safe::

        ALTER TABLE users ADD COLUMN nickname text;
    """

    code, name, severity = "PF061", "transaction-nesting", "error"
    message = "BEGIN/COMMIT inside the transaction pgferry already runs this file in"
    help = "Remove BEGIN/COMMIT; split the file if parts must commit separately."
    kinds = ("TransactionStmt",)
    squawk = ("transaction-nesting",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        begin, end = effects.is_begin(st), effects.ends_tx(st)
        if not (begin or end):
            return
        if cx.file is not None and cx.file.transactional:
            yield Hit(None)
        elif begin and st.explicit_tx:
            yield Hit(None, message="BEGIN inside a transaction that is already open")
        elif end and not st.explicit_tx:
            yield Hit(None, message="COMMIT/ROLLBACK without a transaction to end")


def _robust_alter(st: Stmt, cx: Context) -> Iterator[Hit]:
    dropped: set[str] = cx.scratch.setdefault("robust_dropped", set())
    for _, cmd, kind, body, off in alter_actions(cx, st):
        sub = cmd.get("subtype")
        if sub == "AT_DropConstraint":
            dropped.add(cmd.get("name", ""))
            if cmd.get("missing_ok"):
                continue
            msg = "DROP CONSTRAINT without IF EXISTS cannot be re-run"
        elif sub == "AT_AddColumn":
            if cmd.get("missing_ok"):
                continue
            msg = "ADD COLUMN without IF NOT EXISTS cannot be re-run"
        elif sub == "AT_DropColumn":
            if cmd.get("missing_ok"):
                continue
            msg = "DROP COLUMN without IF EXISTS cannot be re-run"
        elif sub == "AT_ValidateConstraint" and cmd.get("name") in dropped:
            continue
        elif sub == "AT_AddConstraint" and kind == "Constraint" and body.get("conname") in dropped:
            continue
        else:
            msg = None
        yield Hit(off, message=msg)


class PreferRobustStmts(Rule):
    """Outside a transaction, a statement that fails half-way must be safe to re-run.

    pgferry runs a file statement by statement (no transaction) when it holds
    CONCURRENTLY, VACUUM or an ALTER TYPE ADD VALUE whose label the file then uses;
    then every statement needs
    IF [NOT] EXISTS so a retry after a failure does not stop on "already exists".
    Files that run in a transaction are not reported.

    Anti-pattern (in a file with CONCURRENTLY)::

        CREATE INDEX CONCURRENTLY orders_user_idx ON orders (user_id);
        ALTER TABLE orders ADD COLUMN note text;

    Safe::

        CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_user_idx ON orders (user_id);
        ALTER TABLE orders ADD COLUMN IF NOT EXISTS note text;
    """

    code, name, severity = "PF062", "prefer-robust-stmts", "warning"
    message = "runs outside a transaction and cannot be re-run: add IF [NOT] EXISTS"
    help = "Use IF NOT EXISTS / IF EXISTS, or move the statement to a transactional file."
    kinds = ("AlterTableStmt", "IndexStmt", "CreateStmt", "DropStmt", "RenameStmt")
    squawk = ("prefer-robust-stmts",)

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        n = st.node
        if st.kind == "AlterTableStmt":
            if not st.in_tx:
                yield from _robust_alter(st, cx)
            else:  # still remember drops so later statements see them
                for _ in _robust_alter(st, cx):
                    pass
        elif st.kind == "IndexStmt":
            if (
                not n.get("if_not_exists")
                and n.get("idxname")
                and (n.get("concurrent") or not st.in_tx)
            ):
                yield Hit(None)
        elif not st.in_tx:
            yield from _robust_other(st)


def _robust_other(st: Stmt) -> Iterator[Hit]:
    """RENAME, CREATE TABLE, DROP outside a transaction: re-runnable or not."""
    n = st.node
    if st.kind == "RenameStmt":
        if n.get("renameType") in ("OBJECT_TABLE", "OBJECT_COLUMN", "OBJECT_TABCONSTRAINT"):
            yield Hit(None, message="RENAME outside a transaction cannot be re-run")
    elif st.kind == "CreateStmt":
        _, rv = unwrap({"RangeVar": n.get("relation") or {}})
        temp_drop = rv.get("relpersistence") == "t" and n.get("oncommit") == "ONCOMMIT_DROP"
        if not n.get("if_not_exists") and not temp_drop:
            yield Hit(None)
    elif n.get("removeType") in ("OBJECT_INDEX", "OBJECT_TABLE", "OBJECT_TYPE"):
        if not n.get("missing_ok"):
            yield Hit(None)


_LOCKING = {
    "AlterTableStmt",
    "IndexStmt",
    "DropStmt",
    "TruncateStmt",
    "RenameStmt",
    "AlterDomainStmt",
    "ReindexStmt",
    "CreateTrigStmt",
    "AlterEnumStmt",
    "VacuumStmt",
    "ClusterStmt",
}


class _RequireSetting(Rule):
    setting = ""
    opt_in = True
    kinds = ("VariableSetStmt", *sorted(_LOCKING))

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        key = f"seen_{self.setting}"
        if st.kind == "VariableSetStmt" and st.node.get("name") == self.setting:
            cx.scratch[key] = True
        elif st.kind in _LOCKING and not cx.scratch.get(key):
            cx.scratch[key] = True  # once per file
            yield Hit(None)


class RequireLockTimeout(_RequireSetting):
    """A lock-taking statement with no lock_timeout set can queue every query behind it.

    Off by default: pgferry's runner sets ``lock_timeout`` from pgferry.toml.
    Turn it on (``[lint] enable``) for files other tools run.

    Anti-pattern::

        ALTER TABLE users ADD COLUMN nickname text;

    Safe::

        SET lock_timeout = '2s';
        ALTER TABLE users ADD COLUMN nickname text;
    """

    code, name, severity = "PF063", "require-lock-timeout", "warning"
    message = "no lock_timeout set before a statement that takes a table lock"
    help = "SET lock_timeout = '2s'; at the top of the file."
    setting = "lock_timeout"
    squawk = ("require-lock-timeout",)


class RequireStatementTimeout(_RequireSetting):
    """A lock-taking statement with no statement_timeout can hold its lock for too long.

    Off by default: pgferry's runner sets ``statement_timeout`` from pgferry.toml.

    Anti-pattern::

        ALTER TABLE users ADD COLUMN nickname text;

    Safe::

        SET statement_timeout = '5s';
        ALTER TABLE users ADD COLUMN nickname text;
    """

    code, name, severity = "PF064", "require-statement-timeout", "warning"
    message = "no statement_timeout set before a statement that takes a table lock"
    help = "SET statement_timeout = '5s'; at the top of the file."
    setting = "statement_timeout"
    squawk = ("require-statement-timeout",)


RULES: list[type[Rule]] = [
    BanUncommittedTransaction,
    TransactionNesting,
    PreferRobustStmts,
    RequireLockTimeout,
    RequireStatementTimeout,
]

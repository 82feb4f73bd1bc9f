"""What a statement changes in the lint run's picture, and explicit transaction blocks.

Contract: pure functions over :class:`~pgferry.lint.model.Stmt` and
:class:`~pgferry.lint.model.Context`. The engine calls :func:`apply` after the
rules have seen a statement, so rules see the state *before* it. Whether a statement
runs in a transaction is the SQL front end's verdict (:mod:`pgferry.sqltext.model`),
the same the runner acts on.
"""

from __future__ import annotations

from pgferry.lint.model import Context, Node, Stmt
from pgferry.sqltext import classify
from pgferry.sqltext.nodes import (
    alter_cmds,
    constraints,
    list_name,
    qualname,
    type_text,
    unwrap,
)

DATA_KINDS = {"UpdateStmt", "DeleteStmt", "InsertStmt", "MergeStmt"}


def is_begin(st: Stmt) -> bool:
    return classify.tx_control(st.kind, st.node) == "begin"


def ends_tx(st: Stmt) -> bool:
    return classify.tx_control(st.kind, st.node) == "end"


def tx_depth_after(st: Stmt, depth: int) -> int:
    """1 inside an explicit transaction block, else 0: PostgreSQL does not nest BEGIN
    (a second BEGIN only warns) and one COMMIT ends the block."""
    if is_begin(st):
        return 1
    if ends_tx(st):
        return 0
    return depth


def not_null_check_column(con: Node) -> str | None:
    """The column of a ``CHECK (col IS NOT NULL)`` constraint, else None."""
    kind, expr = unwrap(con.get("raw_expr"))
    if kind == "NullTest" and expr.get("nulltesttype") == "IS_NOT_NULL":
        k, ref = unwrap(expr.get("arg"))
        if k == "ColumnRef":
            fields = [unwrap(f) for f in ref.get("fields") or []]
            if fields and fields[-1][0] == "String":
                return str(fields[-1][1].get("sval"))
    return None


def _create(st: Stmt, cx: Context) -> None:
    n = st.node
    table = qualname(n.get("relation"))
    if _exists_already(n, cx, table):
        return
    cx.add_created(table)
    for elt in n.get("tableElts") or []:
        if "ColumnDef" in elt:
            cd = elt["ColumnDef"]
            cx.set_column_type(table, cd.get("colname", ""), type_text(cd.get("typeName")))


def _create_as(st: Stmt, cx: Context) -> None:
    _, into = unwrap(st.node.get("into"))
    table = qualname(into.get("rel"))
    if not _exists_already(st.node, cx, table):
        cx.add_created(table)


def _index(st: Stmt, cx: Context) -> None:
    if st.node.get("idxname"):
        table = qualname(st.node.get("relation"))
        cx.add_index(f"{table.split('.', 1)[0]}.{st.node['idxname']}", table)


def _drop(st: Stmt, cx: Context) -> None:
    what = st.node.get("removeType")
    if what in ("OBJECT_TABLE", "OBJECT_INDEX"):
        drop = cx.drop_created if what == "OBJECT_TABLE" else cx.drop_index
        for obj in st.node.get("objects") or []:
            drop(qualified(list_name(obj)))


def _alter(st: Stmt, cx: Context) -> None:
    if st.node.get("objtype") == "OBJECT_TABLE":
        _apply_alter(st, cx, qualname(st.node.get("relation")))


def _rename(st: Stmt, cx: Context) -> None:
    n = st.node
    if n.get("renameType") == "OBJECT_TABLE":
        old = qualname(n.get("relation"))
        if cx.is_new(old):  # a new table keeps being new under its new name
            cx.add_created(f"{old.split('.', 1)[0]}.{n.get('newname', '')}")


_APPLY = {
    "CreateStmt": _create,
    "CreateTableAsStmt": _create_as,
    "IndexStmt": _index,
    "DropStmt": _drop,
    "AlterTableStmt": _alter,
    "RenameStmt": _rename,
}


def apply(st: Stmt, cx: Context) -> None:
    """Record what ``st`` creates or changes (tables, column types, checks)."""
    fn = _APPLY.get(st.kind)
    if fn is not None:
        fn(st, cx)


def qualified(name: str) -> str:
    """A dotted object name with its schema (``public`` when it has none)."""
    return name if "." in name else f"public.{name}"


def _exists_already(n: Node, cx: Context, table: str) -> bool:
    """``CREATE TABLE IF NOT EXISTS`` of a table the catalog has, in a file still to run:
    a no-op on the target, so the table is not new (an applied file ran when it was)."""
    return bool(n.get("if_not_exists")) and cx.pending and cx.in_catalog(table)


def _alter_action(cx: Context, table: str, cmd: Node) -> None:
    """What one ALTER TABLE action records."""
    sub = cmd.get("subtype")
    kind, body = unwrap(cmd.get("def"))
    if sub == "AT_AddColumn" and kind == "ColumnDef":
        cx.set_column_type(table, body.get("colname", ""), type_text(body.get("typeName")))
        for con in constraints(body):
            if con.get("contype") == "CONSTR_CHECK":
                _note_check(cx, table, con)
    elif sub == "AT_AlterColumnType" and kind == "ColumnDef":
        cx.set_column_type(table, cmd.get("name", ""), type_text(body.get("typeName")))
    elif sub == "AT_AddConstraint" and kind == "Constraint":
        if body.get("skip_validation") and body.get("conname"):
            cx.tx_not_valid[body["conname"]] = table
        if body.get("contype") == "CONSTR_CHECK":
            _note_check(cx, table, body)
    elif sub == "AT_ValidateConstraint":
        col = cx.nn_check_column(table, cmd.get("name", ""))
        if col:
            cx.add_validated_not_null(table, col)


def _apply_alter(st: Stmt, cx: Context, table: str) -> None:
    ddl = False
    for cmd in alter_cmds(st.node):
        _alter_action(cx, table, cmd)
        if cmd.get("subtype") != "AT_ValidateConstraint":
            ddl = True
    if ddl and st.in_tx and not cx.is_new(table):
        cx.tx_ddl_tables.add(table)


def _note_check(cx: Context, table: str, con: Node) -> None:
    col = not_null_check_column(con)
    if not col:
        return
    if con.get("conname"):
        cx.add_nn_check(table, con["conname"], col)
    if not con.get("skip_validation"):
        cx.add_validated_not_null(table, col)

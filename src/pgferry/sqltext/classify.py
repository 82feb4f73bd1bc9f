"""PostgreSQL's rules about single statements, on parse trees (pure).

Contract:
- :func:`non_tx` says why a statement cannot run inside a transaction block (the
  runner then runs its file statement by statement; lint judges the file that way),
  or None. ``ALTER TYPE ... ADD VALUE`` is not one of them: since PostgreSQL 12 it
  runs in a transaction, and only *using* the new label before that transaction
  commits fails (``unsafe use of new value``, SQLSTATE 55P04). A file that adds a
  label and uses it later is therefore run statement by statement; that is a fact
  about the file, decided in :func:`pgferry.sqltext.model.split` with
  :func:`string_constants`.
- :func:`tx_control` names ``BEGIN``-like and ``COMMIT``-like statements.
- :func:`table_lock` is the table lock a statement takes on the table it acts on, per
  PostgreSQL's documentation (``ALTER TABLE``: the strongest lock of its actions);
  :func:`stronger` orders lock modes.
"""

from __future__ import annotations

from typing import Literal

from pgferry.sqltext.nodes import Node, alter_cmds, defnames, qualname, unwrap, walk

_BEGIN = {"TRANS_STMT_BEGIN", "TRANS_STMT_START"}
_END = {
    "TRANS_STMT_COMMIT",
    "TRANS_STMT_ROLLBACK",
    "TRANS_STMT_PREPARE",
    "TRANS_STMT_COMMIT_PREPARED",
    "TRANS_STMT_ROLLBACK_PREPARED",
}
_NEVER_IN_TX = {
    "CreatedbStmt": "CREATE DATABASE",
    "DropdbStmt": "DROP DATABASE",
    "AlterSystemStmt": "ALTER SYSTEM",
    "CreateTableSpaceStmt": "CREATE TABLESPACE",
    "DropTableSpaceStmt": "DROP TABLESPACE",
    "CreateSubscriptionStmt": "CREATE SUBSCRIPTION",
    "DropSubscriptionStmt": "DROP SUBSCRIPTION",
}


def non_tx(kind: str, n: Node) -> str | None:
    """Why the statement cannot run in a transaction block (PostgreSQL's rules), else None."""
    if kind == "IndexStmt":
        return "CREATE INDEX CONCURRENTLY" if n.get("concurrent") else None
    if kind == "DropStmt":
        return "DROP INDEX CONCURRENTLY" if n.get("concurrent") else None
    if kind == "ReindexStmt":
        if "concurrently" in defnames(n.get("params")):
            return "REINDEX CONCURRENTLY"
        if n.get("kind") in ("REINDEX_OBJECT_DATABASE", "REINDEX_OBJECT_SYSTEM"):
            return "REINDEX DATABASE/SYSTEM"
        return None
    if kind == "VacuumStmt":
        return "VACUUM" if n.get("is_vacuumcmd") else None
    if kind == "AlterTableStmt":
        for cmd in alter_cmds(n):
            if cmd.get("subtype") == "AT_DetachPartition":
                _, pc = unwrap(cmd.get("def"))
                if pc.get("concurrent"):
                    return "DETACH PARTITION CONCURRENTLY"
        return None
    if kind == "ClusterStmt":
        return None if n.get("relation") else "CLUSTER (all tables)"
    return _NEVER_IN_TX.get(kind)


def tx_control(kind: str, n: Node) -> Literal["begin", "end"] | None:
    """``"begin"`` for BEGIN/START TRANSACTION, ``"end"`` for what ends a block."""
    if kind != "TransactionStmt":
        return None
    k = n.get("kind")
    return "begin" if k in _BEGIN else "end" if k in _END else None


def adds_enum_value(kind: str, n: Node) -> str | None:
    """The label an ``ALTER TYPE ... ADD VALUE`` adds, else None."""
    if kind == "AlterEnumStmt" and n.get("newVal") and not n.get("oldVal"):
        return str(n["newVal"])
    return None


def string_constants(n: Node) -> set[str]:
    """Every string constant in a statement (where a new enum label could be used)."""
    return {
        str(body["sval"].get("sval", ""))
        for kind, body in walk(n)
        if kind == "A_Const" and isinstance(body.get("sval"), dict)
    }


# -- locks ------------------------------------------------------------------------------------

#: PostgreSQL's table lock modes, weakest first
LOCK_MODES = (
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
)
_RANK = {m: i for i, m in enumerate(LOCK_MODES)}
_AE, _SUE, _SRE = "ACCESS EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE ROW EXCLUSIVE"
#: ALTER TABLE actions that take less than ACCESS EXCLUSIVE (the documentation's list)
_ALTER_LOCK = {
    "AT_SetStatistics": _SUE,
    "AT_ValidateConstraint": _SUE,
    "AT_ClusterOn": _SUE,
    "AT_DropCluster": _SUE,
    "AT_SetRelOptions": _SUE,
    "AT_ResetRelOptions": _SUE,
    "AT_AttachPartition": _SUE,
    "AT_EnableTrig": _SRE,
    "AT_EnableAlwaysTrig": _SRE,
    "AT_EnableReplicaTrig": _SRE,
    "AT_DisableTrig": _SRE,
    "AT_EnableTrigAll": _SRE,
    "AT_DisableTrigAll": _SRE,
    "AT_EnableTrigUser": _SRE,
    "AT_DisableTrigUser": _SRE,
}
_DATA = {"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"}


def stronger(a: str, b: str) -> str:
    """The stronger of two lock modes ("" is weaker than any)."""
    return a if _RANK.get(a, -1) >= _RANK.get(b, -1) else b


def _alter_lock(n: Node) -> str:
    mode = ""
    for cmd in alter_cmds(n):
        sub = cmd.get("subtype", "")
        kind, body = unwrap(cmd.get("def"))
        if (
            sub == "AT_AddConstraint"
            and kind == "Constraint"
            and body.get("contype") == "CONSTR_FOREIGN"
        ):
            m = _SRE
        elif sub == "AT_DetachPartition" and body.get("concurrent"):
            m = _SUE
        else:
            m = _ALTER_LOCK.get(sub, _AE)
        mode = stronger(mode, m)
    return mode or _AE


def table_lock(kind: str, n: Node) -> tuple[str, str] | None:
    """(``schema.table``, lock mode) the statement takes on the table it acts on, for the
    statements whose lock a zero-downtime review weighs; None for the others."""
    if kind == "AlterTableStmt" and n.get("objtype") == "OBJECT_TABLE":
        return qualname(n.get("relation")), _alter_lock(n)
    if kind == "IndexStmt":
        return qualname(n.get("relation")), _SUE if n.get("concurrent") else "SHARE"
    if kind == "CreateTrigStmt":
        return qualname(n.get("relation")), _SRE
    if kind in _DATA:
        return qualname(n.get("relation")), "ROW EXCLUSIVE"
    if kind == "ReindexStmt" and n.get("relation"):
        return qualname(n.get("relation")), (
            _SUE if "concurrently" in defnames(n.get("params")) else "SHARE"
        )
    if kind == "ClusterStmt" and n.get("relation"):
        return qualname(n.get("relation")), _AE
    return None

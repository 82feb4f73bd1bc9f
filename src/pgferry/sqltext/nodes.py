"""Small readers for pglast's JSON parse trees (plain dicts: ``{"NodeName": {...}}``).

Contract: pure functions, no pglast import (:mod:`pgferry.sqltext.model` parses; the
classifiers and lint rules read dicts). Names come back as the parser folded them;
tables are ``schema.table`` with ``public`` when unqualified.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Node = dict[str, Any]
#: the schema an unqualified name resolves to in messages and lookups
DEFAULT_SCHEMA = "public"


def unwrap(node: Any) -> tuple[str, Node]:
    """``{"Kind": {...}}`` → ``("Kind", {...})``."""
    if isinstance(node, dict) and len(node) == 1:
        k, v = next(iter(node.items()))
        if isinstance(v, dict):
            return k, v
    return "", node if isinstance(node, dict) else {}


def sval(node: Any) -> str:
    """The text of a ``String`` node (or of ``A_Const`` string/int), else ""."""
    # the hottest reader: unwrap() inlined
    if not isinstance(node, dict) or len(node) != 1:
        return ""
    body = node.get("String")
    if body is not None:
        return str(body.get("sval", "")) if isinstance(body, dict) else ""
    body = node.get("A_Const")
    if isinstance(body, dict):
        for key in ("sval", "ival", "fval", "boolval"):
            if key in body:
                inner = body[key]
                return str(next(iter(inner.values()), "")) if isinstance(inner, dict) else ""
    return ""


def names(items: list[Any] | None) -> list[str]:
    return [sval(i) for i in items or []]


def qualname(rv: Node | None) -> str:
    """A RangeVar as ``schema.table``."""
    if not rv:
        return ""
    if "RangeVar" in rv:
        rv = rv["RangeVar"]
    return f"{rv.get('schemaname') or DEFAULT_SCHEMA}.{rv.get('relname', '')}"


def list_name(node: Any) -> str:
    """A ``List`` of ``String`` (dotted object name) joined with dots."""
    kind, body = unwrap(node)
    if kind == "List":
        return ".".join(names(body.get("items")))
    return sval(node)


def type_name(tn: Node | None) -> tuple[str, list[int], bool]:
    """A TypeName as (last name part, integer typmods, is array)."""
    if not tn:
        return "", [], False
    parts = tn.get("names")
    mods: list[int] = []
    for m in tn.get("typmods") or []:
        v = sval(m)
        if v.lstrip("-").isdigit():
            mods.append(int(v))
    return (sval(parts[-1]) if parts else ""), mods, bool(tn.get("arrayBounds"))


def type_text(tn: Node | None) -> str:
    """A readable type: ``varchar(20)``, ``int4``, ``text[]``."""
    name, mods, arr = type_name(tn)
    return name + (f"({','.join(map(str, mods))})" if mods else "") + ("[]" if arr else "")


def walk(node: Any) -> Iterator[tuple[str, Node]]:
    """Every node below (and including) ``node``, depth first, as (kind, body)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            for k, v in n.items():
                if isinstance(v, dict):
                    if k[:1].isupper():
                        yield k, v
                    stack.append(v)
                elif isinstance(v, list):
                    stack.extend(v)
        elif isinstance(n, list):
            stack.extend(n)


def loc(body: Node | None) -> int | None:
    """The node's ``location`` (byte offset in the statement's file) or None."""
    if not body:
        return None
    v = body.get("location", -1)
    return v if isinstance(v, int) and v >= 0 else None


def constraints(coldef: Node) -> list[Node]:
    """The Constraint bodies of a ColumnDef."""
    return [c["Constraint"] for c in coldef.get("constraints") or [] if "Constraint" in c]


def alter_cmds(stmt: Node) -> list[Node]:
    """The AlterTableCmd bodies of an AlterTableStmt."""
    return [c["AlterTableCmd"] for c in stmt.get("cmds") or [] if "AlterTableCmd" in c]


def defnames(options: list[Any] | None) -> set[str]:
    """The names in a list of DefElem (``VACUUM (FULL)``, ``REINDEX (CONCURRENTLY)``)."""
    return {unwrap(o)[1].get("defname", "") for o in options or []}


def func_calls(expr: Any) -> Iterator[tuple[str, str, Node]]:
    """(schema or "", name, body) of every function call inside ``expr``."""
    for kind, body in walk(expr):
        if kind == "FuncCall":
            parts = names(body.get("funcname"))
            yield (parts[0] if len(parts) > 1 else ""), (parts[-1] if parts else ""), body
        elif kind == "SQLValueFunction":
            yield "", body.get("op", "").removeprefix("SVFOP_").lower(), body
        elif kind == "NextValueExpr":  # pragma: no cover - not produced by the raw parser
            yield "", "nextval", body

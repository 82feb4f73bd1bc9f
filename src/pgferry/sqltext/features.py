"""What a statement needs of the target: syntax a newer server has, an extension.

Contract (pure): pgferry parses with pglast, which speaks the newest PostgreSQL grammar
(18). :func:`requirements` walks one statement's tree and returns the features in it
that need a newer server than some targets run, as ``(feature, minimum major version)``,
newest first; ``migrate plan`` and ``migrate up`` compare them with the target's version
before anything runs (:mod:`pgferry.migrate.preflight`). The table :data:`FEATURES`
covers the common ones; a feature missing here still fails on the server, with the
server's own message. :func:`extension` is the extension a ``CREATE EXTENSION`` needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pgferry.sqltext.nodes import Node, defnames, sval

#: feature (as messages and docs name it) -> the first PostgreSQL major version that has it
FEATURES: dict[str, int] = {
    "MERGE": 15,
    "UNIQUE NULLS NOT DISTINCT": 15,
    "CREATE VIEW ... WITH (security_invoker)": 15,
    "SQL/JSON predicates and constructors (IS JSON, JSON_OBJECT, JSON_ARRAY)": 16,
    "MERGE ... RETURNING": 17,
    "MERGE ... WHEN NOT MATCHED BY SOURCE": 17,
    "JSON_TABLE": 17,
    "SQL/JSON query functions (JSON_EXISTS, JSON_QUERY, JSON_VALUE)": 17,
    "a named NOT NULL constraint (CONSTRAINT name NOT NULL column)": 18,
    "a virtual generated column (GENERATED ALWAYS AS (...) without STORED)": 18,
    "WITHOUT OVERLAPS / PERIOD in a key": 18,
    "RETURNING old.* / new.*": 18,
}
_SQL_JSON = {
    "JsonIsPredicate",
    "JsonObjectConstructor",
    "JsonArrayConstructor",
    "JsonArrayQueryConstructor",
    "JsonObjectAgg",
    "JsonArrayAgg",
}


def _walk(
    kind: str, node: Any, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, Node, tuple[str, ...]]]:
    """Every node under (and including) ``node`` as (kind, body, keys that lead to it)."""
    stack: list[tuple[str, Any, tuple[str, ...]]] = [(kind, node, path)]
    while stack:
        k, n, p = stack.pop()
        if isinstance(n, list):
            stack.extend((k, x, p) for x in n)
            continue
        if not isinstance(n, dict):
            continue
        if k:
            yield k, n, p
        for key, v in n.items():
            if isinstance(v, dict | list):
                if key[:1].isupper():  # {"NodeName": {...}}: v is the node's body
                    stack.append((key, v, p))
                else:
                    stack.append(("", v, (*p, key)))


def _constraint(n: Node) -> Iterator[str]:
    if n.get("contype") == "CONSTR_NOTNULL" and n.get("keys"):
        yield "a named NOT NULL constraint (CONSTRAINT name NOT NULL column)"
    if n.get("contype") == "CONSTR_GENERATED" and n.get("generated_kind") == "v":
        yield "a virtual generated column (GENERATED ALWAYS AS (...) without STORED)"
    if n.get("without_overlaps") or n.get("fk_with_period") or n.get("pk_with_period"):
        yield "WITHOUT OVERLAPS / PERIOD in a key"
    if n.get("nulls_not_distinct"):
        yield "UNIQUE NULLS NOT DISTINCT"


def _merge(n: Node, _path: tuple[str, ...]) -> Iterator[str]:
    yield "MERGE"
    if n.get("returningClause"):
        yield "MERGE ... RETURNING"


def _merge_when(n: Node, _path: tuple[str, ...]) -> Iterator[str]:
    if n.get("matchKind") == "MERGE_WHEN_NOT_MATCHED_BY_SOURCE":
        yield "MERGE ... WHEN NOT MATCHED BY SOURCE"


def _index(n: Node, _path: tuple[str, ...]) -> Iterator[str]:
    if n.get("nulls_not_distinct"):
        yield "UNIQUE NULLS NOT DISTINCT"


def _view(n: Node, _path: tuple[str, ...]) -> Iterator[str]:
    if "security_invoker" in defnames(n.get("options")):
        yield "CREATE VIEW ... WITH (security_invoker)"


def _column_ref(n: Node, path: tuple[str, ...]) -> Iterator[str]:
    fields = n.get("fields") or []
    if "returningClause" in path and len(fields) > 1 and sval(fields[0]) in ("old", "new"):
        yield "RETURNING old.* / new.*"


def _always(feature: str) -> Callable[[Node, tuple[str, ...]], Iterator[str]]:
    def found(_n: Node, _path: tuple[str, ...]) -> Iterator[str]:
        yield feature

    return found


#: node kind -> the features it can show
_BY_KIND: dict[str, Callable[[Node, tuple[str, ...]], Iterator[str]]] = {
    "MergeStmt": _merge,
    "MergeWhenClause": _merge_when,
    "Constraint": lambda n, _path: _constraint(n),
    "IndexStmt": _index,
    "ViewStmt": _view,
    "ColumnRef": _column_ref,
    "JsonTable": _always("JSON_TABLE"),
    "JsonFuncExpr": _always("SQL/JSON query functions (JSON_EXISTS, JSON_QUERY, JSON_VALUE)"),
    **{
        k: _always("SQL/JSON predicates and constructors (IS JSON, JSON_OBJECT, JSON_ARRAY)")
        for k in _SQL_JSON
    },
}


def requirements(kind: str, node: Node) -> list[tuple[str, int]]:
    """The features of one statement that need a newer server, newest first."""
    found: dict[str, int] = {}
    for k, n, path in _walk(kind, node):
        check = _BY_KIND.get(k)
        if check is not None:
            for feature in check(n, path):
                found[feature] = FEATURES[feature]
    return sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))


def extension(kind: str, node: Node) -> str | None:
    """The extension a ``CREATE EXTENSION`` needs, else None."""
    return str(node["extname"]) if kind == "CreateExtensionStmt" else None

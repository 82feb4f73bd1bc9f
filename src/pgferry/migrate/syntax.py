"""Syntax the parser accepts but an older server does not: what each statement needs.

Contract (pure): pgferry parses migrations with pglast, which speaks the newest
PostgreSQL grammar (18). :func:`requirements` walks one parsed statement and
returns the features in it that need a newer server than some targets run, as
``(feature, minimum major version)``; ``migrate plan`` and ``migrate up``
compare them with the target's version before anything runs
(:mod:`pgferry.migrate.preflight`). The table :data:`FEATURES` covers the
common ones; a feature missing here still fails on the server, with the
server's own message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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


def walk(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[Any, tuple[str, ...]]]:
    """Every pglast node under ``node`` with the attribute names that lead to it."""
    from pglast import ast

    if isinstance(node, tuple | list):
        for child in node:
            yield from walk(child, path)
        return
    if not isinstance(node, ast.Node):
        return
    yield node, path
    for attr in type(node).__slots__:  # type: ignore[attr-defined]
        value = getattr(node, attr, None)
        if isinstance(value, ast.Node | tuple | list):
            yield from walk(value, (*path, attr))


def _constraint(node: Any) -> Iterator[str]:
    from pglast.enums import ConstrType

    if node.contype == ConstrType.CONSTR_NOTNULL and node.keys:
        yield "a named NOT NULL constraint (CONSTRAINT name NOT NULL column)"
    if node.contype == ConstrType.CONSTR_GENERATED and node.generated_kind == "v":
        yield "a virtual generated column (GENERATED ALWAYS AS (...) without STORED)"
    if node.without_overlaps or node.fk_with_period or node.pk_with_period:
        yield "WITHOUT OVERLAPS / PERIOD in a key"
    if node.nulls_not_distinct:
        yield "UNIQUE NULLS NOT DISTINCT"


def _features(node: Any, path: tuple[str, ...]) -> Iterator[str]:
    from pglast import ast
    from pglast.enums import MergeMatchKind

    name = type(node).__name__
    if isinstance(node, ast.MergeStmt):
        yield "MERGE"
        if node.returningClause is not None:
            yield "MERGE ... RETURNING"
    elif isinstance(node, ast.MergeWhenClause):
        if node.matchKind == MergeMatchKind.MERGE_WHEN_NOT_MATCHED_BY_SOURCE:
            yield "MERGE ... WHEN NOT MATCHED BY SOURCE"
    elif isinstance(node, ast.Constraint):
        yield from _constraint(node)
    elif isinstance(node, ast.IndexStmt) and node.nulls_not_distinct:
        yield "UNIQUE NULLS NOT DISTINCT"
    elif isinstance(node, ast.ViewStmt):
        if any(getattr(o, "defname", None) == "security_invoker" for o in node.options or ()):
            yield "CREATE VIEW ... WITH (security_invoker)"
    elif name == "JsonTable":
        yield "JSON_TABLE"
    elif name == "JsonFuncExpr":
        yield "SQL/JSON query functions (JSON_EXISTS, JSON_QUERY, JSON_VALUE)"
    elif name in ("JsonIsPredicate", "JsonObjectConstructor", "JsonArrayConstructor",
                  "JsonArrayQueryConstructor", "JsonObjectAgg", "JsonArrayAgg"):
        yield "SQL/JSON predicates and constructors (IS JSON, JSON_OBJECT, JSON_ARRAY)"
    elif isinstance(node, ast.ColumnRef) and "returningClause" in path:
        fields = node.fields or ()
        if len(fields) > 1 and getattr(fields[0], "sval", None) in ("old", "new"):
            yield "RETURNING old.* / new.*"


def requirements(stmt: Any) -> list[tuple[str, int]]:
    """The features of one parsed statement that need a newer server, newest first."""
    found: dict[str, int] = {}
    for node, path in walk(stmt):
        for feature in _features(node, path):
            found[feature] = FEATURES[feature]
    return sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))

"""Whether a PL/pgSQL trigger function can return NULL: read, not run.

Contract: :func:`returns_new` is True only when the function provably returns its ``NEW``
row on every path that returns: every ``RETURN`` is ``RETURN NEW`` (as the scanner sees
the body: comments and strings are not code), and nothing replaces ``NEW`` as a whole
(``NEW := ...``, ``SELECT ... INTO NEW``, ``EXECUTE ... INTO NEW``, a loop over it). A
``BEFORE INSERT`` or ``UPDATE`` row trigger such a function runs cannot skip a row, so a
sync need not check each of its writes for one (:mod:`pgferry.sync.skipped`); the
common one (``NEW.updated_at := now(); RETURN NEW;``) is such a function. Anything not
understood (a body the parser refuses, ``RETURN`` of another variable or expression,
another language) is False: the writes are checked.

Pure: the parser, no database.
"""

from __future__ import annotations

from typing import Any

from pgferry.jsonio import loads
from pgferry.sqltext.parser import parser

#: trigger functions in C (or built in) that return the row on every path: (library,
#: symbol); ``moddatetime`` stamps a column (Supabase's suggested ``updated_at`` trigger),
#: ``tsvector_update_trigger`` fills a full-text column
ROW_RETURNING = frozenset(
    (
        ("$libdir/moddatetime", "moddatetime"),
        ("", "tsvector_update_trigger_byid"),
        ("", "tsvector_update_trigger_bycolumn"),
    )
)


def never_skips(language: str, definition: str, source: str, library: str) -> bool:
    """A trigger function that returns its row on every path that returns: PL/pgSQL that
    :func:`returns_new` proves, or one of :data:`ROW_RETURNING` (by its C library or as
    built in, and symbol). ``language``: ``pg_language.lanname``; ``definition``: a
    PL/pgSQL function's ``CREATE FUNCTION``; ``source``: ``prosrc``; ``library``: ``probin``.
    """
    if language == "plpgsql":
        return returns_new(definition, source)
    return language in ("c", "internal") and (library, source) in ROW_RETURNING


def returns_new(definition: str, body: str) -> bool:
    """``definition``: the function's ``CREATE FUNCTION`` (``pg_get_functiondef``);
    ``body``: its source (``prosrc``)."""
    p = parser()
    try:
        tree = loads(p.parse_plpgsql_json(definition))
        tokens = list(p.scan(body))
    except Exception:  # noqa: BLE001 - not understood: the writes are checked
        return False
    fn = tree[0].get("PLpgSQL_function", {}) if tree else {}
    new = fn.get("new_varno", 0)
    for dno, datum in enumerate(fn.get("datums", [])):
        names = [v.get("refname") for v in datum.values() if isinstance(v, dict)]
        if dno != new and "new" in names:
            return False  # a variable of a block shadows NEW: RETURN NEW may return it
    for i, tok in enumerate(tokens):
        if tok.name == "RETURN":
            after = [t.name for t in tokens[i + 1 : i + 3]]
            if after != ["NEW", "ASCII_59"]:  # RETURN NEW ;
                return False
    return _keeps_new(fn.get("action"), new)


def _keeps_new(node: Any, new: int) -> bool:
    """No statement under ``node`` replaces NEW as a whole or returns anything but a
    variable (``RETURN NEW``, which the tokens confirm)."""
    if isinstance(node, list):
        return all(_keeps_new(n, new) for n in node)
    if not isinstance(node, dict):
        return True
    for kind, value in node.items():
        if kind == "PLpgSQL_rec" and isinstance(value, dict) and value.get("refname") == "new":
            return False  # a target: INTO NEW, FOR NEW IN ...
        if kind in ("PLpgSQL_stmt_return_next", "PLpgSQL_stmt_return_query"):
            return False
        if kind == "PLpgSQL_stmt_return" and "expr" in value:
            return False
        if kind == "PLpgSQL_stmt_assign" and value.get("varno", 0) == new:
            return False  # NEW := ...
        if not _keeps_new(value, new):
            return False
    return True

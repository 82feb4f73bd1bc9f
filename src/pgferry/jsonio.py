"""JSON for all of pgferry, through one library: orjson.

Contract: :func:`dumps` writes one JSON text (compact, or ``pretty`` with a two-space
indent for files people read: backup manifests, lint catalog snapshots, SARIF);
:func:`loads` reads one; :data:`DecodeError` is what a bad text raises (a
``ValueError``, and the standard library's ``JSONDecodeError`` too).

Why orjson, not the standard library: lint decodes a parse tree per statement file and
writes thousands of findings, and orjson does those ~1.5x and ~20x faster; that is
most of lint's time budget, so it has to be orjson there, and one library everywhere
means one output format. Where the two differ pgferry keeps the standard library's
behaviour: keys that are not strings are written as strings, and dates, datetimes and
dataclasses go through ``default`` (the caller's, as with ``json.dumps``). A string
with lone surrogates (a path with undecodable bytes) cannot be UTF-8; such characters
are written as U+FFFD instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

DecodeError = orjson.JSONDecodeError
_BASE = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _plain(default: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    def fallback(o: Any) -> Any:
        if default is not None:
            return default(o)
        if hasattr(o, "__dataclass_fields__"):
            from dataclasses import asdict

            return asdict(o)
        if hasattr(o, "isoformat"):
            return o.isoformat()
        raise TypeError(f"{type(o).__name__} is not JSON serializable")

    return fallback


def _clean(obj: Any) -> Any:
    """``obj`` with lone surrogates in its strings replaced by U+FFFD."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(obj, dict):
        return {_clean(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def dumps(
    obj: Any,
    *,
    pretty: bool = False,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> str:
    """``obj`` as JSON text (UTF-8 characters as they are, not escaped)."""
    opts = (
        _BASE | (orjson.OPT_INDENT_2 if pretty else 0) | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    )
    try:
        return orjson.dumps(obj, default=_plain(default), option=opts).decode("utf-8")
    except orjson.JSONEncodeError:
        if not isinstance(obj, dict | list | tuple | str):
            raise
        return orjson.dumps(_clean(obj), default=_plain(default), option=opts).decode("utf-8")


def loads(data: str | bytes) -> Any:
    """One JSON text as Python objects; :data:`DecodeError` when it is not JSON."""
    return orjson.loads(data)

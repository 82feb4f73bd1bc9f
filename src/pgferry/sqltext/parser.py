"""pglast's parser, loaded without what pgferry's SQL front end never uses (a third of
lint's start-up): the one place pgferry reaches into pglast's packaging.

Contract: :func:`parser` returns the ``pglast.parser`` extension module (the front
end calls ``parse_sql_json`` and ``scan`` and catches ``ParseError``);
:func:`tree` parses a text into pglast's JSON tree as plain dicts, and
:func:`error_at` reads a ``ParseError``'s message and character position. Importing
it the ordinary way first runs ``pglast/__init__``, which imports every enum
module, and the extension's own ``from . import ast, enums``: ~35 ms of the
~110 ms a one-file lint takes, for classes the JSON path never touches.

So, when nothing has imported pglast yet, the extension is loaded under a
placeholder package whose ``ast`` and ``enums`` are stand-ins, and the real
modules load on first use:

- the placeholder is ``sys.modules["pglast"]`` from then on; the first access to
  anything it does not hold yet runs pglast's real ``__init__`` in it, so
  ``import pglast; pglast.parse_sql(...)`` elsewhere in the process works as usual;
- the stand-ins leave ``sys.modules`` at once (``import pglast.ast`` gives the
  real module); the extension keeps them as globals, and each one imports the
  real module and takes over its namespace the first time an attribute is read.

Anything unexpected (another pglast layout, an error while loading) undoes the
placeholder and falls back to the ordinary import: slower, never wrong. That would
happen quietly, so ``tests/unit/lint/test_lint_pgparse.py`` asserts in a fresh
interpreter that the light path is taken (exactly ``pglast``, ``pglast.error`` and
``pglast.parser`` loaded) and that pglast stays whole for everyone else: a pglast
upgrade that changes its layout fails that test instead of slowing lint down.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from pgferry.jsonio import loads as _loads

_LATER = ("pglast.ast", "pglast.enums")


class _Later(types.ModuleType):
    """Stands in for a pglast module the parser names at load time but parse_sql_json
    never reads; becomes the real module's namespace on first use."""

    def __getattr__(self, name: str) -> Any:
        import importlib

        if sys.modules.get(self.__name__) is self:  # pragma: no cover - removed at load
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, name)


class _Package(types.ModuleType):
    """The placeholder ``pglast`` package: runs the real ``__init__`` in itself on the
    first read of a name it does not hold."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)  # dunder probes (copy, inspect) need not load it
        self.__class__ = types.ModuleType  # type: ignore[assignment]  # once; no recursion
        spec = self.__spec__
        assert spec is not None and spec.loader is not None
        spec.loader.exec_module(self)
        return getattr(self, name)


def parser() -> Any:
    """The ``pglast.parser`` module (see the module docstring)."""
    loaded = sys.modules.get("pglast.parser")
    if loaded is not None:
        return loaded
    if "pglast" in sys.modules or any(n in sys.modules for n in _LATER):
        from pglast import parser as ordinary

        return ordinary
    try:
        return _light()
    except Exception:  # noqa: BLE001 # pragma: no cover - a pglast this module does not know
        for name in ("pglast", "pglast.parser", "pglast.error", *_LATER):
            sys.modules.pop(name, None)
        from pglast import parser as ordinary

        return ordinary


def _light() -> Any:
    import importlib.util

    spec = importlib.util.find_spec("pglast")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        raise ImportError("pglast is not a package here")
    pkg = _Package(spec.name)
    pkg.__spec__ = spec
    pkg.__loader__ = spec.loader
    pkg.__file__ = spec.origin
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__package__ = spec.name
    later = {name: _Later(name) for name in _LATER}
    sys.modules["pglast"] = pkg
    sys.modules.update(later)
    try:
        # (import_module, not "from pglast import": that would probe the placeholder)
        error = importlib.import_module("pglast.error")  # the base class of ParseError
        pkg.__dict__["Error"] = error.Error
        pkg.__dict__["error"] = error
        for name, mod in later.items():
            pkg.__dict__[name.rsplit(".", 1)[1]] = mod
        mod_parser = importlib.import_module("pglast.parser")
        pkg.__dict__["parser"] = mod_parser
    finally:
        for name, mod in later.items():
            if sys.modules.get(name) is mod:
                del sys.modules[name]
        for name in _LATER:  # the stand-ins must not answer for the real modules
            pkg.__dict__.pop(name.rsplit(".", 1)[1], None)
    return mod_parser


def tree(text: str) -> dict[str, Any]:
    """``text`` parsed into pglast's JSON tree (plain dicts); raises the parser's
    ``ParseError`` (see :func:`error_at`)."""
    result: dict[str, Any] = _loads(parser().parse_sql_json(text))
    return result


def error_at(e: BaseException) -> tuple[str, int | None]:
    """A ``ParseError``'s message and 0-based character position in the text (or None)."""
    message, pos = (e.args + (None,))[:2] if e.args else ("syntax error", None)
    return str(message), pos if isinstance(pos, int) else None

"""The lint engine's light load of pglast's parser: fast, and pglast stays whole for every
other user in the same process (run in a fresh interpreter, where the light path applies)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    from pgferry.sqltext.parser import parser

    p = parser()
    assert sorted(k for k in sys.modules if k.startswith("pglast")) == [
        "pglast", "pglast.error", "pglast.parser"], sorted(sys.modules)
    assert '"SelectStmt"' in p.parse_sql_json("SELECT 1")
    try:
        p.parse_sql_json("SELEC 1")
    except p.ParseError as e:
        assert "syntax error" in e.args[0]
    else:
        raise AssertionError("no ParseError")
    assert parser() is p

    # everyone else still gets the whole of pglast, the same parser module included
    import pglast
    from pglast import ast, enums
    from pglast.stream import RawStream

    stmt = pglast.parse_sql("CREATE INDEX CONCURRENTLY i ON t (a)")[0].stmt
    assert isinstance(stmt, ast.IndexStmt) and stmt.concurrent
    assert pglast.parser is p and issubclass(p.ParseError, pglast.Error)
    assert pglast.parser.ParseError is p.ParseError
    assert RawStream()(pglast.parse_sql("select 1")) == "SELECT 1"
    assert enums.SetOperation.SETOP_NONE.value == 0
    import pglast.ast as again
    assert again is ast and p.ast.IndexStmt is ast.IndexStmt
    print("ok")
""")


def test_light_parser_load_leaves_pglast_whole() -> None:
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_after_an_ordinary_import_the_ordinary_module_is_used() -> None:
    import pglast.parser

    from pgferry.sqltext.parser import parser

    assert parser() is pglast.parser

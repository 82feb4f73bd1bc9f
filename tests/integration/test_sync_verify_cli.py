"""``pgferry verify SOURCE TARGET`` end to end: exit codes and the JSON it prints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.helpers import Result, write_project

SCHEMA = """
CREATE TABLE u (id uuid PRIMARY KEY, v text);
CREATE TABLE c (tenant int, code text, v numeric, PRIMARY KEY (tenant, code));
INSERT INTO u SELECT md5(g::text)::uuid, CASE WHEN g % 3 = 0 THEN NULL ELSE 'v' || g END
FROM generate_series(1, 3000) g;
INSERT INTO c SELECT g % 5, 'c' || g, g / 3.0 FROM generate_series(1, 3000) g;
"""


def test_verify_exits_1_on_differences_and_0_when_identical(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    p = write_project(tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")})
    for dsn in p.dsns.values():
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(SCHEMA)

    def verify() -> Result:
        return cli("--config", str(p.config), "--json", "verify", "dev", "prod")

    r = verify()
    assert r.code == 0, r.err
    assert {t["table"]: t["matched"] for t in r.json["tables"]} == {
        "public.c": 3000,
        "public.u": 3000,
    }
    with psycopg.connect(p.dsns["prod"], autocommit=True) as c:
        row = c.execute("UPDATE u SET v = NULL WHERE id = md5('10')::uuid RETURNING id")
        changed = row.fetchone()[0]  # type: ignore[index]
        c.execute("DELETE FROM c WHERE tenant = 2 AND code = 'c7'")
        c.execute("INSERT INTO c VALUES (9, 'zz', 1)")
    r = verify()
    assert r.code == 1, r.err
    by = {t["table"]: t for t in r.json["tables"]}
    assert (by["public.u"]["differing"], by["public.u"]["matched"]) == (1, 2999)
    assert by["public.u"]["first_differing_keys"] == [
        {"kind": "differing", "key": {"id": str(changed)}}
    ]
    assert (by["public.c"]["only_in_source"], by["public.c"]["only_in_target"]) == (1, 1)
    assert {(k["kind"], k["key"]["code"]) for k in by["public.c"]["first_differing_keys"]} == {
        ("only_in_source", "c7"),
        ("only_in_target", "zz"),
    }
    assert by["public.c"]["checksum_source"] != by["public.c"]["checksum_target"]
    assert by["public.u"]["checksum_source"] != by["public.u"]["checksum_target"]


def test_a_piped_verify_prints_a_line_per_table_and_loads_no_rich(
    tmp_path: Path, make_db: Callable[..., str]
) -> None:
    """stderr is not a terminal (cron, CI, a pipe): one plain line per table as it ends,
    the warnings as they come, and rich (~0.05 s of a start) is not imported."""
    import subprocess
    import sys

    p = write_project(tmp_path / "p", {"dev": make_db("dev"), "prod": make_db("prod")})
    for dsn in p.dsns.values():
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(SCHEMA)
    with psycopg.connect(p.dsns["prod"], autocommit=True) as c:
        c.execute("CREATE TABLE extra (id int PRIMARY KEY); INSERT INTO extra VALUES (1)")
        c.execute("DELETE FROM u WHERE id = md5('3')::uuid")
    code = (
        "import sys\n"
        "from pgferry.cli.app import main\n"
        "rc = main(sys.argv[1:])\n"
        "rich = sorted(m for m in sys.modules if m == 'rich' or m.startswith('rich.'))\n"
        "sys.stderr.write(f'rich: {rich}\\n')\n"
        "sys.exit(rc)\n"
    )
    args = ["--config", str(p.config), "--json", "verify", "dev", "prod"]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert lines[-1] == "rich: []", lines
    tables = sorted(line.split(" in ")[0] for line in lines if line.startswith("public."))
    assert tables == ["public.c: 3,000 rows", "public.u: 3,000 rows"], lines  # the source's
    assert any(line.startswith("public.c: ") and line.endswith(", ok") for line in lines)
    assert any(line.startswith("public.u: ") and line.endswith(", differs") for line in lines)
    assert "warning: public.extra exists only on the target; left untouched" in lines, lines

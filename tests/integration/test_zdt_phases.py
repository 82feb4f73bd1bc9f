"""Phases and guards: contract files held by `migrate up` until their guards pass (issue 17).

Every test that runs expand or contract files runs application writes beside them
(:class:`tests.helpers.zdt.Load`) and asserts that none failed.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import Any

import psycopg

from tests.helpers import Project, Result
from tests.helpers.zdt import Load, backfill, journal, one

V1 = """CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    email text NOT NULL);
INSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 2000) g;
"""
EXPAND = """-- pgferry:phase expand
ALTER TABLE users ADD COLUMN email_address text;
"""
CONTRACT = """-- Drop the old column once everything reads email_address.
-- pgferry:phase contract
-- pgferry:after backfill copy_email
-- pgferry:require SELECT id FROM users WHERE email_address IS DISTINCT FROM email
ALTER TABLE users ALTER COLUMN email_address SET NOT NULL;
"""


def v1_writes(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    if rnd.random() < 0.5:
        conn.execute("INSERT INTO users (email) VALUES (%s)", [f"n{rnd.random()}@x"])
    else:
        conn.execute("UPDATE users SET email = email WHERE id = %s", [rnd.randint(1, 2000)])


def both_writes(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    """The application after the expand: writes both columns (dual write)."""
    e = f"n{rnd.random()}@x"
    if rnd.random() < 0.5:
        conn.execute("INSERT INTO users (email, email_address) VALUES (%s, %s)", [e, e])
    else:
        conn.execute(
            "UPDATE users SET email = %s, email_address = %s WHERE id = %s",
            [e, e, rnd.randint(1, 2000)],
        )


def v2_updates(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    """The new application, which no longer knows the old column."""
    conn.execute(
        "UPDATE users SET email_address = %s WHERE id = %s",
        [f"n{rnd.random()}@x", rnd.randint(1, 2000)],
    )


def _setup(p: Project, contract: str = CONTRACT, cli: Callable[..., Result] | None = None) -> None:
    p.write("V1__users.sql", V1)
    if cli is not None:  # the table exists before the application writes to it
        assert cli("--config", str(p.config), "migrate", "up", "-e", "dev").code == 0
    p.write("V2__add_email_address.sql", EXPAND)
    p.write("V3__require_email_address.sql", contract)
    backfill(
        p,
        "copy_email",
        "UPDATE users SET email_address = email\n"
        "WHERE id BETWEEN :lo AND :hi AND email_address IS NULL\n",
    )


def test_contract_held_until_its_backfill_then_released(
    zproj: Project, cli: Callable[..., Result]
) -> None:
    p, dev = zproj, zproj.dsns["dev"]
    _setup(p, cli=cli)
    cfg = ("--config", str(p.config))
    with Load(dev, v1_writes) as load:
        r = cli(*cfg, "migrate", "up", "-e", "dev")
        assert r.code == 0, r.err
        assert "applied V2 add email address" in r.err
        assert (
            "held V3 require email address (contract): after backfill: copy_email has not "
            "run in dev; run `pgferry backfill run copy_email --env dev`" in r.err
        )
        assert one(dev, "SELECT max(version::int) FROM flyway_schema_history") == 2
        load.check()
    with Load(dev, both_writes, app="app-v2") as load:
        st = cli(*cfg, "migrate", "status", "-e", "dev")
        assert st.code == 0
        assert "held (contract)" in st.out
        assert (
            "held     V3__require_email_address.sql: after backfill: copy_email has not run"
            in st.out
        )
        js = cli(*cfg, "migrate", "status", "-e", "dev", "--json").json
        held = next(e for e in js["entries"] if e["state"] == "held")
        assert held["ready"] is False
        assert [g["kind"] for g in held["guards"]] == ["after_backfill", "require"]
        assert [g["ok"] for g in held["guards"]] == [False, False]
        plan = cli(*cfg, "migrate", "plan", "-e", "dev", "--contract")
        assert "-- held V3 require email address (contract)" in plan.out
        assert "-- nothing to apply" in plan.out

        # --contract while a guard fails: the rest applies, the file stays held, exit 1
        r = cli(*cfg, "migrate", "up", "-e", "dev", "--contract")
        assert r.code == 1, r.err
        assert (
            "1 contract file(s) still held: V3__require_email_address.sql (after backfill:" in r.err
        )
        assert journal(dev, "migrate up")[-1]["outcome"] == "problem"

        b = cli(
            *cfg,
            "backfill",
            "run",
            "copy_email",
            "-e",
            "dev",
            "--batch-size",
            "300",
            "--target-duration",
            "0",
        )
        assert b.code == 0, b.err
        m = re.search(
            r"dev: backfill copy_email completed: ([\d,]+) rows over ([\d,]+) keys in "
            r"(\d+) batches",
            b.out,
        )
        assert m, b.out
        keys = int(m[2].replace(",", ""))
        assert keys >= 2000 and int(m[3]) == -(-keys // 300)  # the rows v1 inserted too

        st = cli(*cfg, "migrate", "status", "-e", "dev")
        assert "held (contract, ready)" in st.out
        assert "every guard passes; `migrate up --contract` applies it" in st.out
        r = cli(*cfg, "migrate", "up", "-e", "dev")  # without --contract: still held
        assert r.code == 0 and "held V3" in r.err
        r = cli(*cfg, "migrate", "up", "-e", "dev", "--contract")
        assert r.code == 0, r.err
        assert "applied V3 require email address" in r.err
        assert "released V3 require email address (contract): every guard passed" in r.err
        load.check()
    assert one(dev, "SELECT count(*) FROM users WHERE email_address IS NULL") == 0
    assert (
        one(
            dev,
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'users'::regclass"
            " AND attname = 'email_address'",
        )
        is True
    )
    ups = journal(dev, "migrate up")
    assert ups[-1]["outcome"] == "ok"
    assert ups[-1]["details"]["applied"][0]["script"] == "V3__require_email_address.sql"


def test_override_needs_a_reason_and_is_journaled(
    zproj: Project, cli: Callable[..., Result]
) -> None:
    p, dev = zproj, zproj.dsns["dev"]
    _setup(p, cli=cli)
    cfg = ("--config", str(p.config))
    with Load(dev, v1_writes) as load:
        assert cli(*cfg, "migrate", "up", "-e", "dev").code == 0
        r = cli(*cfg, "migrate", "up", "-e", "dev", "--contract", "--override-guards")
        assert r.code == 2 and "--override-guards needs --contract and --reason" in r.err
    load.check()
    with Load(dev, both_writes, app="app-v2") as load:
        assert cli(*cfg, "backfill", "run", "copy_email", "-e", "dev").code == 0
    load.check()
    # the require guard still fails if a row differs: override it, with a reason
    with psycopg.connect(dev, autocommit=True) as c:
        c.execute("UPDATE users SET email_address = 'other' WHERE id = 7")
    r = cli(*cfg, "migrate", "up", "-e", "dev", "--contract")
    assert r.code == 1 and "the require query still returns rows, e.g. (id=7)" in r.err
    r = cli(
        *cfg,
        "migrate",
        "up",
        "-e",
        "dev",
        "--contract",
        "--override-guards",
        "--reason",
        "INC-12: id 7 is a test account",
    )
    assert r.code == 0, r.err
    assert "released V3 require email address (contract): guards overridden" in r.err
    last = journal(dev, "migrate up")[-1]
    assert last["arguments"]["reason"] == "INC-12: id 7 is a test account"
    over = last["details"]["guard_override"]
    assert over["reason"] == "INC-12: id 7 is a test account"
    failing = [g for g in over["files"][0]["guards"] if not g["ok"]]
    assert [g["kind"] for g in failing] == ["require"]


def test_require_no_clients_and_wait(zproj: Project, cli: Callable[..., Result]) -> None:
    p, dev = zproj, zproj.dsns["dev"]
    _setup(
        p,
        """-- pgferry:phase contract
-- pgferry:require-no-clients application_name LIKE 'app-v1%'
-- pgferry:wait 2s
ALTER TABLE users DROP COLUMN email;
""",
        cli=cli,
    )
    cfg = ("--config", str(p.config))
    with Load(dev, v1_writes) as load:  # the old version, connected as app-v1
        assert cli(*cfg, "migrate", "up", "-e", "dev").code == 0
        r = cli(*cfg, "migrate", "up", "-e", "dev", "--contract")
        assert r.code == 1
        assert "require-no-clients: 1 session match, e.g. pid" in r.err
        assert "app-v1" in r.err
        load.check()
    with Load(dev, v2_updates, app="app-v2") as load:  # the new version only
        started = time.monotonic()
        js = cli(*cfg, "migrate", "status", "-e", "dev", "--json").json
        held = next(e for e in js["entries"] if e["state"] == "held")
        by = {g["kind"]: g for g in held["guards"]}
        assert by["require_no_clients"]["ok"] is True
        if time.monotonic() - started < 1.5:  # V2 was applied under 2 s ago
            assert by["wait"]["ok"] is False and "2s are needed" in by["wait"]["why"]
        time.sleep(2.1)
        r = cli(*cfg, "migrate", "up", "-e", "dev", "--contract")
        assert r.code == 0, r.err
        assert "watching pg_stat_activity for 1s" in r.err  # [contract] clients_window
        assert "released V3" in r.err
        load.stop()
        # app-v2 never used email; the contract dropped it under its writes
        load.check()


def test_held_contract_below_an_applied_file_is_not_ignored(
    zproj: Project, cli: Callable[..., Result]
) -> None:
    p, dev = zproj, zproj.dsns["dev"]
    _setup(p, cli=cli)
    p.write("V4__add_note.sql", "ALTER TABLE users ADD COLUMN note text;\n")
    cfg = ("--config", str(p.config))
    with Load(dev, v1_writes) as load:
        r = cli(*cfg, "migrate", "up", "-e", "dev")
        assert r.code == 0, r.err
        assert "applied V4 add note" in r.err and "held V3" in r.err
        v = cli(*cfg, "migrate", "validate", "-e", "dev")
        assert v.code == 0, v.out  # held, not "ignored": the history is not ahead
        assert cli(*cfg, "migrate", "up", "-e", "dev").code == 0
    load.check()
    with Load(dev, both_writes, app="app-v2") as load:
        assert cli(*cfg, "backfill", "run", "copy_email", "-e", "dev").code == 0
        r = cli(*cfg, "migrate", "up", "-e", "dev", "--contract")
        assert r.code == 0 and "applied V3" in r.err, r.err
    load.check()
    st = cli(*cfg, "migrate", "status", "-e", "dev", "--json").json
    assert st["counts"] == {"applied": 4} and st["current_version"] == "4"


BAD = [
    ("-- pgferry:phse contract\nSELECT 1;\n", "V2__bad.sql:1: unknown directive pgferry:phse"),
    (
        "-- pgferry:phase contarct\nSELECT 1;\n",
        "V2__bad.sql:1: unknown phase 'contarct' (write `-- pgferry:phase expand`",
    ),
    (
        "-- pgferry:after backfill copy_email\nSELECT 1;\n",
        "V2__bad.sql:1: pgferry:after guards a contract file: add `-- pgferry:phase contract`",
    ),
    (
        "SELECT 1;\n-- pgferry:phase contract\n",
        "V2__bad.sql:2: pgferry:phase must be in the file's header, above the first statement "
        "(line 1)",
    ),
    (
        "-- pgferry:phase contract\n-- pgferry:require DELETE FROM users\nSELECT 1;\n",
        "V2__bad.sql:2: the pgferry:require query must be a query (SELECT ...)",
    ),
    (
        "-- pgferry:phase contract\n-- pgferry:require SELEC 1\nSELECT 1;\n",
        "V2__bad.sql:2: the pgferry:require query does not parse",
    ),
    (
        "-- pgferry:phase contract\n"
        "-- pgferry:require-no-clients true); DROP TABLE users; SELECT (true\nSELECT 1;\n",
        "V2__bad.sql:2: the pgferry:require-no-clients condition must be one query, not 3 "
        "statements",
    ),
    (
        "-- pgferry:phase contract\n-- pgferry:wait 24\nSELECT 1;\n",
        "V2__bad.sql:2: pgferry:wait needs a duration with its unit",
    ),
    (
        "-- pgferry:phase contract\n-- pgferry:after backfill nope\nSELECT 1;\n",
        "V2__bad.sql:2: pgferry:after backfill nope names backfills/nope.sql, which does not exist",
    ),
]


def test_bad_headers_are_bad_input(zproj: Project, cli: Callable[..., Result]) -> None:
    p = zproj
    p.write("V1__users.sql", V1)
    backfill(p, "copy_email", "UPDATE users SET email = email WHERE id BETWEEN :lo AND :hi\n")
    cfg = ("--config", str(p.config))
    for text, want in BAD:
        p.write("V2__bad.sql", text)
        for verb in ("up", "plan"):
            r = cli(*cfg, "migrate", verb, "-e", "dev")
            assert r.code == 2, (text, verb, r.err)
            lines = r.err.strip().splitlines()
            assert len(lines) == 1 and want in lines[0], (text, r.err)
    # nothing ran: the parse errors stop `up` before the first file
    assert one(p.dsns["dev"], "SELECT to_regclass('users') IS NULL") is True

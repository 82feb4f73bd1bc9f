"""The four `migrate new --expand-contract` recipes, end to end on a real server under
concurrent application writes: expand, backfill, switch the application, contract; and
`migrate test` proves each recipe's undo files (issue 17)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from tests.helpers import Project, Result
from tests.helpers.zdt import Load, one, sql

ROWS = 3000  # the rows V1 makes
V1 = """CREATE TABLE users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL,
    amount integer NOT NULL DEFAULT 0,
    note text,
    bio text
);
INSERT INTO users (email, amount, note, bio)
SELECT 'u' || g || '@x', g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'n' || g END,
       CASE WHEN g % 2 = 0 THEN 'bio ' || g END
FROM generate_series(1, 3000) g;
"""

Work = Callable[[psycopg.Connection[Any], random.Random], None]


def _id(rnd: random.Random) -> int:
    return rnd.randint(1, ROWS)


@dataclass
class Case:
    description: str
    old: Work  # the application before the change
    new: Work  # the application after it (what runs while the contract applies)
    check: Callable[[str], None]  # the database after the contract


def _rename_old(c: psycopg.Connection[Any], rnd: random.Random) -> None:
    if rnd.random() < 0.4:
        c.execute("INSERT INTO users (email) VALUES (%s)", [f"v1-{rnd.random()}"])
    else:
        c.execute("UPDATE users SET email = %s WHERE id = %s", [f"v1-{rnd.random()}", _id(rnd)])


def _rename_new(c: psycopg.Connection[Any], rnd: random.Random) -> None:
    if rnd.random() < 0.4:
        c.execute("INSERT INTO users (email_address) VALUES (%s)", [f"v2-{rnd.random()}"])
    else:
        c.execute(
            "UPDATE users SET email_address = %s WHERE id = %s", [f"v2-{rnd.random()}", _id(rnd)]
        )


def _rename_check(dsn: str) -> None:
    cols = {
        r[0]: r[1]
        for r in sql(
            dsn,
            "SELECT column_name, is_nullable FROM "
            "information_schema.columns WHERE table_name = 'users'",
        )
    }
    assert "email" not in cols and cols["email_address"] == "NO"
    assert one(dsn, "SELECT count(*) FROM users WHERE email_address LIKE 'u%@x'") > 0


def _type_old(c: psycopg.Connection[Any], rnd: random.Random) -> None:
    if rnd.random() < 0.4:
        c.execute("INSERT INTO users (email, amount) VALUES ('t', %s)", [rnd.randint(0, 99)])
    else:
        c.execute("UPDATE users SET amount = amount + 1 WHERE id = %s", [_id(rnd)])


def _type_new(c: psycopg.Connection[Any], rnd: random.Random) -> None:
    if rnd.random() < 0.4:  # a value only bigint holds, once the swap is done
        c.execute("INSERT INTO users (email, amount) VALUES ('t', %s)", [rnd.randint(0, 99)])
    else:
        c.execute("UPDATE users SET amount = amount + 1 WHERE id = %s", [_id(rnd)])


def _type_check(dsn: str) -> None:
    assert (
        one(
            dsn,
            "SELECT data_type FROM information_schema.columns WHERE table_name = "
            "'users' AND column_name = 'amount'",
        )
        == "bigint"
    )
    assert (
        one(
            dsn,
            "SELECT column_default FROM information_schema.columns WHERE "
            "table_name = 'users' AND column_name = 'amount'",
        )
        == "0"
    )
    sql(dsn, "UPDATE users SET amount = 5000000000 WHERE id = 1")
    # every row kept its value (the load only added one per update): none is NULL or below
    assert one(dsn, "SELECT count(*) FROM users WHERE id <= %s AND amount < id", [ROWS]) == 0


def _nn_old(c: psycopg.Connection[Any], rnd: random.Random) -> None:
    if rnd.random() < 0.4:
        c.execute("INSERT INTO users (email, note) VALUES ('n', NULL)")
    else:
        c.execute("UPDATE users SET note = NULL WHERE id = %s", [_id(rnd)])


def _nn_new(c: psycopg.Connection[Any], rnd: random.Random) -> None:
    if rnd.random() < 0.4:
        c.execute("INSERT INTO users (email) VALUES ('n')")
    else:
        c.execute("UPDATE users SET note = %s WHERE id = %s", [f"v2-{rnd.random()}", _id(rnd)])


def _nn_check(dsn: str) -> None:
    assert (
        one(
            dsn,
            "SELECT is_nullable FROM information_schema.columns WHERE table_name = "
            "'users' AND column_name = 'note'",
        )
        == "NO"
    )
    assert one(dsn, "SELECT count(*) FROM users WHERE note = ''") > 0


def _split_old(c: psycopg.Connection[Any], rnd: random.Random) -> None:
    if rnd.random() < 0.4:
        c.execute("INSERT INTO users (email, bio) VALUES ('s', %s)", [f"v1-{rnd.random()}"])
    else:
        c.execute("UPDATE users SET bio = %s WHERE id = %s", [f"v1-{rnd.random()}", _id(rnd)])


def _split_new(c: psycopg.Connection[Any], rnd: random.Random) -> None:
    if rnd.random() < 0.4:
        with c.transaction():
            row = c.execute("INSERT INTO users (email) VALUES ('s') RETURNING id").fetchone()
            assert row is not None
            c.execute(
                "INSERT INTO user_profiles (id, bio) VALUES (%s, %s)",
                [row[0], f"v2-{rnd.random()}"],
            )
    else:
        c.execute(
            "INSERT INTO user_profiles (id, bio) VALUES (%s, %s) ON CONFLICT (id) DO "
            "UPDATE SET bio = excluded.bio",
            [_id(rnd), f"v2-{rnd.random()}"],
        )


def _split_check(dsn: str) -> None:
    assert (
        one(
            dsn,
            "SELECT count(*) FROM information_schema.columns WHERE table_name = "
            "'users' AND column_name = 'bio'",
        )
        == 0
    )
    # every original bio (even ids) moved, with the values the load wrote since
    assert one(dsn, "SELECT count(*) FROM user_profiles WHERE id <= %s", [ROWS]) >= ROWS // 2


CASES = {
    "rename": Case("rename users.email to email_address", _rename_old, _rename_new, _rename_check),
    "change_type": Case("change type of users.amount to bigint", _type_old, _type_new, _type_check),
    "not_null": Case("add not null to users.note default ''", _nn_old, _nn_new, _nn_check),
    "split": Case("split users into user_profiles (bio)", _split_old, _split_new, _split_check),
}


@pytest.mark.parametrize("name", list(CASES))
def test_recipe_under_concurrent_writes(
    name: str, zproj: Project, createdb_role: str, cli: Callable[..., Result]
) -> None:
    case = CASES[name]
    p, dev = zproj, zproj.dsns["dev"]
    cfg = ("--config", str(p.config))
    p.write("V1__users.sql", V1)
    assert cli(*cfg, "migrate", "up", "-e", "dev").code == 0
    r = cli(*cfg, "migrate", "new", "--expand-contract", case.description, "-e", "dev")
    assert r.code == 0, r.err
    created = r.out.split()
    slug = next(c for c in created if c.startswith("backfills/"))[len("backfills/") : -4]
    assert sum(1 for c in created if "XXX__" in c) == 4  # V and U, expand and contract
    # as the contract file says: name the old application in its require-no-clients guard
    contract = next(p.migrations.glob("VXXX__*_2_contract.sql"))
    text = contract.read_text()
    example = "-- -- pgferry:require-no-clients application_name LIKE 'myapp-v1%'"
    assert example in text
    contract.write_text(
        text.replace(example, "-- pgferry:require-no-clients application_name LIKE 'app-v1%'")
    )
    assert cli(*cfg, "migrate", "sum").code == 0

    with Load(dev, case.old) as load:
        r = cli(*cfg, "migrate", "up", "-e", "dev")
        assert r.code == 0, r.err
        assert "1 expand (transaction)" in r.err and f"held V3 {slug.replace('_', ' ')}" in r.err
        b = cli(
            *cfg,
            "backfill",
            "run",
            slug,
            "-e",
            "dev",
            "--batch-size",
            "700",
            "--target-duration",
            "0",
        )
        assert b.code == 0, b.err
        # the old application still runs: its writes are kept in step, but it holds the
        # contract back
        held = cli(*cfg, "migrate", "up", "-e", "dev", "--contract")
        assert held.code == 1, held.err
        assert "require-no-clients: 1 session match" in held.err
    load.check()
    with Load(dev, case.new, app="app-v2") as load:
        r = cli(*cfg, "migrate", "up", "-e", "dev", "--contract")
        assert r.code == 0, r.err
        # the writers may hold the table's lock past lock_timeout: a retried contract says
        # how many attempts it took ("2 contract (transaction, 3 attempts)")
        assert re.search(r"2 contract \(transaction(, \d+ attempts)?\)", r.err), r.err
        assert "every guard passed" in r.err
    load.check()
    case.check(dev)

    # the scaffolded undo files restore what their migrations changed, on a scratch database
    t = cli(*cfg, "migrate", "test", "-e", "dev", "--json")
    assert t.code == 0, t.err
    res = t.json
    assert len(res["undo_checked"]) == 2 and res["backfills"] == [slug]
    assert cli(*cfg, "lint", "-e", "dev", "--all").code == 0

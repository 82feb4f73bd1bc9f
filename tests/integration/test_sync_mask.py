"""Masking expressions computed by a real server: deterministic, unique, type-correct."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from pgferry.errors import BadInput
from pgferry.pg import catalog
from pgferry.sync.masking import compile_rules, mask_expressions, probe, select_list, set_key

KEY = "test-mask-key-0123456789"

SCHEMA = """
CREATE TABLE users (id bigint PRIMARY KEY, email text UNIQUE, work_email varchar(60),
                    full_name text, phone text, ext_id uuid, big bigint, note text,
                    code varchar(40) NOT NULL DEFAULT 'x', born date, score int);
CREATE TABLE orders (id int PRIMARY KEY, customer_email citext, amount numeric);
"""


@pytest.fixture
def conn(db: str) -> Any:
    with psycopg.connect(db, autocommit=True) as c:
        # citext needs CREATE on the database (the test role owns it); fall back to text
        citext = _has_citext(c)
        if citext:
            c.execute("CREATE EXTENSION IF NOT EXISTS citext")
        c.execute(SCHEMA if citext else SCHEMA.replace("citext", "text"))
        c.execute("""
            INSERT INTO users (id, email, work_email, full_name, phone, ext_id, big, note, born,
                               score)
            SELECT i, 'person' || i || '@mail.example.com', 'p' || i || '@corp' || (i % 3) || '.io',
                   'Person ' || i, '+44 20 7946 ' || lpad(i::text, 4, '0'),
                   md5(i::text)::uuid, i * 1000, 'note ' || i, date '1980-01-01' + i, i
            FROM generate_series(1, 5000) i;
            INSERT INTO users (id, email, work_email) VALUES (0, NULL, 'no-at-sign');
            INSERT INTO orders SELECT i, 'person' || (i % 50 + 1) || '@mail.example.com', i
            FROM generate_series(1, 200) i;
        """)
        set_key(c, KEY)  # the expressions read it from the session (never from SQL text)
        yield c


def _has_citext(c: psycopg.Connection[Any]) -> bool:
    return bool(c.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'citext'").fetchone())


def masked(
    c: psycopg.Connection[Any], table: str, rules: dict[str, str], key: str = KEY, order: str = "id"
) -> list[dict[str, Any]]:
    t = catalog.tables(c, ["public"])[f"public.{table}"]
    r = compile_rules(rules)
    masks = mask_expressions(r, t.qualname, t.columns, key, key_columns=t.primary_key)
    set_key(c, key)
    probe(c, t.qualname, t.columns, masks, r)
    q = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
        select_list(t.columns, masks), sql.Identifier(table), sql.Identifier(order)
    )
    cur = c.cursor(row_factory=psycopg.rows.dict_row)
    return list(cur.execute(q))


RULES = {
    "public.users.email": "email",
    "public.users.work_email": "keep_domain_email",
    "public.users.full_name": "name",
    "public.users.phone": "phone",
    "public.users.ext_id": "hash",
    "public.users.big": "hash",
    "*.orders.customer_email": "email",
}


def test_deterministic_across_tables_and_runs(conn: Any, db: str) -> None:
    users = {r["id"]: r for r in masked(conn, "users", RULES)}
    orders = masked(conn, "orders", RULES)
    # the same person has the same masked email in every table
    for o in orders:
        person = o["id"] % 50 + 1
        assert o["customer_email"] == users[person]["email"]
    # a second run (another session) gives byte-identical output
    with psycopg.connect(db, autocommit=True) as other:
        again = {r["id"]: r for r in masked(other, "users", RULES)}
    assert again == users
    # another key gives other values
    other_key = {r["id"]: r for r in masked(conn, "users", RULES, key="another-key-0123456789")}
    assert other_key[1]["email"] != users[1]["email"]
    assert other_key[1]["id"] == users[1]["id"] and other_key[1]["note"] == users[1]["note"]


def test_unique_stays_unique_and_raw_values_are_gone(conn: Any) -> None:
    rows = [r for r in masked(conn, "users", RULES) if r["id"] > 0]
    for col in ("email", "work_email", "full_name", "phone", "ext_id", "big"):
        assert len({r[col] for r in rows}) == 5000, col
    for r in rows:
        assert not any(
            "mail.example.com" in str(r[c]) or "Person" in str(r[c]) or "+44" in str(r[c])
            for c in ("email", "full_name", "phone")
        ), r
    r1 = rows[0]
    assert re.fullmatch(r"u_[0-9a-f]{16}@example\.invalid", r1["email"])
    assert re.fullmatch(r"u_[0-9a-f]{16}@corp1\.io", r1["work_email"])
    assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+ [0-9a-f]{10}", r1["full_name"])
    assert re.fullmatch(r"\+1-555-\d{12}", r1["phone"])
    assert isinstance(r1["big"], int) and r1["big"] >= 0 and r1["big"] != 1000
    assert str(r1["ext_id"]) != "c4ca4238-a0b9-2382-0dcc-509a6f75849b"
    # unmasked columns pass through untouched
    assert (r1["id"], r1["note"], r1["score"]) == (1, "note 1", 1)


def test_null_stays_null_and_keep_domain_without_at(conn: Any) -> None:
    r0 = masked(conn, "users", RULES)[0]
    assert r0["id"] == 0 and r0["email"] is None and r0["full_name"] is None
    assert re.fullmatch(r"u_[0-9a-f]{16}@example\.invalid", r0["work_email"])


def test_null_fixed_sql_and_redact_rules(conn: Any) -> None:
    rows = masked(
        conn,
        "users",
        {
            "public.users.born": "null",
            "public.users.score": "fixed:7",
            "public.users.code": "fixed:50% off",
            "public.users.note": "redact",
            "public.users.full_name": "sql:upper(left({col}, 1)) || '.'",
            "public.users.phone": "sql:md5({key} || phone)",
        },
    )
    r = rows[3]
    assert r["born"] is None and r["score"] == 7 and r["code"] == "50% off"
    assert r["note"] == "******" and r["full_name"] == "P."
    assert re.fullmatch(r"[0-9a-f]{32}", r["phone"])
    assert len({x["phone"] for x in rows if x["id"]}) == 5000


def test_masked_values_fit_the_target_columns(conn: Any) -> None:
    conn.execute("CREATE TABLE target_users (LIKE users)")
    t = catalog.tables(conn, ["public"])["public.users"]
    masks = mask_expressions(compile_rules(RULES), t.qualname, t.columns, KEY)
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in t.columns)
    conn.execute(
        sql.SQL("INSERT INTO target_users ({}) SELECT {} FROM users").format(
            cols, select_list(t.columns, masks)
        )
    )
    assert conn.execute("SELECT count(*), count(DISTINCT email) FROM target_users").fetchone() == (
        5001,
        5000,
    )


PROBE_CASES = [
    ({"public.users.score": "fixed:seven"}, "invalid input syntax for type integer"),
    ({"public.users.note": "sql:nosuch_fn(note)"}, "function nosuch_fn(text) does not exist"),
    ({"public.users.note": "sql:nosuch_col"}, 'column "nosuch_col" does not exist'),
    ({"public.users.note": "sql:count(*)::text"}, "must appear in the GROUP BY"),
    ({"public.users.born": "sql:'2020-13-45'"}, "out of range"),
]


def test_probe_finds_rules_the_server_rejects(conn: Any) -> None:
    for rules, words in PROBE_CASES:  # one database for all cases: they only read
        with pytest.raises(BadInput) as e:
            masked(conn, "users", rules)
        assert words in str(e.value)
        assert next(iter(rules)) in str(e.value)
        assert e.value.exit_code == 2
        # the connection is still usable (the probe runs in its own (sub)transaction)
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_column_type_checks_against_the_real_catalog(conn: Any) -> None:
    t = catalog.tables(conn, ["public"])["public.users"]
    with pytest.raises(BadInput, match="needs a text column, but public.users.score is integer"):
        mask_expressions(compile_rules({"public.users.score": "email"}), t.qualname, t.columns, KEY)
    with pytest.raises(BadInput, match="target column is NOT NULL"):
        mask_expressions(compile_rules({"public.users.code": "null"}), t.qualname, t.columns, KEY)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(
        st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40),
        min_size=1,
        max_size=60,
        unique=True,
    )
)
def test_property_distinct_inputs_stay_distinct_and_repeatable(
    conn: Any, values: list[str]
) -> None:
    """Any distinct texts (unicode, empty, '@'-laden) mask to distinct, repeatable values."""
    t = catalog.Table(
        "public", "v", columns=[catalog.Column("x", "text", False, False, "", "", 25)]
    )
    rules = compile_rules({"public.v.x": "email"})
    exprs = [
        mask_expressions(compile_rules({"public.v.x": r}), "public.v", t.columns, KEY)["x"]
        for r in ("email", "keep_domain_email", "name", "phone", "hash")
    ]
    q = sql.SQL("SELECT {} FROM unnest(%s::text[]) AS v(x) ORDER BY x").format(
        sql.SQL(", ").join(exprs)
    )
    first = conn.execute(q, [values]).fetchall()
    assert conn.execute(q, [values]).fetchall() == first
    for i in range(len(exprs)):
        assert len({r[i] for r in first}) == len(values)
    assert rules.rule_for("public.v", "x") is not None


def test_domain_over_text_is_masked_and_checked_by_the_server(conn: Any) -> None:
    conn.execute("""
        CREATE DOMAIN email_t AS text CHECK (VALUE LIKE '%_@_%');
        CREATE DOMAIN short_t AS text CHECK (length(VALUE) < 10);
        CREATE TABLE contacts (id int PRIMARY KEY, mail email_t, nick short_t);
        INSERT INTO contacts VALUES (1, 'a@b.example', 'al'), (2, 'c@d.example', 'cy');
    """)
    rows = masked(conn, "contacts", {"public.contacts.mail": "email"})
    assert all(re.fullmatch(r"u_[0-9a-f]{16}@example\.invalid", r["mail"]) for r in rows)
    # the name rule's output is longer than the domain allows: the probe says so (exit 2)
    with pytest.raises(
        BadInput,
        match=r"'public.contacts.nick' = 'name' does not work on "
        r"public.contacts.nick: value for domain short_t",
    ):
        masked(conn, "contacts", {"public.contacts.nick": "name"})

"""Masking through ``pgferry sync``: prod → dev masked, the personal-data gate, bad rules."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import Project, Result, write_project

KEY = "cli-mask-key-0123456789"
SCHEMA = """
CREATE TABLE customers (id bigint PRIMARY KEY, email text UNIQUE NOT NULL, full_name text,
                        phone text, city text);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers,
                     billing_email text, total numeric(10, 2));
"""
DATA = """
INSERT INTO customers SELECT i, 'c' || i || '@shop.example.com', 'Customer ' || i,
       '+49 30 ' || (1000000 + i), 'Berlin' FROM generate_series(1, 300) i;
INSERT INTO orders SELECT i, 1 + i % 300, 'c' || (1 + i % 300) || '@shop.example.com', i
FROM generate_series(1, 900) i;
"""
MASKS = """
[sync.mask]
"*.*.*email" = "email"
"public.customers.full_name" = "name"
"public.customers.phone" = "phone"
"public.nosuch.col" = "redact"
"""


@pytest.fixture
def prod_to_dev(tmp_path: Path, make_db: Callable[..., str]) -> Callable[[str], Project]:
    """prod (protected, with data) and dev (empty schema); ``extra`` is appended to the toml."""

    def make(extra: str) -> Project:
        proj = write_project(
            tmp_path / "p",
            {"dev": make_db("dev"), "prod": make_db("prod")},
            protected=("prod",),
            extra=extra,
        )
        for env, sql in (("prod", SCHEMA + DATA), ("dev", SCHEMA)):
            with psycopg.connect(proj.dsns[env], autocommit=True) as c:
                c.execute(sql)
        return proj

    return make


def rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as c:
        return list(c.execute(query))


def test_protected_to_unprotected_without_rules_is_refused(
    prod_to_dev: Callable[[str], Project], cli: Callable[..., Result]
) -> None:
    proj = prod_to_dev("")
    r = cli("--config", str(proj.config), "sync", "prod", "dev")
    assert r.code == 4, r.err
    assert "refusing to copy personal-looking columns from protected 'prod'" in r.err
    assert "public.customers.email" in r.err and "public.orders.billing_email" in r.err
    assert "--no-mask --reason" in r.err
    assert rows(proj.dsns["dev"], "SELECT count(*) FROM customers") == [(0,)]
    # --no-mask needs a reason; with one it goes ahead and says so
    assert cli("--config", str(proj.config), "sync", "prod", "dev", "--no-mask").code == 2
    r = cli(
        "--config",
        str(proj.config),
        "--json",
        "sync",
        "prod",
        "dev",
        "--no-mask",
        "--reason",
        "INC-42 reproduce a bug with real data",
    )
    assert r.code == 0, r.err
    assert r.json["no_mask_reason"] == "INC-42 reproduce a bug with real data"
    assert any("copied unmasked" in w and "public.customers.email" in w for w in r.json["warnings"])
    assert rows(proj.dsns["dev"], "SELECT email FROM customers WHERE id = 1") == [
        ("c1@shop.example.com",)
    ]


def test_masked_sync_prod_to_dev(
    prod_to_dev: Callable[[str], Project],
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    proj = prod_to_dev(MASKS)
    monkeypatch.setenv("PGFERRY_MASK_KEY", KEY)
    report = tmp_path / "masked.md"
    r = cli("--config", str(proj.config), "--json", "sync", "prod", "dev", "--report", str(report))
    assert r.code == 0, r.err
    cust = next(t for t in r.json["tables"] if t["table"] == "public.customers")
    assert cust["masked"] == {"email": "email", "full_name": "name", "phone": "phone"}
    assert cust["inserted"] == 300
    dev = rows(
        proj.dsns["dev"], "SELECT id, email, full_name, phone, city FROM customers ORDER BY id"
    )
    assert len(dev) == 300 and len({d[1] for d in dev}) == 300
    assert all(re.fullmatch(r"u_[0-9a-f]{16}@example\.invalid", d[1]) for d in dev)
    assert not any("Customer" in (d[2] or "") or "+49" in (d[3] or "") for d in dev)
    assert dev[0][4] == "Berlin"  # unmasked columns are copied as they are
    # the same person has the same masked email in both tables (FK-consistent pseudonyms)
    mismatched = rows(
        proj.dsns["dev"],
        """
        SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id
        WHERE o.billing_email <> c.email""",
    )
    assert mismatched == [(0,)]
    md = report.read_text(encoding="utf-8")
    assert "## Masked columns" in md and "| public.customers | email | email |" in md
    assert "c1@shop.example.com" not in md
    # a second run changes nothing: masked values are deterministic
    again = cli("--config", str(proj.config), "--json", "sync", "prod", "dev")
    assert again.code == 0, again.err
    assert again.json["totals"]["inserted"] == again.json["totals"]["updated"] == 0
    assert (
        rows(
            proj.dsns["dev"], "SELECT id, email, full_name, phone, city FROM customers ORDER BY id"
        )
        == dev
    )
    # verify compares the masked source with the target: identical
    v = cli("--config", str(proj.config), "--json", "verify", "prod", "dev")
    assert v.code == 0, v.out + v.err
    assert v.json["totals"]["differing"] == 0


BAD_RULES = [
    ('[sync.mask]\n"public.customers.email" = "scramble"\n', "unknown rule 'scramble'"),
    ('[sync.mask]\n"public.customers.city" = "sql:upper(city"\n', "is not an SQL expression"),
    (
        '[sync.mask]\n"public.customers.full_name" = "fixed:x"\n"public.orders.total" = "email"\n',
        "needs a text column, but public.orders.total is numeric(10,2)",
    ),
    (
        '[sync.mask]\n"public.orders.total" = "fixed:lots"\n',
        "invalid input syntax for type numeric",
    ),
    ('[sync.mask]\n"public.customers.email" = "null"\n', "target column is NOT NULL"),
]


def test_bad_mask_rule_exits_2_before_any_write(
    prod_to_dev: Callable[[str], Project],
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proj = prod_to_dev("")
    base = proj.config.read_text(encoding="utf-8")
    monkeypatch.setenv("PGFERRY_MASK_KEY", KEY)
    for extra, words in BAD_RULES:
        proj.config.write_text(base + extra, encoding="utf-8")
        r = cli("--config", str(proj.config), "sync", "prod", "dev", "--no-mask", "--reason", "t")
        assert r.code == 2, (extra, r.err)
        assert words in r.err
        assert rows(
            proj.dsns["dev"],
            "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders)",
        ) == [(0, 0)]


def test_missing_mask_key_exits_2(
    prod_to_dev: Callable[[str], Project],
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proj = prod_to_dev(MASKS)
    monkeypatch.delenv("PGFERRY_MASK_KEY", raising=False)
    r = cli("--config", str(proj.config), "sync", "prod", "dev")
    assert r.code == 2 and "PGFERRY_MASK_KEY is not set" in r.err
    assert rows(proj.dsns["dev"], "SELECT count(*) FROM customers") == [(0,)]
    # the key may live in the .env beside pgferry.toml; it never shows in the output
    (proj.root / ".env").write_text(f"PGFERRY_MASK_KEY={KEY}\n", encoding="utf-8")
    r = cli("--config", str(proj.config), "--json", "sync", "prod", "dev")
    assert r.code == 0, r.err
    assert KEY not in r.out + r.err and KEY.encode().hex() not in r.out + r.err
    assert rows(
        proj.dsns["dev"], "SELECT count(*) FROM customers WHERE email LIKE 'u\\_%@example.invalid'"
    ) == [(300,)]
    journal = rows(proj.dsns["dev"], "SELECT details::text FROM pgferry.journal")
    assert journal and not any(KEY in j[0] or KEY.encode().hex() in j[0] for j in journal)


@pytest.mark.parametrize("how", ["full", "watermark", "jobs"])
def test_masks_apply_in_every_strategy(
    prod_to_dev: Callable[[str], Project],
    cli: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    extra = MASKS
    args: list[str] = []
    if how == "full":
        args = ["--mode", "full"]
    elif how == "watermark":
        extra += '[sync.tables."public.customers"]\nstrategy = "watermark"\nwatermark = "id"\n'
    else:
        args = ["--jobs", "4", "--batch-size", "50"]
    proj = prod_to_dev(extra)
    monkeypatch.setenv("PGFERRY_MASK_KEY", KEY)
    r = cli("--config", str(proj.config), "--json", "sync", "prod", "dev", *args)
    assert r.code == 0, r.out + r.err
    dev = rows(
        proj.dsns["dev"],
        "SELECT count(*), count(DISTINCT email), "
        "count(*) FILTER (WHERE email LIKE '%@shop.example.com'), "
        "count(*) FILTER (WHERE phone LIKE '+49%') FROM customers",
    )
    assert dev == [(300, 300, 0, 0)]
    bad = rows(
        proj.dsns["dev"],
        "SELECT count(*) FROM orders o JOIN customers c "
        "ON c.id = o.customer_id WHERE o.billing_email <> c.email",
    )
    assert bad == [(0,)]
    v = cli("--config", str(proj.config), "--json", "verify", "prod", "dev")
    assert v.code == 0, v.out + v.err

"""The lint benchmark's corpus: N migration files of mixed safe and unsafe statements.

Deterministic (``random.Random(seed)``): the same seed writes byte-identical
files. Each file is a Flyway-named ``V<n>__<slug>.sql`` of 1-8 statements
drawn from the templates below (about half of them unsafe), some spread over
several lines, some files with ``CONCURRENTLY`` (non-transactional), explicit
``BEGIN``/``COMMIT``, ``SET lock_timeout`` or a table created earlier in the
same file. Table names are unique per file, so files are independent (squawk
lints each file alone).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

T = Callable[[random.Random, str, str], str]

# (template, weight); {t} an existing table, {n} a table created in this file
TEMPLATES: list[tuple[str, int]] = [
    ("ALTER TABLE {t} ADD COLUMN note text;", 6),
    ("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS note2 text;", 3),
    ("ALTER TABLE {t} ADD COLUMN token uuid DEFAULT gen_random_uuid();", 3),
    ("ALTER TABLE {t} ADD COLUMN seen_at timestamptz DEFAULT now();", 3),
    ("ALTER TABLE {t} ADD COLUMN score bigint NOT NULL;", 2),
    ("ALTER TABLE {t} ADD COLUMN flags bigint NOT NULL DEFAULT 0;", 3),
    ("ALTER TABLE {t} ADD COLUMN total numeric GENERATED ALWAYS AS (qty * 2) STORED;", 1),
    ("ALTER TABLE {t} ALTER COLUMN email SET NOT NULL;", 3),
    ("ALTER TABLE {t} ALTER COLUMN email DROP NOT NULL;", 2),
    ("ALTER TABLE {t} ALTER COLUMN qty TYPE bigint;", 3),
    ("ALTER TABLE {t}\n    ALTER COLUMN name TYPE varchar(80);", 1),
    ("ALTER TABLE {t} DROP COLUMN legacy;", 3),
    ("ALTER TABLE {t} DROP COLUMN IF EXISTS legacy2;", 1),
    ("ALTER TABLE {t} RENAME COLUMN name TO full_name;", 2),
    ("ALTER TABLE {t} RENAME TO {t}_old;", 1),
    ("ALTER TABLE {t} ADD CONSTRAINT {t}_user_fk FOREIGN KEY (user_id) REFERENCES users (id);", 3),
    (
        "ALTER TABLE {t} ADD CONSTRAINT {t}_user_fk2 FOREIGN KEY (user_id) REFERENCES users (id) "
        "NOT VALID;",
        2,
    ),
    ("ALTER TABLE {t} ADD CONSTRAINT {t}_qty_pos CHECK (qty > 0);", 3),
    (
        "ALTER TABLE {t} ADD CONSTRAINT {t}_qty_nn CHECK (qty IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE {t} VALIDATE CONSTRAINT {t}_qty_nn;",
        1,
    ),
    ("ALTER TABLE {t} ADD CONSTRAINT {t}_email_key UNIQUE (email);", 2),
    ("ALTER TABLE {t} ADD CONSTRAINT {t}_email_key2 UNIQUE USING INDEX {t}_email_idx;", 1),
    ("ALTER TABLE {t} ADD PRIMARY KEY (id);", 1),
    (
        "ALTER TABLE {t}\n    ADD COLUMN a1 text,\n    ALTER COLUMN b1 SET NOT NULL,\n"
        "    DROP COLUMN c1;",
        2,
    ),
    ("CREATE INDEX {t}_created_idx ON {t} (created_at);", 4),
    ("CREATE INDEX {t}_wide_idx ON {t} (a, b, c, d);", 1),
    ("CREATE UNIQUE INDEX {t}_lower_email ON {t} (lower(email));", 1),
    ("DROP INDEX {t}_old_idx;", 2),
    ("REINDEX TABLE {t};", 1),
    ("DROP TABLE {t};", 2),
    ("DROP TABLE IF EXISTS {t}_archive;", 1),
    ("TRUNCATE {t} CASCADE;", 1),
    ("TRUNCATE {t};", 1),
    ("ALTER TABLE {t} DETACH PARTITION {t}_2020;", 1),
    ("ALTER TYPE {t}_status ADD VALUE 'paused';", 1),
    ("ALTER TYPE {t}_status ADD VALUE 'paused2' AFTER 'active';", 1),
    ("ALTER TYPE {t}_status RENAME VALUE 'a' TO 'b';", 1),
    ("ALTER INDEX {t}_idx RENAME TO {t}_idx2;", 1),
    ("UPDATE {t} SET qty = 0, qty = 1 WHERE id = 1;", 1),
    ("UPDATE {t} SET qty = 0 WHERE id < 1000;", 2),
    ("CREATE DOMAIN {t}_positive AS bigint CHECK (VALUE > 0);", 1),
    ("ALTER DOMAIN {t}_dom ADD CONSTRAINT positive CHECK (VALUE > 0);", 1),
    (
        "CREATE TABLE {n} (\n    id serial PRIMARY KEY,\n    name varchar(50) NOT NULL,\n"
        "    code char(3),\n    happened_at timestamp,\n    qty int,\n    small smallint,\n"
        "    payload jsonb\n);",
        4,
    ),
    (
        "CREATE TABLE IF NOT EXISTS {n} (\n    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        "\n    name text NOT NULL,\n    at timestamptz NOT NULL DEFAULT now()\n);",
        4,
    ),
    (
        "CREATE TABLE {n}_with_a_name_that_is_much_too_long_for_postgresql_identifiers_x "
        "(id bigint);",
        1,
    ),
    ("SELECT count(*) FROM {t};", 2),
    ("INSERT INTO {t} (id, qty) VALUES (1, 2);", 2),
    ("DROP DATABASE {t}_db;", 1),
]

CONCURRENT = [
    "CREATE INDEX CONCURRENTLY {t}_c_idx ON {t} (user_id);",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS {t}_c2_idx ON {t} (kind);",
    "DROP INDEX CONCURRENTLY IF EXISTS {t}_gone_idx;",
    "REINDEX TABLE CONCURRENTLY {t};",
]

AFTER_NEW = [  # statements on the table created earlier in the same file
    "CREATE INDEX {n}_name_idx ON {n} (name);",
    "ALTER TABLE {n} ADD COLUMN extra uuid DEFAULT gen_random_uuid();",
    "ALTER TABLE {n} ADD CONSTRAINT {n}_name_len CHECK (length(name) > 0);",
]


def _pick(rng: random.Random) -> str:
    total = sum(w for _, w in TEMPLATES)
    x = rng.uniform(0, total)
    for tpl, w in TEMPLATES:
        x -= w
        if x <= 0:
            return tpl
    return TEMPLATES[-1][0]


def file_text(rng: random.Random, i: int) -> str:
    t = f"app_t{i}"
    n = f"new_t{i}"
    stmts: list[str] = []
    if rng.random() < 0.1:
        stmts.append("SET lock_timeout = '2s';\nSET statement_timeout = '30s';")
    body = [_pick(rng) for _ in range(rng.randint(1, 7))]
    if any("{n}" in s for s in body) and rng.random() < 0.5:
        body.append(rng.choice(AFTER_NEW))
    if rng.random() < 0.15:
        body.insert(rng.randrange(len(body) + 1), rng.choice(CONCURRENT))
    wrap = rng.random()
    if wrap < 0.08:
        body = ["BEGIN;", *body, "COMMIT;"]
    elif wrap < 0.10:
        body = ["BEGIN;", *body]  # never committed
    elif wrap < 0.12:
        body = ["BEGIN;", "BEGIN;", *body, "COMMIT;"]
    stmts += body
    lines = [f"-- generated migration {i}"]
    for s in stmts:
        if rng.random() < 0.2:
            lines.append("-- reviewed by the team")
        lines.append(s.replace("{t}", t).replace("{n}", n))
        if rng.random() < 0.3:
            lines.append("")
    return "\n".join(lines) + "\n"


def write(directory: Path, count: int = 1000, seed: int = 42) -> list[Path]:
    """Write ``count`` files into ``directory`` (emptied first); returns them in order."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.sql"):
        old.unlink()
    rng = random.Random(seed)
    out = []
    for i in range(1, count + 1):
        p = directory / f"V{i}__generated_{i}.sql"
        p.write_text(file_text(rng, i), encoding="utf-8")
        out.append(p)
    return out

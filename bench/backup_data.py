"""The backup bench's data: three tables (bigint, uuid and composite keys; text, jsonb,
numeric, timestamptz, bytea), as the sync bench generated them before it grew shapes."""

from __future__ import annotations

import psycopg

#: table -> its share of the rows
SHARES = {"accounts": 0.5, "events": 0.3, "line_items": 0.2}

SCHEMA = """
CREATE TABLE accounts (
    id bigint PRIMARY KEY, email text NOT NULL, name text, balance numeric(14,2),
    profile jsonb, avatar bytea, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL
);
CREATE INDEX ON accounts (updated_at);
CREATE TABLE events (
    id uuid PRIMARY KEY, seq bigint NOT NULL, account_id bigint, kind text, payload jsonb,
    at timestamptz, updated_at timestamptz NOT NULL
);
CREATE INDEX ON events (updated_at);
CREATE TABLE line_items (
    order_id bigint, line int, sku text, qty int, price numeric(10,2), note text,
    updated_at timestamptz NOT NULL, PRIMARY KEY (order_id, line)
);
CREATE INDEX ON line_items (updated_at);
"""

FILL = {
    "accounts": """
INSERT INTO accounts
SELECT g, 'user' || g || '@example.com', 'Person ' || g, (g * 37 %% 1000000) / 100.0,
       jsonb_build_object('plan', (ARRAY['free', 'pro', 'team'])[g %% 3 + 1], 'n', g,
                          'tags', jsonb_build_array('t' || g %% 10, 'x')),
       decode(md5(g::text), 'hex'),
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 second',
       '2024-06-01 00:00:00+00'::timestamptz + g * interval '1 second'
FROM generate_series(1, %(n)s) g""",
    "events": """
INSERT INTO events
SELECT md5('event' || g)::uuid, g, g %% 1000 + 1, (ARRAY['login', 'view', 'buy'])[g %% 3 + 1],
       jsonb_build_object('ip', '10.0.' || g %% 256 || '.' || g %% 200, 'ms', g %% 977),
       '2024-02-01 00:00:00+00'::timestamptz + g * interval '2 seconds',
       '2024-06-01 00:00:00+00'::timestamptz + g * interval '1 second'
FROM generate_series(1, %(n)s) g""",
    "line_items": """
INSERT INTO line_items
SELECT g / 5, g %% 5, 'SKU-' || (g %% 5000), g %% 9 + 1, (g %% 10000) / 100.0 + 0.99,
       CASE WHEN g %% 4 = 0 THEN NULL ELSE 'note for line ' || g END,
       '2024-06-01 00:00:00+00'::timestamptz + g * interval '1 second'
FROM generate_series(1, %(n)s) g""",
}


def schema(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(SCHEMA)


def fill(dsn: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        for name, share in SHARES.items():
            c.execute(FILL[name], {"n": max(10, int(rows * share))})
        c.execute("VACUUM ANALYZE")

"""The shapes of data the sync bench runs on (``bench/sync.py --shape``).

Each shape is a schema (tables with their secondary indexes, as a real
application has them), a generator (``INSERT ... SELECT generate_series``) and,
per table, how one round of changes picks and writes 1% of its rows: 0.8%
updated, 0.1% deleted, 0.1% inserted for the checksum strategy; 0.9% updated
and 0.1% inserted for the watermark strategy (which cannot see deletes). Every
update and insert moves the table's watermark column, as an application's
separate transactions would (``clock_timestamp()``, or a sequence for the
narrow rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Table:
    name: str
    key: tuple[str, ...]
    #: the compared columns (key columns included)
    cols: tuple[str, ...]
    #: INSERT ... FROM generate_series(1, %(n)s) g
    fill: str
    #: share of the shape's rows
    share: float
    watermark: str
    #: a row number expression: rounds pick rows by it (``g % 125 = r``)
    g: str
    #: SET clause of an update (moves the watermark)
    update: str
    #: SELECT list of a new row made from a picked one (a new key; %(r)s: the round)
    insert: str


@dataclass(frozen=True)
class Shape:
    name: str
    what: str
    rows: int
    ddl: str
    tables: tuple[Table, ...]
    #: run only when asked for (--big)
    big: bool = False
    extra: dict[str, str] = field(default_factory=dict)


NARROW_DDL = """
CREATE SEQUENCE narrow_rev START 100000000;
CREATE TABLE narrow (id bigint PRIMARY KEY, a int NOT NULL, b int,
                     rev bigint NOT NULL DEFAULT nextval('narrow_rev'));
CREATE INDEX narrow_rev_idx ON narrow (rev);
CREATE INDEX narrow_a_idx ON narrow (a);
"""
NARROW = Table(
    "narrow",
    ("id",),
    ("id", "a", "b", "rev"),
    "INSERT INTO narrow SELECT g, g %% 1000, g %% 77, g FROM generate_series(1, %(n)s) g",
    1.0,
    "rev",
    "id",
    "b = b + 1, rev = nextval('narrow_rev')",
    "id + 1000000000::bigint * (%(r)s + 1), a, b, nextval('narrow_rev')",
)

WIDE_DDL = """
CREATE TYPE case_status AS ENUM ('open', 'pending', 'closed', 'appealed', 'dismissed');
CREATE TABLE cases (
    id bigint PRIMARY KEY, docket text NOT NULL, court text NOT NULL,
    status case_status NOT NULL, amount numeric(14,2), tags text[], filed_on date,
    decided_at timestamptz, body text, updated_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX cases_docket_key ON cases (docket);
CREATE INDEX cases_court_filed_idx ON cases (court, filed_on);
CREATE INDEX cases_updated_idx ON cases (updated_at);
"""
WIDE = Table(
    "cases",
    ("id",),
    (
        "id",
        "docket",
        "court",
        "status",
        "amount",
        "tags",
        "filed_on",
        "decided_at",
        "body",
        "updated_at",
    ),
    """INSERT INTO cases
SELECT g, 'D-' || g, 'Court ' || (g %% 97), (enum_range(NULL::case_status))[g %% 5 + 1],
       (g * 37 %% 10000000) / 100.0, ARRAY['t' || g %% 13, 'x' || g %% 7],
       date '1990-01-01' + g %% 12000, timestamptz '2000-01-01' + g * interval '17 minutes',
       repeat(md5(g::text), 9) || ' ' || substr(md5((g * 3)::text), 1, 10),
       timestamptz '2024-01-01' + g * interval '1 second'
FROM generate_series(1, %(n)s) g""",
    1.0,
    "updated_at",
    "id",
    "body = body || ' (edited)', status = 'appealed', updated_at = clock_timestamp()",
    "id + 1000000000::bigint * (%(r)s + 1), docket || '/' || %(r)s, court, status, amount, tags, "
    "filed_on, decided_at, body, clock_timestamp()",
)

DOCS_DDL = """
CREATE TABLE docs (id bigint PRIMARY KEY, meta jsonb NOT NULL, blob bytea,
                   updated_at timestamptz NOT NULL);
CREATE INDEX docs_meta_idx ON docs USING gin (meta jsonb_path_ops);
CREATE INDEX docs_updated_idx ON docs (updated_at);
"""
DOCS = Table(
    "docs",
    ("id",),
    ("id", "meta", "blob", "updated_at"),
    """INSERT INTO docs
SELECT g, jsonb_build_object('kind', (ARRAY['invoice', 'letter', 'memo'])[g %% 3 + 1],
           'n', g, 'owner', 'user' || g %% 5000, 'tags', jsonb_build_array('t' || g %% 10,
           'u' || g %% 31), 'title', 'Document number ' || g,
           'summary', repeat(md5(g::text), 4)),
       decode(repeat(md5(g::text), 16), 'hex'),
       timestamptz '2024-01-01' + g * interval '1 second'
FROM generate_series(1, %(n)s) g""",
    1.0,
    "updated_at",
    "id",
    "meta = meta || '{\"edited\": true}', updated_at = clock_timestamp()",
    "id + 1000000000::bigint * (%(r)s + 1), meta, blob, clock_timestamp()",
)

UUID_DDL = """
CREATE TABLE events (id uuid PRIMARY KEY, seq bigint NOT NULL, account bigint, kind text,
                     at timestamptz, payload jsonb, updated_at timestamptz NOT NULL);
CREATE INDEX events_account_idx ON events (account);
CREATE INDEX events_updated_idx ON events (updated_at);
"""
UUID = Table(
    "events",
    ("id",),
    ("id", "seq", "account", "kind", "at", "payload", "updated_at"),
    """INSERT INTO events
SELECT md5('event' || g)::uuid, g, g %% 10000 + 1, (ARRAY['login', 'view', 'buy'])[g %% 3 + 1],
       timestamptz '2024-02-01' + g * interval '2 seconds',
       jsonb_build_object('ip', '10.0.' || g %% 256 || '.' || g %% 200, 'ms', g %% 977),
       timestamptz '2024-06-01' + g * interval '1 second'
FROM generate_series(1, %(n)s) g""",
    1.0,
    "updated_at",
    "seq",
    "payload = payload || '{\"edited\": true}', updated_at = clock_timestamp()",
    "md5('new' || %(r)s || id::text)::uuid, seq, account, kind, at, payload, clock_timestamp()",
)

COMPOSITE_DDL = """
CREATE TABLE line_items (order_id bigint, line int, sku text NOT NULL, qty int NOT NULL,
                         price numeric(10,2), note text, updated_at timestamptz NOT NULL,
                         PRIMARY KEY (order_id, line));
CREATE INDEX line_items_sku_idx ON line_items (sku);
CREATE INDEX line_items_updated_idx ON line_items (updated_at);
"""
COMPOSITE = Table(
    "line_items",
    ("order_id", "line"),
    ("order_id", "line", "sku", "qty", "price", "note", "updated_at"),
    """INSERT INTO line_items
SELECT g / 5, g %% 5, 'SKU-' || (g %% 5000), g %% 9 + 1, (g %% 10000) / 100.0 + 0.99,
       CASE WHEN g %% 4 = 0 THEN NULL ELSE 'note for line ' || g END,
       timestamptz '2024-06-01' + g * interval '1 second'
FROM generate_series(1, %(n)s) g""",
    1.0,
    "updated_at",
    "(order_id * 5 + line)",
    "qty = qty + 1, updated_at = clock_timestamp()",
    "order_id + 1000000000::bigint * (%(r)s + 1), line, sku, qty, price, note, clock_timestamp()",
)

PARTITIONED_DDL = (
    """
CREATE TABLE readings (id bigint NOT NULL, region int NOT NULL, sensor int NOT NULL,
                       value float8, note text, updated_at timestamptz NOT NULL,
                       PRIMARY KEY (id, region)) PARTITION BY LIST (region);
"""
    + "".join(
        f"CREATE TABLE readings_{r} PARTITION OF readings FOR VALUES IN ({r});\n" for r in range(8)
    )
    + """
CREATE INDEX readings_sensor_idx ON readings (sensor);
CREATE INDEX readings_updated_idx ON readings (updated_at);
"""
)
PARTITIONED = Table(
    "readings",
    ("id", "region"),
    ("id", "region", "sensor", "value", "note", "updated_at"),
    """INSERT INTO readings
SELECT g, g %% 8, g %% 500, g / 7.0, CASE WHEN g %% 3 = 0 THEN 'checked' END,
       timestamptz '2024-06-01' + g * interval '1 second'
FROM generate_series(1, %(n)s) g""",
    1.0,
    "updated_at",
    "id",
    "value = value + 1, updated_at = clock_timestamp()",
    "id + 1000000000::bigint * (%(r)s + 1), region, sensor, value, note, clock_timestamp()",
)

SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape(
            "narrow",
            "a bigint key and three ints (two secondary indexes)",
            4_000_000,
            NARROW_DDL,
            (NARROW,),
        ),
        Shape(
            "wide",
            "legal-case rows: a 300-byte text body, an enum, numeric, text[], date, "
            "timestamptz (a unique and two other secondary indexes)",
            1_000_000,
            WIDE_DDL,
            (WIDE,),
        ),
        Shape(
            "jsonb", "jsonb- and bytea-heavy rows (~1 kB; a GIN index)", 500_000, DOCS_DDL, (DOCS,)
        ),
        Shape(
            "uuid", "uuid keys in random order on disk, jsonb payload", 1_500_000, UUID_DDL, (UUID,)
        ),
        Shape(
            "composite",
            "a two-column key (order, line), numeric, nullable text",
            2_000_000,
            COMPOSITE_DDL,
            (COMPOSITE,),
        ),
        Shape(
            "partitioned",
            "a table partitioned by region (8 list partitions), key (id, region)",
            2_000_000,
            PARTITIONED_DDL,
            (PARTITIONED,),
        ),
        Shape(
            "big",
            "10M narrow rows (the curve; only with --big)",
            10_000_000,
            NARROW_DDL,
            (NARROW,),
            big=True,
        ),
    )
}

"""The lint benchmark's second corpus: one project's history, with a catalog of its target.

Deterministic (``random.Random(seed)``). Unlike ``lint_corpus`` (independent
files), these files build on each other the way a real migrations directory
does: tables are created early and then live on; later files add columns and
constraints, backfill, build indexes (mostly ``CONCURRENTLY``, in files of their
own), validate what an earlier file added ``NOT VALID``, rename, retype and drop;
a few repeatable files hold views. :func:`write` also writes the catalog
snapshot of a target that ran all but the last ``pending`` files (table sizes,
column types, the history with Flyway checksums), as ``pgferry lint --env prod
--catalog FILE`` would have written it.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from pgferry.lint.snapshot import FORMAT
from pgferry.migrate.files import flyway_checksum, parse_name


@dataclass
class _Table:
    name: str
    cols: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    indexes: list[str] = field(default_factory=list)


@dataclass
class _Project:
    rng: random.Random
    tables: list[_Table] = field(default_factory=list)
    serial: int = 0
    not_valid: list[tuple[str, str]] = field(default_factory=list)  # (table, constraint)

    def uid(self) -> int:
        self.serial += 1
        return self.serial

    def pick(self) -> _Table:
        # recent tables change more often than old ones, but old ones still change
        k = len(self.tables)
        return self.tables[min(k - 1, int(k * self.rng.random() ** 0.6))]


NOUNS = [
    "accounts",
    "invoices",
    "customers",
    "orders",
    "payments",
    "shipments",
    "products",
    "prices",
    "contracts",
    "tickets",
    "messages",
    "sessions",
    "audits",
    "reports",
    "teams",
    "projects",
    "tasks",
    "comments",
    "documents",
    "webhooks",
    "refunds",
    "coupons",
    "addresses",
    "subscriptions",
    "plans",
    "usages",
    "alerts",
    "tags",
    "devices",
    "tokens",
]
_ADDED = re.compile(r"c\d+")  # the columns later files added (c12, ...)


def _fill(template: str, table: str) -> str:
    """A data statement for ``table`` (templates, as in lint_corpus: no SQL f-strings)."""
    return template.replace("{t}", table)


def _create(p: _Project) -> list[str]:
    name = f"{p.rng.choice(NOUNS)}_{p.uid()}"
    t = _Table(
        name,
        {
            "id": "bigint",
            "name": "text",
            "status": "text",
            "created_at": "timestamp with time zone",
        },
    )
    lines = [
        f"CREATE TABLE {name} (",
        "    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,",
    ]
    parent = p.pick() if p.tables and p.rng.random() < 0.7 else None
    if parent is not None:
        fk = f"{parent.name.rsplit('_', 1)[0]}_id"
        t.cols[fk] = "bigint"
        lines.append(f"    {fk:<10} bigint NOT NULL REFERENCES {parent.name} (id),")
    lines += [
        "    name       text NOT NULL,",
        "    status     text NOT NULL DEFAULT 'new',",
        "    created_at timestamptz NOT NULL DEFAULT now()",
        ");",
    ]
    out = ["\n".join(lines)]
    if parent is not None:
        idx = f"{name}_{fk}_idx"
        t.indexes.append(idx)
        out.append(f"CREATE INDEX {idx} ON {name} ({fk});")
    if p.rng.random() < 0.2:
        out.append(_fill("INSERT INTO {t} (name) VALUES ('default'), ('archived');", name))
    t.rows = int(p.rng.lognormvariate(9, 2.2))
    p.tables.append(t)
    return out


def _change(p: _Project) -> list[str]:
    """One or a few changes to existing tables; about one in five is unsafe."""
    rng, t = p.rng, p.pick()
    col = f"c{p.uid()}"
    roll = rng.random()
    if roll < 0.22:
        t.cols[col] = "text"
        return [f"ALTER TABLE {t.name} ADD COLUMN {col} text;"]
    if roll < 0.32:
        t.cols[col] = "bigint"
        return [f"ALTER TABLE {t.name} ADD COLUMN {col} bigint NOT NULL DEFAULT 0;"]
    if roll < 0.40:
        idx = f"{t.name}_{col}_idx"
        t.cols[col] = "text"
        t.indexes.append(idx)
        return [
            f"ALTER TABLE {t.name} ADD COLUMN IF NOT EXISTS {col} text;",
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {idx} ON {t.name} ({col});",
        ]
    if roll < 0.47 and len(p.tables) > 1:
        other = p.pick()
        con = f"{t.name}_{col}_fk"
        t.cols[col] = "bigint"
        p.not_valid.append((t.name, con))
        return [
            f"ALTER TABLE {t.name} ADD COLUMN {col} bigint;",
            f"ALTER TABLE {t.name} ADD CONSTRAINT {con}\n"
            f"    FOREIGN KEY ({col}) REFERENCES {other.name} (id) NOT VALID;",
        ]
    if roll < 0.53 and p.not_valid:
        table, con = p.not_valid.pop(0)
        return [f"ALTER TABLE {table} VALIDATE CONSTRAINT {con};"]
    if roll < 0.60:
        return [
            _fill(
                "UPDATE {t} SET status = 'active'\n"
                "WHERE status = 'new' AND id BETWEEN 1 AND 10000;",
                t.name,
            )
        ]
    if roll < 0.66:
        con = f"{t.name}_name_len"
        return [f"ALTER TABLE {t.name} ADD CONSTRAINT {con} CHECK (length(name) < 500) NOT VALID;"]
    if roll < 0.70:
        text_cols = [c for c, ty in t.cols.items() if ty == "text" and c != "name"]
        if text_cols:
            c = rng.choice(text_cols)
            return [f"COMMENT ON COLUMN {t.name}.{c} IS 'free text, shown to the customer';"]
        return [f"ANALYZE {t.name};"]
    # the unsafe fifth: what a linter is for
    if roll < 0.76:
        idx = f"{t.name}_created_idx{p.uid()}"
        t.indexes.append(idx)
        return [f"CREATE INDEX {idx} ON {t.name} (created_at);"]
    if roll < 0.80:
        t.cols[col] = "uuid"
        return [f"ALTER TABLE {t.name} ADD COLUMN {col} uuid DEFAULT gen_random_uuid();"]
    if roll < 0.84 and "status" in t.cols:
        return [
            f"ALTER TABLE {t.name} ALTER COLUMN status SET NOT NULL;",
            _fill("UPDATE {t} SET status = lower(status);", t.name),
        ]
    if roll < 0.88:
        extra = [c for c in t.cols if _ADDED.fullmatch(c)]
        if extra:
            c = rng.choice(extra)
            del t.cols[c]
            return [f"ALTER TABLE {t.name} DROP COLUMN {c};"]
        return [f"ALTER TABLE {t.name} ALTER COLUMN name TYPE varchar(200);"]
    if roll < 0.91:
        extra = [c for c, ty in t.cols.items() if _ADDED.fullmatch(c) and ty == "text"]
        if extra:
            c = rng.choice(extra)
            t.cols[f"{c}_old"] = t.cols.pop(c)
            return [f"ALTER TABLE {t.name} RENAME COLUMN {c} TO {c}_old;"]
        return [f"ALTER TABLE {t.name} ALTER COLUMN id TYPE bigint;"]  # already bigint
    if roll < 0.94 and t.indexes:
        idx = t.indexes.pop(0)
        return [f"DROP INDEX {idx};"]
    if roll < 0.97:
        key = f"{t.name}_name_key{p.uid()}"
        return [f"ALTER TABLE {t.name} ADD CONSTRAINT {key} UNIQUE (name);"]
    return [_fill("UPDATE {t} SET status = 'archived';", t.name)]


def _file(p: _Project, i: int) -> str:
    rng = p.rng
    area = rng.choice(["billing", "search", "reports", "onboarding", "api"])
    head = [f"-- PROJ-{1000 + i}: {area} {rng.choice(['change', 'cleanup', 'feature', 'fix'])}"]
    if not p.tables or (rng.random() < max(0.08, 0.5 - i / 200)):
        body = _create(p)
        if rng.random() < 0.3:
            body += _change(p)
    else:
        body = []
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4])):
            body += _change(p)
        # CONCURRENTLY cannot share a file with other statements that need a transaction
        if any("CONCURRENTLY" in s for s in body):
            body = [s for s in body if "CONCURRENTLY" in s or "IF NOT EXISTS" in s]
    return "\n".join(head + [""] + [s + "\n" for s in body])


def _view(p: _Project, n: int) -> str:
    t = p.pick()
    return (
        f"-- reporting view {n}, recreated when it changes\n"
        f"CREATE OR REPLACE VIEW report_{n} AS\n"
        f"SELECT status, count(*) AS n FROM {t.name} GROUP BY status;\n"
    )


def write(
    directory: Path, count: int = 320, pending: int = 20, seed: int = 7
) -> tuple[list[Path], Path]:
    """Write ``count`` versioned files, 3 repeatable ones and the catalog snapshot (whose
    history has all but the last ``pending`` versions applied); returns (files, catalog)."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.sql"):
        old.unlink()
    p = _Project(random.Random(seed))
    files: list[Path] = []
    snapshot_tables: dict[str, dict[str, object]] = {}
    for i in range(1, count + 1):
        path = directory / f"V{i}__{'change' if p.tables else 'init'}_{i}.sql"
        path.write_text(_file(p, i), encoding="utf-8")
        files.append(path)
        if i == count - pending:  # the target ran up to here
            snapshot_tables = {f"public.{t.name}": _shape(t) for t in p.tables}
    repeatable = []
    for n in range(1, 4):
        path = directory / f"R__report_{n}.sql"
        path.write_text(_view(p, n), encoding="utf-8")
        repeatable.append(path)
    applied = {}
    for path in files[: count - pending]:
        mf = parse_name(path)
        assert mf is not None and mf.version is not None
        applied[str(mf.version)] = flyway_checksum(path.read_bytes())
    runs = {}
    for path in repeatable[:2]:  # the third is new; the second changed since it ran
        mf = parse_name(path)
        assert mf is not None
        runs[mf.description] = flyway_checksum(path.read_bytes()) + (path == repeatable[1])
    catalog = directory.parent / f"{directory.name}-catalog.json"
    catalog.write_text(
        json.dumps(
            {
                "format": FORMAT,
                "server_version": 180004,
                "source": "prod",
                "taken_at": "2026-01-01T00:00:00+00:00",
                "tables": snapshot_tables,
                "history": {"applied": applied, "repeatable": runs, "baseline": None},
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    return files + repeatable, catalog


def _shape(t: _Table) -> dict[str, object]:
    heap = max(8192, t.rows * 90)
    return {
        "rows": t.rows,
        "heap_bytes": heap,
        "total_bytes": int(heap * 1.4),
        "columns": dict(t.cols),
        "not_null": ["id", "name", "status", "created_at"],
    }

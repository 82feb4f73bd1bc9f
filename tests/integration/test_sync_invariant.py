"""The invariant of a sync, over random schemas, data, type drift, bad values and failures.

After ``sync``, every table either equals the source (rows the target refused are dead
letters, and those keys keep what the target had) or is exactly as it was (its unit
failed), and the counts add up: inserted + updated + unchanged + dead-lettered is the
number of source rows read, and deleted is the number of target rows the source lacks.

Each example gets its own schema in one source and one target database (fresh
databases per example would cost more than the sync); ``[sync] schemas`` names it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg import sql

from pgferry.config import load_config
from pgferry.pg.connect import Target
from pgferry.sync import engine
from tests.helpers import write_project

# (source type, target type, values on the source as SQL text literals, some refused by
# the target); the text form of a value is the same on both sides when it is accepted
DRIFTS: list[tuple[str, str, list[str]]] = [
    ("int", "int", ["1", "2", "-7", "NULL"]),
    ("text", "int", ["1", "42", "abc", "NULL"]),  # 'abc' is refused
    ("int", "bigint", ["5", "2147483647", "NULL"]),
    ("text", "text", ["a", "b c", "ü", "NULL"]),
    ("mood", "mood", ["sad", "ok", "wild", "NULL"]),  # 'wild' only on the source
    ("int", "small", ["1", "99", "150", "NULL"]),  # small: CHECK (VALUE < 100) on the target
    ("numeric", "numeric", ["1.50", "-0.001", "NaN", "NULL"]),
    ("float8", "float8", ["0", "1.5", "NaN", "NULL"]),  # 0 hashes as NULL does in ROW()
]
SRC_TYPES = "CREATE TYPE mood AS ENUM ('sad', 'ok', 'wild'); CREATE DOMAIN small AS int;"
TGT_TYPES = (
    "CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE DOMAIN small AS int CHECK (VALUE < 100);"
)


@dataclass
class Spec:
    columns: list[int]  # indexes into DRIFTS
    child: bool  # a second table referencing the first
    src_rows: dict[int, list[int]]  # key -> index of each column's value
    tgt_rows: dict[int, list[int]]
    boom: int | None  # a target key whose write a trigger refuses with 42501 (not a row error)
    #: the child's rows (key -> parent key or None) on each side; the target's foreign key
    #: acts so on a delete, and the source has the same foreign key or none (then its
    #: children may reference parents it does not have)
    src_children: dict[int, int | None]
    tgt_children: dict[int, int | None]
    on_delete: str
    src_fk: bool


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    cols = draw(st.lists(st.integers(0, len(DRIFTS) - 1), min_size=1, max_size=4))

    def rows() -> dict[int, list[int]]:
        keys = draw(st.lists(st.integers(0, 40), max_size=30, unique=True))
        return {k: [draw(st.integers(0, len(DRIFTS[c][2]) - 1)) for c in cols] for k in keys}

    src, tgt = rows(), rows()
    boom = draw(st.one_of(st.none(), st.sampled_from(sorted(src)))) if src else None
    src_fk = draw(st.booleans())

    def children(parents: list[int]) -> dict[int, int | None]:
        keys = draw(st.lists(st.integers(0, 40), max_size=20, unique=True))
        pick = st.sampled_from(parents) if parents else st.none()
        return {k: draw(st.one_of(st.none(), pick)) for k in keys}

    tgt_children = children(sorted(tgt))
    # the source's: most of the target's as they are (a parent the source deleted may
    # still be theirs, where it has no foreign key), some moved, and some of its own
    src_children = children(sorted(src) if src_fk else list(range(41)))
    for k, pid in tgt_children.items():
        if draw(st.booleans()):
            src_children[k] = pid if pid is None or pid in src or not src_fk else None
    return Spec(
        cols,
        draw(st.booleans()),
        src,
        tgt,
        boom,
        src_children,
        tgt_children,
        draw(st.sampled_from(["NO ACTION", "CASCADE", "SET NULL"])),
        src_fk,
    )


def _value(c: int, i: int) -> str:
    """A source value (the source accepts all of them)."""
    typ = DRIFTS[c][0]
    v = DRIFTS[c][2][i]
    return "NULL" if v == "NULL" else f"CAST({sql.Literal(v).as_string(None)} AS {typ})"


def _build(conn: psycopg.Connection[Any], schema: str, spec: Spec, side: str) -> None:
    conn.execute(
        sql.SQL(
            "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}; SET search_path = {s}"
        ).format(s=sql.Identifier(schema))
    )
    conn.execute(SRC_TYPES if side == "src" else TGT_TYPES)
    cols = ", ".join(
        f"c{i} {DRIFTS[c][0 if side == 'src' else 1]}" for i, c in enumerate(spec.columns)
    )
    conn.execute(f"CREATE TABLE p (id int PRIMARY KEY, {cols})")
    if spec.child:
        fk = f"REFERENCES p ON DELETE {spec.on_delete}" if side == "tgt" or spec.src_fk else ""
        conn.execute(f"CREATE TABLE ch (id int PRIMARY KEY, pid int {fk}, note text)")
    rows = spec.src_rows if side == "src" else spec.tgt_rows
    for k, vals in rows.items():
        values = [
            _value(c, i) if side == "src" else _target_value(c, i)
            for c, i in zip(spec.columns, vals, strict=True)
        ]
        conn.execute(f"INSERT INTO p VALUES ({k}, {', '.join(values)})")  # noqa: S608
    if spec.child:
        for k, pid in (spec.src_children if side == "src" else spec.tgt_children).items():
            conn.execute("INSERT INTO ch VALUES (%s, %s, %s)", [k, pid, f"n{k}"])
    if side == "tgt" and spec.boom is not None:
        conn.execute(f"""CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.id = {spec.boom} THEN RAISE EXCEPTION 'no' USING ERRCODE = '42501';
            END IF; RETURN NEW; END $$;
            CREATE TRIGGER boom BEFORE INSERT OR UPDATE ON p FOR EACH ROW
            EXECUTE FUNCTION boom()""")


def _target_value(c: int, i: int) -> str:
    """A value the target accepts (its own rows are valid there)."""
    src_t, tgt_t, vals = DRIFTS[c]
    v = vals[i]
    ok = {"abc": "0", "wild": "ok", "150": "5"}.get(v, v)
    return "NULL" if ok == "NULL" else f"CAST({sql.Literal(ok).as_string(None)} AS {tgt_t})"


def _rows(dsn: str, schema: str, table: str) -> dict[Any, tuple[Any, ...]]:
    with psycopg.connect(dsn) as c:
        found = c.execute("SELECT to_regclass(%s)", [f"{schema}.{table}"]).fetchone()
        if not (found and found[0]):
            return {}
        cur = c.execute(
            sql.SQL("SELECT t.id, t::text FROM {} t").format(sql.Identifier(schema, table))
        )
        return {r[0]: r[1] for r in cur}


_counter = itertools.count()


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=specs(), mode=st.sampled_from(["incremental", "full"]), batch=st.integers(1, 7))
# the source deleted parent 3, keeps child 10 that references it (it has no foreign key),
# and the target's foreign key deletes in cascade: a sync once lost child 10 and said ok
@example(
    spec=Spec([0], True, {1: [0]}, {1: [0], 3: [1]}, None, {10: 3}, {10: 3}, "CASCADE", False),
    mode="incremental",
    batch=5,
)
def test_each_table_equals_the_source_or_is_unchanged(
    tmp_path: Path, make_db: Callable[..., str], spec: Spec, mode: str, batch: int
) -> None:
    dbs = _dbs(make_db)
    schema = f"ex{next(_counter)}"
    with (
        psycopg.connect(dbs[0], autocommit=True) as a,
        psycopg.connect(dbs[1], autocommit=True) as b,
    ):
        _build(a, schema, spec, "src")
        _build(b, schema, spec, "tgt")
    p = write_project(
        tmp_path / schema,
        {"dev": dbs[0], "prod": dbs[1]},
        protected=(),
        extra=f'[sync]\nschemas = ["{schema}"]\n',
    )
    before = {t: _rows(dbs[1], schema, t) for t in ("p", "ch")}
    res = engine.run(
        load_config(p.config),
        Target("dev", dbs[0]),
        Target("prod", dbs[1]),
        engine.Options(mode=mode, batch_size=batch),  # type: ignore[arg-type]
    )
    after = {t: _rows(dbs[1], schema, t) for t in ("p", "ch")}
    source = {t: _rows(dbs[0], schema, t) for t in ("p", "ch")}
    for r in res.tables:
        t = r.table.split(".")[1]
        if r.status == "failed":
            assert after[t] == before[t], (r.table, r.error)
            assert (r.inserted, r.updated, r.deleted) == (0, 0, 0)
            continue
        dead = _dead(dbs[1], res.run_id, r.table)
        assert r.dead_lettered == len(dead)
        for k in set(source[t]) | set(after[t]):
            if k in dead:
                assert after[t].get(k) == before[t].get(k), (r.table, k)
            else:
                assert after[t].get(k) == source[t].get(k), (r.table, k, res.to_dict())
        assert (
            r.inserted + r.updated + r.unchanged + r.dead_lettered
            == r.source_rows
            == len(source[t])
        ), r
        assert r.deleted == len(set(before[t]) - set(source[t]))


def _dead(dsn: str, run_id: str, table: str) -> set[int]:
    with psycopg.connect(dsn) as c:
        found = c.execute("SELECT to_regclass('pgferry.dead_letters')").fetchone()
        if not (found and found[0]):
            return set()
        return {
            int(r[0])
            for r in c.execute(
                "SELECT key->>'id' FROM pgferry.dead_letters WHERE run_id = %s AND table_name = %s",
                [run_id, table],
            )
        }


_made: dict[int, tuple[str, str]] = {}


def _dbs(make_db: Callable[..., str]) -> tuple[str, str]:
    """One source and one target database for all the examples of one test call."""
    key = id(make_db)
    if key not in _made:
        _made.clear()
        _made[key] = (make_db("inv_src"), make_db("inv_tgt"))
    return _made[key]

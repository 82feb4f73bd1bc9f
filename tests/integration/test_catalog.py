"""Catalog introspection on a real schema (partitioned, composite keys, FKs, identity)."""

from __future__ import annotations

import psycopg

from pgferry.pg import catalog


def test_tables(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("""
            CREATE TABLE parent (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text);
            CREATE TABLE child (
                parent_id bigint REFERENCES parent DEFERRABLE, territory text,
                total numeric GENERATED ALWAYS AS (1) STORED,
                PRIMARY KEY (parent_id, territory));
            CREATE TABLE events (id bigserial, at timestamptz NOT NULL, PRIMARY KEY (id, at))
                PARTITION BY RANGE (at);
            CREATE TABLE events_2026 PARTITION OF events
                FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
            CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
            CREATE TRIGGER t BEFORE UPDATE ON parent FOR EACH ROW EXECUTE FUNCTION touch();
        """)
        ts = catalog.tables(c, ["public"])
    assert sorted(ts) == ["public.child", "public.events", "public.parent"]
    parent, child, events = ts["public.parent"], ts["public.child"], ts["public.events"]
    assert parent.primary_key == ("id",) and parent.column("id").identity == "a"  # type: ignore[union-attr]
    assert parent.sequences == {"id": "public.parent_id_seq"}
    assert parent.user_triggers == ["t"]
    assert child.primary_key == ("parent_id", "territory")
    assert child.column("total").generated == "s"  # type: ignore[union-attr]
    fk = child.foreign_keys[0]
    assert (fk.columns, fk.ref_table, fk.ref_columns, fk.deferrable) == (
        ("parent_id",), "public.parent", ("id",), True)
    assert events.partitioned and events.primary_key == ("id", "at")
    assert events.sequences == {"id": "public.events_id_seq"}

"""Version 3 of pgferry's schema: index definitions a sync set aside (issue 16).

Contract: :func:`apply` creates ``pgferry.set_aside``: one row per statement of the rebuild
of an index (or constraint, or partition attachment) a sync dropped to load an empty table
faster, written and committed before the drop, deleted once the rebuild is done; every
statement is idempotent. Its use: :mod:`pgferry.sync.aside`.
"""

from __future__ import annotations

from typing import Any

import psycopg

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS pgferry.set_aside (
    table_name text        NOT NULL,
    name       text        NOT NULL,
    -- 0: a partitioned table's own index (ON ONLY), 1: an index build, 2: a constraint or
    -- a partition index attached, 3: a partition's key attached to its partitioned
    -- table's (once both are there, 2), on the guard
    step       int         NOT NULL,
    definition text        NOT NULL,
    -- the index (schema-qualified) that must exist for this step to be done
    needs      text        NOT NULL,
    run_id     text        NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (table_name, name, step)
);
"""


def apply(conn: psycopg.Connection[Any]) -> None:
    """Create or complete version 3 (in the caller's transaction, under its lock)."""
    conn.execute(SCHEMA_SQL)

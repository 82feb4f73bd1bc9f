"""The journal's tables in the target: ``pgferry.journal_log`` and the view ``pgferry.journal``.

Contract:

- ``pgferry.journal_log`` is the evidence, append-only: one ``start`` row when a run
  begins and one ``end`` row (``run_id`` = the start row's id) when it ends, or one
  ``once`` row for something instantaneous (a refusal). Triggers refuse ``UPDATE``,
  ``DELETE`` and ``TRUNCATE``; a ``BEFORE INSERT`` trigger chains every row to the
  one before it: ``prev_hash`` is the previous row's ``row_hash``, and ``row_hash``
  is the SHA-256 of the row's fields in a fixed text form
  (:data:`pgferry.journal.chain.FIELDS`), taken under an advisory lock so
  concurrent writers chain one after the other.
- ``pgferry.journal`` is a view with one row per run (the layout the journal always
  had): a start row without its end row reads ``running`` while the run's session
  holds its advisory lock, and ``died`` once it does not (the process was killed or
  lost its connection).
- The DDL belongs to pgferry's schema, which has one owner: :mod:`pgferry.pg.ownschema`
  (version 1, :mod:`pgferry.pg.ownschema.v1`). :func:`ensure` brings that schema to its
  version, re-creates a dropped or disabled trigger (the caller journals that it did),
  and upgrades the earlier layout (a table ``pgferry.journal`` of finished runs) by
  moving its rows into the log, in order, as ``once`` rows.
"""

from __future__ import annotations

from typing import Any

import psycopg

from pgferry.pg import ownschema
from pgferry.pg.ownschema.v1 import CHAIN_LOCK as CHAIN_LOCK
from pgferry.pg.ownschema.v1 import RUN_LOCK as RUN_LOCK
from pgferry.pg.ownschema.v1 import SCHEMA_SQL as SCHEMA_SQL
from pgferry.pg.ownschema.v1 import TRIGGERS as TRIGGERS

_STATE_SQL = """
SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('pgferry.journal')),
       to_regclass('pgferry.journal_log') IS NOT NULL,
       ARRAY(SELECT tgname::text FROM pg_trigger
             WHERE tgrelid = to_regclass('pgferry.journal_log') AND tgenabled IN ('O', 'A')
             ORDER BY 1)
"""


def state(conn: psycopg.Connection[Any]) -> tuple[str | None, bool, list[str]]:
    """(relkind of ``pgferry.journal``, whether the log exists, its enabled triggers)."""
    row = conn.execute(_STATE_SQL).fetchone()
    assert row is not None
    return row[0], bool(row[1]), list(row[2])


def exists(conn: psycopg.Connection[Any]) -> bool:
    """True when this database has a journal (any layout)."""
    return ownschema.exists(conn)


def ensure(conn: psycopg.Connection[Any]) -> list[str]:
    """Create, upgrade or repair pgferry's schema (autocommit ``conn``); the journal
    triggers it had to re-create."""
    return ownschema.ensure(conn)

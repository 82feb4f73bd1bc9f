"""``pgferry migrate test``: every migration proven on a scratch database, then SQL assertions.

Contract:

- The caller hands in a :data:`Scratch`: an empty database, dropped afterwards (unless
  ``keep``), on the server of ``--env`` (the role needs ``CREATEDB``) or, by default, on
  the embedded server (:func:`pgferry.commands.migrate_test.scratch`).
- :func:`prove` applies every versioned file (templates numbered as ``up`` would; contract
  files too, in version order: guards judge production, not an empty database), each on
  its own, and for each one with a ``U`` file runs up → undo → up: the schema after the
  undo must equal the schema before the file, and the schema after the second up must
  equal the schema after the first. Before a contract file, the backfills its ``after
  backfill`` guards name run (so the rows the migrations inserted are as production's
  would be, and each backfill file is proven to run against the schema). The schema is
  the catalog of the database's own schemas (:func:`snapshot`: tables, their columns as
  a set — a column an undo adds back lands at the end, which is not a difference —,
  views, sequences, constraints, indexes, triggers, functions, policies, types,
  extensions). Repeatable files run last.
- :func:`assertions` runs ``[migrate] tests_dir``/``*.sql`` (default ``tests/``) in name
  order, each in a transaction that is rolled back: a statement that returns a row is a
  failure (the rows are shown). A file that calls pgTAP's ``plan(...)``/``no_plan()``
  runs in pgTAP mode (``CREATE EXTENSION pgtap`` first, where the server has it): its
  ``not ok`` lines, or a plan it did not meet, are the failure; without pgTAP on the
  server it is BadInput (exit 2).
- The first failure stops the run: :class:`~pgferry.errors.ProblemFound` (exit 1) naming
  the file (and the objects that differ, or the rows returned).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from pgferry.config import Config
from pgferry.errors import BadInput, OperationFailed, ProblemFound
from pgferry.migrate import files
from pgferry.migrate.files import Version
from pgferry.migrate.plan import Step, pending, undo_steps
from pgferry.migrate.runner import Runner
from pgferry.migrate.settings import RunSettings
from pgferry.migrate.statements import parse_file, parse_sql
from pgferry.pg import fingerprint
from pgferry.pg.connect import Target, connect, map_db_error, redact

COLUMNS_SQL = r"""
SELECT format('column %I.%I.%I', n.nspname, c.relname, a.attname),
       concat_ws(' ', format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
                 a.attgenerated, pg_get_expr(d.adbin, d.adrelid))
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('information_schema', 'pgferry') AND n.nspname NOT LIKE 'pg\_%'
"""
TABLES_SQL = r"""
SELECT format('table %I.%I', n.nspname, c.relname),
       concat_ws('|', c.relkind, c.relpersistence, c.relrowsecurity, c.relforcerowsecurity)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'f')
  AND n.nspname NOT IN ('information_schema', 'pgferry') AND n.nspname NOT LIKE 'pg\_%'
"""


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The schema as ``{"kind name": definition digest}``, tables' columns as a set."""
    objs = {
        k: v
        for k, v in fingerprint.objects(conn).items()
        if not k.startswith("table ") or k.startswith("table options ")
    }
    objs.update({str(k): str(v) for k, v in conn.execute(TABLES_SQL).fetchall()})
    objs.update({str(k): str(v) for k, v in conn.execute(COLUMNS_SQL).fetchall()})
    return objs


def diff(before: dict[str, str], after: dict[str, str]) -> str:
    changed, added, removed = fingerprint.compare(before, after)
    parts = []
    for label, names in (("changed", changed), ("left behind", added), ("missing", removed)):
        if names:
            shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts)


#: makes the scratch database and drops it afterwards (the command layer supplies it:
#: :func:`pgferry.commands.migrate_test.scratch`)
Scratch = Callable[[], AbstractContextManager[Target]]


@dataclass
class Proof:
    applied: list[str] = field(default_factory=list)
    undo_checked: list[str] = field(default_factory=list)
    no_undo: list[str] = field(default_factory=list)
    backfills: list[str] = field(default_factory=list)
    tests: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


Note = Callable[[str], None]


def quiet(_line: str) -> None:
    """A :data:`Note` that drops every line."""


def prove(cfg: Config, scratch_target: Target, proof: Proof, on_note: Note) -> None:
    """Apply every migration with up → undo → up where it has an undo (module docstring)."""
    ms = files.scan(cfg.migrations_dir)
    settings = RunSettings.from_config(cfg)
    try:
        with Runner(scratch_target, settings, application_name="pgferry migrate test") as r:
            _prove(cfg, scratch_target, ms, r, proof, on_note)
    except psycopg.Error as e:
        raise map_db_error(e, "migrate test failed on the scratch database") from None


def apply_one(r: Runner, step: Step, undo: bool = False) -> None:
    """Apply one file; a file that fails on the scratch database is a finding (exit 1)."""
    try:
        r.apply([(step, parse_file(step.file))], undo=undo)
    except OperationFailed as e:
        if "script" not in e.details:
            raise
        raise ProblemFound(f"{e.message} (on an empty scratch database)", **e.details) from None


def _backfills(cfg: Config, t: Target, step: Step, proof: Proof, on_note: Note) -> None:
    """Run the backfills a contract file waits for (its ``after backfill`` guards) first."""
    from pgferry.backfill import files as bf_files
    from pgferry.backfill.runner import Run
    from pgferry.backfill.session import BackfillOptions
    from pgferry.migrate.phases import parse_header

    if step.kind != "V":
        return
    for name in parse_header(step.file.sql, step.file.script).backfills():
        with Run(
            cfg, t, bf_files.load(cfg, name), BackfillOptions(target_duration=0, keep_images=False)
        ) as run:
            res = run.run()
        proof.backfills.append(name)
        on_note(f"ok  backfill {name}: {res.rows} row(s) before {step.file.script}")


def _prove(
    cfg: Config, t: Target, ms: files.MigrationSet, r: Runner, proof: Proof, on_note: Note
) -> None:
    for step in pending(ms, r.history(), allow_templates=True):
        name = step.file.script
        _backfills(cfg, t, step, proof, on_note)
        before = snapshot(r.work)
        apply_one(r, step)
        proof.applied.append(name)
        if step.kind != "V" or step.version is None:
            continue
        after = snapshot(r.work)
        u = _undo(ms, r, step.version)
        if u is None:
            proof.no_undo.append(name)
            continue
        apply_one(r, u, undo=True)
        undone = snapshot(r.work)
        if undone != before:
            raise ProblemFound(
                f"{u.file.script} does not restore what {name} changed: {diff(before, undone)}",
                file=u.file.script,
                migration=name,
            )
        again = [
            s
            for s in pending(ms, r.history(), allow_templates=True)
            if s.version == step.version and s.kind == "V"
        ]
        apply_one(r, again[0])
        if snapshot(r.work) != after:
            raise ProblemFound(
                f"{name} applied again after {u.file.script} leaves another schema than "
                f"the first time: {diff(after, snapshot(r.work))}",
                file=name,
            )
        proof.undo_checked.append(name)
        on_note(f"ok  {name}: up, undo ({u.file.script}), up: same schema")


def _undo(ms: files.MigrationSet, r: Runner, version: Version) -> Step | None:
    try:
        steps = undo_steps(ms, r.history(), only={version})
    except BadInput:
        return None
    return steps[0] if steps else None


_TAP_RE = re.compile(r"\b(no_plan|plan)\s*\(", re.IGNORECASE)


def assertions(cfg: Config, scratch_target: Target, proof: Proof, on_note: Note) -> None:
    """Run the ``tests_dir`` files (see the module docstring); the first failure raises."""
    d = cfg.tests_dir
    paths = sorted(d.glob("*.sql")) if d.is_dir() else []
    rel = cfg.migrate.tests_dir.rstrip("/")
    with connect(scratch_target.dsn, autocommit=True, application_name="pgferry migrate test") as c:
        c.execute(
            "SELECT set_config('search_path', %s || ', ' || current_setting('search_path'), false)",
            [cfg.migrate.schema_],
        )
        for p in paths:
            name = f"{rel}/{p.name}"
            text = _read(p, name)
            stmts = parse_sql(text, name)
            tap = bool(_TAP_RE.search(text))
            if tap:
                _pgtap(c, name)
            failure = _run_file(c, name, stmts, tap)
            proof.tests.append(
                {"file": name, "ok": failure is None, "statements": len(stmts), "pgtap": tap}
            )
            if failure is not None:
                raise ProblemFound(failure, file=name)
            on_note(f"ok  {name}: {len(stmts)} statement(s){' (pgTAP)' if tap else ''}")


def _read(p: Path, name: str) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read {name}: {e}") from None


def _pgtap(c: psycopg.Connection[Any], name: str) -> None:
    row = c.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pgtap'").fetchone()
    if row is None:
        raise BadInput(
            f"{name} uses pgTAP (plan/no_plan), but the server has no pgtap "
            "extension; install it there, or write plain SQL assertions (a query "
            "that returns rows fails)"
        )
    try:
        c.execute("CREATE EXTENSION IF NOT EXISTS pgtap")
    except psycopg.Error as e:
        raise BadInput(
            f"{name} uses pgTAP, but CREATE EXTENSION pgtap failed: {redact(str(e)).strip()}"
        ) from None


def tap_failures(lines: list[str]) -> list[str]:
    """The failing lines of TAP output: ``not ok`` tests and an unmet plan (pure)."""
    bad = [ln for ln in lines if ln.startswith("not ok")]
    bad += [ln for ln in lines if ln.startswith("# Looks like")]
    return bad


def _run_file(c: psycopg.Connection[Any], name: str, stmts: list[Any], tap: bool) -> str | None:
    out: list[str] = []
    try:
        with c.transaction(force_rollback=True):
            for s in stmts:
                cur = c.execute(s.text.encode())
                if cur.description is None:
                    continue
                rows = cur.fetchall()
                if tap:
                    out += [str(v) for r in rows for v in r if v is not None]
                    continue
                if rows:
                    cols = [d.name for d in cur.description]
                    shown = "; ".join(
                        "(" + ", ".join(f"{k}={v!r}" for k, v in zip(cols, r, strict=False)) + ")"
                        for r in rows[:3]
                    )
                    more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
                    return (
                        f"{name}:{s.line}: the assertion returned {len(rows)} row(s): {shown}{more}"
                    )
    except psycopg.Error as e:
        msg = (e.diag.message_primary if e.diag else None) or str(e)
        return f"{name}: {redact(msg).strip()}"
    if tap:
        lines = [ln for text in out for ln in text.splitlines()]
        bad = tap_failures(lines)
        if bad:
            return f"{name}: pgTAP: " + "; ".join(bad[:3])
    return None


def run(
    cfg: Config, scratch: Scratch, *, keep: bool = False, on_note: Note = quiet
) -> dict[str, Any]:
    """The whole of ``migrate test``: a scratch database, the proof, the assertion files."""
    proof = Proof()
    with scratch() as t:
        prove(cfg, t, proof, on_note)
        assertions(cfg, t, proof, on_note)
        where = t.display if keep else None
    return {"ok": True, **proof.to_dict(), "kept": where}

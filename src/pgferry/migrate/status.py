"""``migrate status`` and ``migrate validate``: what an environment has, against the files.

Contract:

- :func:`collect` reads the migrations directory and the environment's history
  (one query; a missing history table is an empty history) and returns a
  :class:`Status`: every entry from :func:`pgferry.migrate.plan.classify`, the
  current version, the state of ``pgferry.sum``, and for a failed
  non-transactional file the statement it stopped at (from the runner's
  progress table, when the runner recorded one).
- A contract file not applied is ``held``; :func:`collect` judges its guards once
  (read-only, one sample of ``pg_stat_activity``: :mod:`pgferry.migrate.guards`) and
  keeps the results in :attr:`Status.guards` (``ready`` when every guard passes).
- :func:`problems` is pure: the list ``validate`` exits 1 on (a changed,
  deleted or failed migration; one below the current version that is not
  applied, as Flyway's validate; a stale ``pgferry.sum``), and :func:`warnings`
  the things worth saying that are not failures (future rows, a missing sum).

Reading 5,000 files and their checksums is the only per-file cost; it stays
well under a second (figure in docs/migrations.md).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import psycopg

from pgferry.config import Config
from pgferry.migrate import files, history, runner
from pgferry.migrate.files import MigrationSet
from pgferry.migrate.history import UNDO_SQL, HistoryRow
from pgferry.migrate.plan import PROBLEM_STATES, Entry, classify, current_version
from pgferry.pg.connect import Target, connect, map_db_error


@dataclass
class Status:
    """One environment's migration state."""

    env: str
    history_table: str
    ms: MigrationSet
    rows: list[HistoryRow]
    entries: list[Entry]
    sum_state: str
    failed_statements: dict[str, dict[str, Any]] = field(default_factory=dict)
    undo_history: str = "flyway"  # [migrate] undo_history
    #: held contract files: script -> their guards' results (or a bad header's message)
    guards: dict[str, list[dict[str, Any]] | str] = field(default_factory=dict)
    #: tables of the history's name in other schemas, when the history table is missing
    elsewhere: list[str] = field(default_factory=list)

    def held_reason(self, e: Entry) -> str | None:
        """For a held entry: why it is held (or that every guard passes)."""
        g = self.guards.get(e.script or "")
        if g is None:
            return None
        if isinstance(g, str):
            return f"bad header: {g}"
        bad = [r for r in g if not r["ok"]]
        if not g:
            return "no guards; `migrate up --contract` applies it"
        if not bad:
            return "every guard passes; `migrate up --contract` applies it"
        first = bad[0]
        text = f"{first['label']}: {first['why']}"
        return text + (f"; {first['hint']}" if first.get("hint") else "")

    def ready(self, e: Entry) -> bool:
        g = self.guards.get(e.script or "")
        return isinstance(g, list) and all(r["ok"] for r in g)

    @cached_property
    def current(self) -> str | None:
        v = current_version(self.rows)
        return str(v) if v is not None else None

    def shown(self, limit: int | None) -> tuple[list[Entry], int, int]:
        """What a text view shows: (entries, older applied hidden, later pending hidden).

        With more than ``limit`` entries, settled ones (applied, below the baseline)
        are hidden except the newest five, and pending ones past the first ``limit``;
        problems, templates and repeatables always stay.
        """
        if limit is None or len(self.entries) <= limit:
            return self.entries, 0, 0
        quiet = ("applied", "below_baseline")
        settled = [i for i, e in enumerate(self.entries) if e.state in quiet and e.kind == "V"]
        pending = [i for i, e in enumerate(self.entries) if e.state == "pending" and e.kind == "V"]
        hide_old, hide_new = set(settled[:-5]), set(pending[limit:])
        out = [e for i, e in enumerate(self.entries) if i not in hide_old and i not in hide_new]
        return out, len(hide_old), len(hide_new)

    def failed_at(self, e: Entry) -> dict[str, Any] | None:
        """Where a failed non-transactional file stopped (runner's progress), else None."""
        if e.state != "failed" or not e.script:
            return None
        return self.failed_statements.get(e.script)

    def counts(self) -> dict[str, int]:
        return dict(Counter(e.state for e in self.entries))

    def to_dict(self) -> dict[str, Any]:
        problems_ = problems(self)
        out_entries = []
        for e in self.entries:
            d = e.to_dict()
            where = self.failed_at(e)
            if where is not None:
                d["failed_statement"] = where
            if e.state == "held":
                g = self.guards.get(e.script or "")
                d["guards"] = g if isinstance(g, list) else []
                d["ready"] = self.ready(e)
                d["held_by"] = self.held_reason(e)
            out_entries.append(d)
        return {
            "ok": not problems_,
            "env": self.env,
            "history_table": self.history_table,
            "current_version": self.current,
            "sum": self.sum_state,
            "counts": self.counts(),
            "entries": out_entries,
            "templates": [
                {"script": e.script, "version": str(e.version) if e.version else None}
                for e in self.entries
                if e.state == "template"
            ],
            "problems": problems_,
            "warnings": warnings(self),
        }


def read_history(conn: psycopg.Connection[Any], cfg: Config) -> list[HistoryRow]:
    return history.read(conn, cfg.migrate.schema_, cfg.migrate.history_table)


def failed_statements(conn: psycopg.Connection[Any], cfg: Config) -> dict[str, dict[str, Any]]:
    """Where each failed non-transactional file stopped, by script (runner's progress table)."""
    return runner.failed_statements(conn, cfg)


def collect(cfg: Config, target: Target) -> Status:
    """The status of ``target`` against the configured migrations directory."""
    ms = files.scan(cfg.migrations_dir)
    try:
        with connect(target.dsn, autocommit=True) as conn:
            rows = read_history(conn, cfg)
            failed = failed_statements(conn, cfg) if any(not r.success for r in rows) else {}
            s = build(cfg, target.name, ms, rows, failed)
            s.guards = held_guards(conn, cfg, target.name, s)
            if not rows:
                s.elsewhere = history.elsewhere(
                    conn, cfg.migrate.schema_, cfg.migrate.history_table
                )
    except psycopg.Error as e:
        raise map_db_error(e, f"cannot read the migration history of {target.name}") from None
    return s


def held_guards(
    conn: psycopg.Connection[Any], cfg: Config, env: str, s: Status
) -> dict[str, list[dict[str, Any]] | str]:
    """The guards of every held contract file, judged now (one sample of clients)."""
    from pgferry.errors import BadInput
    from pgferry.migrate import guards
    from pgferry.migrate.phases import parse_header

    out: dict[str, list[dict[str, Any]] | str] = {}
    held = [e for e in s.entries if e.state == "held" and e.file is not None]
    if not held:
        return out
    conds = []
    headers = {}
    for e in held:
        assert e.file is not None
        try:
            headers[e.file.script] = parse_header(e.file.sql, e.file.script)
        except BadInput as err:
            out[e.file.script] = err.message
            continue
        conds += [g.arg for g in headers[e.file.script].guards if g.kind == "require_no_clients"]
    seen = guards.watch_clients(conn, conds, 0, 0) if conds else guards.Sightings()
    for e in held:
        assert e.file is not None
        h = headers.get(e.file.script)
        if h is not None:
            out[e.file.script] = [
                r.to_dict()
                for r in guards.evaluate(conn, cfg, env, s.ms, s.rows, e.version, h, seen)
            ]
    return out


def build(
    cfg: Config,
    env: str,
    ms: MigrationSet,
    rows: list[HistoryRow],
    failed: dict[str, dict[str, Any]] | None = None,
) -> Status:
    """A :class:`Status` from data already read (pure apart from hashing the files)."""
    return Status(
        env=env,
        history_table=f"{cfg.migrate.schema_}.{cfg.migrate.history_table}",
        ms=ms,
        rows=rows,
        entries=classify(ms, rows),
        sum_state=files.sum_state(ms),
        failed_statements=failed or {},
        undo_history=cfg.migrate.undo_history,
    )


def _name(e: Entry) -> str:
    v = f"{e.version} " if e.version is not None and e.kind != "R" else ""
    return f"{v}{e.script or e.description}".strip()


def problems(s: Status) -> list[str]:
    """What ``validate`` fails on, one sentence each."""
    out: list[str] = []
    for e in s.entries:
        if e.state not in PROBLEM_STATES:
            continue
        name = _name(e)
        if e.state == "checksum_mismatch":
            assert e.file is not None and e.row is not None
            what = f"checksum {e.row.checksum} in history, {e.file.checksum} on disk"
            if e.row.checksum in (None, e.file.checksum):
                what = f"description {e.row.description!r} in history, {e.description!r} on disk"
            out.append(
                f"{name}: changed after it was applied ({what}); restore the file, or run "
                "`migrate repair` if the change is cosmetic"
            )
        elif e.state == "missing":
            out.append(f"{name}: applied, but the file is gone; restore it from git")
        elif e.state == "ignored":
            out.append(
                f"{name}: not applied and below the current version {s.current} (the history "
                "is ahead of the files); `migrate up --out-of-order` applies it, or renumber it"
            )
        elif e.state == "failed":
            where = s.failed_at(e)
            at = ""
            if where and where.get("describe"):
                at = f" ({str(where['describe']).removeprefix(f'{e.script}: ')})"
            out.append(
                f"{name}: failed{at}; fix the cause, run `migrate repair`, then `migrate up`"
            )
    if s.elsewhere:
        out.append(history.elsewhere_advice(s.history_table, s.elsewhere))
    if s.sum_state == "stale":
        out.append(
            f"{files.SUM_FILE} is stale: migration files changed since it was "
            "written; run `pgferry migrate sum` and commit it"
        )
    return out


def warnings(s: Status) -> list[str]:
    """Worth a line, not a failure."""
    out: list[str] = []
    for e in s.entries:
        if e.state == "future":
            out.append(
                f"{_name(e)}: applied here, but no such file in this checkout (a newer branch?)"
            )
    teams = [r for r in s.rows if r.type == UNDO_SQL]
    if teams and s.undo_history == "flyway":
        out.append(
            f"{len(teams)} UNDO_SQL row(s) in {s.history_table} (written by Flyway Teams or an "
            "earlier pgferry): the free Flyway cannot read this history; `pgferry migrate "
            "repair` converts them into the DELETE rows every edition reads (or set [migrate] "
            'undo_history = "flyway-teams")'
        )
    if s.sum_state == "missing":
        out.append(
            f"no {files.SUM_FILE}: run `pgferry migrate sum` and commit it, so two "
            "branches adding migrations conflict in git"
        )
    orphans = [
        u.script
        for d, u in s.ms.undo_templates.items()
        if d not in {t.description for t in s.ms.templates}
    ]
    for o in orphans:
        out.append(f"{o}: undo template without a VXXX file of the same description")
    return out

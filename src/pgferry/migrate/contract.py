"""Holding contract files back: the hook between the migrate service and the guards.

Contract:

- :func:`headers` parses the header of every step about to run
  (:func:`pgferry.migrate.phases.parse_header`); a bad header, or an ``after backfill``
  naming a file that does not exist, is :class:`~pgferry.errors.BadInput` (exit 2) naming
  the file and line, before anything runs.
- :func:`judge` evaluates the guards of every contract step
  (:mod:`pgferry.migrate.guards`) and decides, per contract step, whether it runs:

  ========================  ===================================================
  plain ``up`` / ``plan``   never: held, with its guards' results (exit 0)
  ``--contract``            when every guard passes; else held (the service ends
                            with exit 1 naming the guard, after applying the rest)
  ``--contract``            always, and the service journals the reason and the
  ``--override-guards``     guards that did not pass
  ========================  ===================================================

  With ``watch`` (``up --contract``), ``require-no-clients`` conditions of files whose
  other guards pass are sampled for ``[contract] clients_window`` first; otherwise one
  sample is taken.
- :func:`split` is pure: the steps to run and the :class:`ContractDecision` of each held one;
  :func:`hold` does all of it to a prepared run (the hook the migrate service and the
  command layer call).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from pgferry.config import Config
from pgferry.errors import BadInput
from pgferry.migrate import guards
from pgferry.migrate.files import MigrationSet
from pgferry.migrate.guards import GuardResult, Sightings
from pgferry.migrate.history import HistoryRow
from pgferry.migrate.phases import Header, parse_header
from pgferry.migrate.plan import Step
from pgferry.migrate.statements import ParsedFile
from pgferry.pg.connect import Target, connect, map_db_error

if TYPE_CHECKING:  # (the service calls hold(); it never imports this module)
    from pgferry.migrate.service import PreparedSteps


@dataclass
class ContractDecision:
    """What happens to one contract step, and why."""

    step: Step
    header: Header
    results: list[GuardResult] = field(default_factory=list)
    run: bool = False
    overridden: bool = False

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def failing(self) -> list[GuardResult]:
        return [r for r in self.results if not r.ok]

    def label(self) -> str:
        v = f"V{self.step.version} " if self.step.version is not None else ""
        return f"{v}{self.step.description}"

    def describe(self) -> str:
        """Why it is held (or that it could run), in one phrase."""
        if not self.results:
            return "a contract file without guards; `migrate up --contract` applies it"
        bad = self.failing
        if not bad:
            return "every guard passes; `migrate up --contract` applies it"
        first = bad[0]
        text = f"{first.guard.label}: {first.why}"
        if first.hint:
            text += f"; {first.hint}"
        return text + (f" (and {len(bad) - 1} more guard(s))" if len(bad) > 1 else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "script": self.step.script,
            "version": str(self.step.version) if self.step.version is not None else None,
            "description": self.step.description,
            "ready": self.ok,
            "applied": self.run,
            "overridden": self.overridden,
            "reason": self.describe(),
            "guards": [r.to_dict() for r in self.results],
        }


def headers(cfg: Config, steps: list[tuple[Step, ParsedFile]]) -> dict[str, Header]:
    """Every step's header, validated; BadInput (exit 2) naming file and line."""
    out: dict[str, Header] = {}
    for step, _ in steps:
        if step.kind != "V":
            continue
        h = parse_header(step.file.sql, step.file.script)
        for g in h.guards:
            if g.kind == "after_backfill" and not (cfg.backfills_dir / f"{g.arg}.sql").is_file():
                raise BadInput(
                    f"{step.file.script}:{g.line}: pgferry:after backfill {g.arg} names "
                    f"{cfg.backfill.dir}/{g.arg}.sql, which does not exist; write it or fix "
                    "the name",
                    file=step.file.script,
                    line=g.line,
                )
        out[step.file.script] = h
    return out


def judge(
    cfg: Config,
    conn: psycopg.Connection[Any],
    env: str,
    ms: MigrationSet,
    rows: list[HistoryRow],
    steps: list[tuple[Step, ParsedFile]],
    hdrs: dict[str, Header],
    *,
    contract: bool = False,
    override: bool = False,
    watch: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> list[ContractDecision]:
    """A :class:`ContractDecision` for every contract step (see the module docstring)."""
    decisions = [
        ContractDecision(s, hdrs[s.file.script])
        for s, _ in steps
        if s.file.script in hdrs and hdrs[s.file.script].contract
    ]
    if not decisions:
        return []
    for d in decisions:  # everything but the clients first: a held file needs no watching
        d.results = guards.evaluate(conn, cfg, env, ms, rows, d.step.version, d.header, Sightings())
    conds = [g.arg for d in decisions for g in d.header.guards if g.kind == "require_no_clients"]
    if conds:
        window = cfg.contract.clients_window.total_seconds()
        interval = cfg.contract.clients_interval.total_seconds()
        eager = [
            g.arg
            for d in decisions
            for g in d.header.guards
            if g.kind == "require_no_clients"
            and all(r.ok for r in d.results if r.guard.kind != "require_no_clients")
        ]
        long = watch and contract and not override and bool(eager)

        def tick(done: float, total: float, left: int) -> None:
            if on_wait is not None:
                on_wait(
                    f"watching pg_stat_activity for old clients: {int(done)}s of "
                    f"{int(total)}s, none seen yet ({left} condition(s))"
                )

        if long and on_wait is not None:
            on_wait(
                f"watching pg_stat_activity for {int(window)}s before releasing contract "
                "files ([contract] clients_window)"
            )
        sightings = guards.watch_clients(
            conn, conds if not long else eager, window if long else 0, interval, tick
        )
        if long:  # conditions not watched (their file is held anyway): one sample
            rest = [c for c in conds if c not in eager]
            if rest:
                sightings.seen.update(guards.watch_clients(conn, rest, 0, interval).seen)
        for d in decisions:
            d.results = [
                guards.evaluate(
                    conn,
                    cfg,
                    env,
                    ms,
                    rows,
                    d.step.version,
                    Header(d.header.phase, (r.guard,)),
                    sightings,
                )[0]
                if r.guard.kind == "require_no_clients"
                else r
                for r in d.results
            ]
    for d in decisions:
        d.run = contract and (d.ok or override)
        d.overridden = d.run and not d.ok
    return decisions


def split(
    steps: list[tuple[Step, ParsedFile]], decisions: list[ContractDecision]
) -> tuple[list[tuple[Step, ParsedFile]], list[ContractDecision]]:
    """(steps that run, decisions of the held ones) — pure."""
    held = {d.step.file.script for d in decisions if not d.run}
    return ([x for x in steps if x[0].file.script not in held], [d for d in decisions if not d.run])


def hold(
    cfg: Config,
    target: Target,
    ms: MigrationSet,
    p: PreparedSteps,
    *,
    conn: psycopg.Connection[Any] | None = None,
    contract: bool = False,
    override: bool = False,
    watch: bool = False,
    on_wait: Callable[[str], None] | None = None,
) -> None:
    """Judge the contract steps of a prepared run and take the held ones out of
    ``p.steps`` (into ``p.held``; the released ones into ``p.released``). Validates every
    step's header first (BadInput). ``conn``: judge on it (under the migration lock), else
    on a connection of its own."""
    p.headers = headers(cfg, p.steps)
    if not any(h.contract for h in p.headers.values()):
        p.held, p.released = [], []
        return

    def run_on(c: psycopg.Connection[Any]) -> list[ContractDecision]:
        return judge(
            cfg,
            c,
            target.name,
            ms,
            p.rows,
            p.steps,
            p.headers,
            contract=contract,
            override=override,
            watch=watch,
            on_wait=on_wait,
        )

    if conn is not None:
        decisions = run_on(conn)
    else:
        try:
            with connect(target.dsn, autocommit=True) as c:
                decisions = run_on(c)
        except psycopg.Error as e:
            raise map_db_error(e, f"cannot judge the contract guards in {target.name}") from None
    p.steps, p.held = split(p.steps, decisions)
    p.released = [d for d in decisions if d.run]

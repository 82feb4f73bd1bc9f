"""What each page shows: the API's own functions asked, their answers shaped for a template.

Contract: one function per page, ``(svc, who, request) -> context``. Each reads through
the functions the HTTP API and the command line call (:mod:`pgferry.commands`,
:mod:`pgferry.jobs`, :mod:`pgferry.server.routes_read`) and decides nothing itself:
what a run would do to which environment, and whether it waits for a second person,
is :data:`pgferry.jobs.operations.KINDS`' answer; what is healthy is the health
capability's. Here the answers only become rows, buttons (:class:`Action`: what it
does, to which environment, in words) and pictures (:mod:`.charts`).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Request

from pgferry.errors import PgferryError
from pgferry.health.rules.verdict import dur
from pgferry.jobs import runs
from pgferry.jobs.operations import KINDS
from pgferry.jobs.service import Caller
from pgferry.server.dashboard import charts
from pgferry.server.dashboard.session import can
from pgferry.server.state import Service

#: how far back the run charts look
CHART_DAYS = 30


@dataclass
class Action:
    """A button: the run it starts (kind and arguments) and what it says it will do."""

    kind: str
    args: dict[str, Any]
    label: str
    #: the environment the run acts on
    env: str
    protected: bool = False
    #: the run waits for a second person's approval before it starts
    needs_approval: bool = False
    danger: bool = False
    #: a random value: a double click starts one run, not two (Idempotency-Key)
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(9))

    @property
    def note(self) -> str:
        if self.needs_approval:
            return f"{self.env} is protected: a second person (approver) must approve first"
        if self.protected:
            return f"{self.env} is protected; this only reads from it"
        return ""


def action(
    svc: Service, kind: str, args: dict[str, Any], label: str, danger: bool = False
) -> Action:
    op = KINDS[kind]
    a = op.args.model_validate(args)
    env = op.env(a)
    protected = svc.cfg.env(env).protected
    return Action(kind, args, label, env, protected, op.writes(svc.cfg, a), danger)


def _environments(request: Request, who: Caller) -> list[dict[str, Any]]:
    """``GET /api/environments``' own answer (the same function, the same figures)."""
    from pgferry.server import routes_read

    resp = routes_read.environments(request, who)
    envs: list[dict[str, Any]] = json.loads(bytes(resp.body))["environments"]
    return envs


def _health(svc: Service, env: str) -> dict[str, Any]:
    from pgferry.server import routes_read

    try:
        return routes_read.production_health(svc, env)
    except PgferryError as e:
        return {
            "env": env,
            "status": "unknown",
            "tables": {},
            "error": e.message,
            "checks": [{"name": "health", "status": "unknown", "message": e.message}],
        }


def row_bars(svc: Service, healths: dict[str, dict[str, Any]]) -> list[charts.Bar]:
    """A bar per table and environment, with that environment's row thresholds."""
    bars = []
    for env, h in healths.items():
        th = svc.cfg.health.thresholds(env).tables
        status = {c["name"]: c["status"] for c in h.get("checks", [])}
        for table, rows in sorted(h.get("tables", {}).items()):
            t = th.get(table)
            levels = (
                (
                    ("critical below", t.critical_below),
                    ("degraded below", t.degraded_below),
                    ("optimal at", t.optimal),
                )
                if t
                else ()
            )
            marks = tuple((name, float(v)) for name, v in levels if v is not None)
            bars.append(
                charts.Bar(
                    table,
                    env,
                    None if rows is None else float(rows),  # not counted: not 0 rows
                    marks,
                    status.get(f"rows:{table}", ""),
                )
            )
    return bars


def environments(svc: Service, who: Caller, request: Request) -> dict[str, Any]:
    envs = _environments(request, who)
    healths = {e["name"]: _health(svc, e["name"]) for e in envs}
    for e in envs:
        e["health"] = healths[e["name"]]
        e["actions"] = [
            action(svc, "health", {"env": e["name"]}, f"Check the health of {e['name']} now")
        ]
    chart = charts.grouped_bars(
        row_bars(svc, healths),
        label="Rows per table and environment, with the health thresholds",
        empty='no table has row thresholds: add [health.tables."schema.table"] to pgferry.toml',
    )
    return {"envs": envs, "rows_chart": chart}


def pick_env(svc: Service, request: Request) -> str:
    """``?env=`` if it names an environment, else production, else the first one."""
    want = request.query_params.get("env")
    if want in svc.cfg.environments:
        return str(want)
    try:
        return svc.production
    except PgferryError:
        return next(iter(svc.cfg.environments), "")


def _env_tabs(svc: Service, current: str) -> list[dict[str, Any]]:
    return [
        {"name": n, "protected": e.protected, "current": n == current}
        for n, e in svc.cfg.environments.items()
    ]


def migrations(svc: Service, who: Caller, request: Request) -> dict[str, Any]:  # noqa: ARG001
    from pgferry.commands import lint as lint_cmd
    from pgferry.commands import migrate_info

    env = pick_env(svc, request)
    status = migrate_info.status(svc.cfg, env).to_dict()
    findings: dict[str, list[dict[str, Any]]] = {}
    lint_error = None
    try:
        res = lint_cmd.lint(
            lint_cmd.LintOptions(
                env=env, fmt="json", jobs=1, config_path=str(svc.cfg.path) if svc.cfg.path else None
            )
        )
        for f in res.to_dict().get("findings", []):
            findings.setdefault(str(f.get("path", "")).rsplit("/", 1)[-1], []).append(f)
    except PgferryError as e:
        lint_error = e.message
    pending = [m for m in status["entries"] if m["state"] == "pending"]
    for m in status["entries"]:
        m["findings"] = findings.get(m["script"], [])
    acts = []
    if pending:
        n = len(pending)
        acts.append(
            action(
                svc,
                "migrate_up",
                {"env": env},
                f"Apply {n} pending migration{'s' if n > 1 else ''} to {env}",
                danger=True,
            )
        )
    return {
        "env": env,
        "tabs": _env_tabs(svc, env),
        "mig": status,
        "pending": pending,
        "lint_error": lint_error,
        "actions": acts,
        "errors": sum(1 for fs in findings.values() for f in fs if f.get("severity") == "error"),
    }


def _rows_of(run: runs.ServiceRun) -> float | None:
    totals = (run.result or {}).get("totals") or {}
    rows = totals.get("source_rows")
    if rows is None:
        rows = ((run.result or {}).get("data") or {}).get("migratedCount")
    return float(rows) if isinstance(rows, int | float) else None


def run_charts(svc: Service, now: datetime) -> dict[str, str]:
    since = now - timedelta(days=CHART_DAYS)
    done = [
        r
        for r in runs.listing(svc.ctl, limit=500)
        if r.finished_at is not None and r.finished_at >= since and r.duration_s is not None
    ]
    took = [
        charts.Point(
            r.finished_at,
            r.duration_s,
            f"{r.kind} on {r.env} ({r.state}): {r.duration_s:.2f} s",
            r.state,
        )
        for r in done
        if r.finished_at and r.duration_s is not None
    ]
    speed = []
    for r in done:
        rows = _rows_of(r)
        if rows and r.duration_s and r.finished_at:
            speed.append(
                charts.Point(
                    r.finished_at,
                    rows / r.duration_s,
                    f"{r.kind} on {r.env}: {rows:,.0f} rows in "
                    f"{r.duration_s:.2f} s ({rows / r.duration_s:,.0f}"
                    " rows/s)",
                    r.state,
                )
            )
    return {
        "durations": charts.timeline(
            took,
            label=f"Run durations, last {CHART_DAYS} days",
            since=since,
            until=now,
            unit="seconds",
            empty="no run finished in the last 30 days",
        ),
        "speed": charts.timeline(
            speed,
            label=f"Rows per second of syncs and verifies, last {CHART_DAYS} days",
            since=since,
            until=now,
            unit="rows/s",
            empty="no sync or verify in the last 30 days",
        ),
    }


def pair_actions(svc: Service) -> list[dict[str, Any]]:
    """The verify and sync forms: source and target chosen by the person."""
    names = list(svc.cfg.environments)
    if len(names) < 2:
        return []
    src, tgt = names[0], names[1]
    protected = [n for n, e in svc.cfg.environments.items() if e.protected]
    return [
        {
            "kind": "verify",
            "mode": None,
            "source": src,
            "target": tgt,
            "template": "Verify {target} against {source} (reads only)",
            "label": f"Verify {tgt} against {src} (reads only)",
        },
        {
            "kind": "sync",
            "mode": "incremental",
            "source": src,
            "target": tgt,
            "template": "Sync {source} into {target} (writes to {target})",
            "label": f"Sync {src} into {tgt} (writes to {tgt})",
            "protected": protected,
        },
    ]


def runs_page(svc: Service, who: Caller, request: Request) -> dict[str, Any]:  # noqa: ARG001
    state = request.query_params.get("state") or None
    listed = runs.listing(svc.ctl, limit=100, state=state)
    return {
        "runs": [r.summary() for r in listed],
        "state": state,
        "charts": run_charts(svc, datetime.now(UTC)),
        "forms": pair_actions(svc),
        "envs": _env_tabs(svc, ""),
        "nonce": secrets.token_urlsafe(9),
        "states": sorted(runs.FINAL | {"queued", "running", "awaiting_approval"}),
    }


def run_page(svc: Service, who: Caller, request: Request) -> dict[str, Any]:
    from pgferry.jobs.service import NotFound

    run_id = request.path_params["run_id"]
    run = runs.get(svc.ctl, run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}", field="id")
    return {
        "run": run.to_dict(),
        "protected": svc.cfg.environments[run.env].protected
        if run.env in svc.cfg.environments
        else False,
        "can_approve": run.state == "awaiting_approval"
        and can(who, "approver")
        and run.requested_by != who.name,
        "own": run.requested_by == who.name,
    }


def approvals(svc: Service, who: Caller, request: Request) -> dict[str, Any]:  # noqa: ARG001
    waiting = runs.listing(svc.ctl, limit=200, state="awaiting_approval")
    for_me = [r.to_dict() for r in waiting if r.requested_by != who.name]
    mine = [r.to_dict() for r in waiting if r.requested_by == who.name]
    return {"for_me": for_me, "mine": mine, "approver": can(who, "approver")}


def backups(svc: Service, who: Caller, request: Request) -> dict[str, Any]:  # noqa: ARG001
    from pgferry.commands import backup

    env = pick_env(svc, request)
    listings = {}
    for name in svc.cfg.environments:
        try:
            listings[name] = backup.listing(svc.cfg, name).to_dict()
        except PgferryError as e:
            listings[name] = {"backups": [], "freshness": {}, "error": e.message}
    max_age = svc.cfg.backup.max_age.total_seconds()
    ages = []
    for name, lst in listings.items():
        f = lst.get("freshness") or {}
        tested = f.get("newest_restore_tested_age_s")
        ages.append(
            charts.LimitBar(
                name,
                f.get("newest_complete_age_s"),
                max_age,
                note="no complete backup",
                extra=(("newest restore-tested", float(tested)),) if tested is not None else (),
            )
        )
    chart = charts.limit_bars(
        ages,
        label=f"Age of each environment's newest complete backup "
        f"against [backup] max_age ({dur(max_age)})",
    )
    here = listings.get(env, {"backups": [], "freshness": {}})
    expired = sum(1 for b in here["backups"] if "expired" in b.get("flags", []))
    acts = [
        action(svc, "backup_create", {"env": env}, f"Back up {env} now"),
        action(
            svc, "backup_verify", {"env": env}, f"Verify the newest backup of {env} (checksums)"
        ),
        action(
            svc,
            "backup_verify",
            {"env": env, "restore_test": True},
            f"Test-restore the newest backup of {env} into a scratch database",
        ),
    ]
    if expired:
        acts.append(
            action(
                svc,
                "backup_prune",
                {"env": env},
                f"Delete {expired} expired backup{'s' if expired > 1 else ''} of "
                f"{env} ([backup.keep])",
                danger=True,
            )
        )
    return {
        "env": env,
        "tabs": _env_tabs(svc, env),
        "listing": here,
        "ages_chart": chart,
        "actions": acts,
        "max_age_s": max_age,
    }


def journal(svc: Service, who: Caller, request: Request) -> dict[str, Any]:  # noqa: ARG001
    from pgferry import journal as journal_mod
    from pgferry.commands import journal as journal_cmd

    env = pick_env(svc, request)
    try:
        limit = max(1, min(500, int(request.query_params.get("limit", "50"))))
    except ValueError:
        limit = 50
    entries = journal_cmd.show(svc.cfg, env, limit).to_dict()["entries"]
    audit = journal_mod.read(svc.ctl.target, limit)
    return {
        "env": env,
        "tabs": _env_tabs(svc, env),
        "entries": entries,
        "audit": audit,
        "limit": limit,
    }

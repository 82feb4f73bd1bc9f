"""Routes that read: the service's liveness, production health, environments, migrations,
backups, journals, tokens and sessions, and ``/metrics``.

Contract: each route checks its role (:func:`pgferry.server.auth.require`), calls one
:mod:`pgferry.commands` function (or the service state) and returns its ``to_dict()``,
redacted. ``/api/admin/production-health`` answers in the shape teams' dashboards read:
``{"status", "checks", "tables": {"schema.table": rows}, "timestamp"}`` plus ``env``,
``cached`` and ``breaker``, from the health cache (one run per ``cache_interval``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict

from pgferry import __version__, jsonio
from pgferry.jobs import tokens
from pgferry.jobs.service import Caller, audit
from pgferry.redaction import may_need_redaction, redact_tree
from pgferry.server.auth import SESSION_COOKIE, AuthError, authorize, identify, require
from pgferry.server.state import Service

if TYPE_CHECKING:
    from pgferry.health.status import HealthReport

router = APIRouter()
Viewer = Annotated[Caller, Depends(require("viewer"))]
Admin = Annotated[Caller, Depends(require("admin"))]


def service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


class Redacted(JSONResponse):
    """JSON through orjson (:mod:`pgferry.jsonio`), every string in it redacted.

    The standard library's encoder behind FastAPI's ``jsonable_encoder`` was half the time
    of a ``GET /api/runs``; orjson writes the same text (dates as ISO text, keys as
    strings) and anything else it does not know (a model, a path) goes through
    ``jsonable_encoder`` as before, redacted too."""

    def render(self, content: Any) -> bytes:
        def default(o: Any) -> Any:
            return redact_tree(jsonable_encoder(o))

        text = jsonio.dumps(content, default=default)
        if may_need_redaction(text):  # most answers hold nothing to redact: one search
            text = jsonio.dumps(redact_tree(content), default=default)
        return text.encode()


def ok(body: dict[str, Any], status: int = 200) -> JSONResponse:
    """``body`` as JSON (dates as ISO text), every string in it redacted."""
    return Redacted(body, status_code=status)


def env_or_production(svc: Service, env: str | None) -> str:
    from pgferry.errors import ConfigError

    name = env or svc.production
    if name not in svc.cfg.environments:
        known = ", ".join(sorted(svc.cfg.environments)) or "none"
        raise ConfigError(f"env: unknown environment {name!r} (configured: {known})", field="env")
    return name


@router.get("/api/health", tags=["service"])
def liveness(request: Request) -> JSONResponse:
    """Liveness of the service itself (no token needed): the process, its worker and the
    control database."""
    svc = service(request)
    try:
        with svc.ctl.conn() as c:
            c.execute("SELECT 1")
        control = "ok"
    except Exception as e:  # noqa: BLE001 - reported, not raised: this is the health route
        control = f"unreachable: {e}"
    w = svc.worker
    worker = "off" if w is None else ("running" if w.error is None else f"stopped: {w.error}")
    return ok(
        {
            "ok": control == "ok",
            "status": "ok" if control == "ok" else "degraded",
            "version": __version__,
            "control": control,
            "worker": worker,
        },
        200 if control == "ok" else 503,
    )


def production_health(
    svc: Service, env: str, known: tuple[HealthReport, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The answer of ``/api/admin/production-health`` (``known``: the cached report and
    breaker, when :meth:`Service.cached_health` had them)."""
    rep, brk = known if known is not None else svc.health(env)
    now = datetime.now(UTC).isoformat()
    if rep is None:
        return {
            "ok": False,
            "env": env,
            "status": "critical",
            "cached": False,
            "timestamp": now,
            "breaker": brk,
            "tables": {},
            "checks": [
                {
                    "name": "circuit_breaker",
                    "status": "critical",
                    "message": f"calls to {env} fail fast until {brk['retry_at']}: "
                    f"{brk['failures']} failures in a row ({brk['last_error']})",
                }
            ],
        }
    d = rep.to_dict()
    checks = [
        *d["checks"],
        {
            "name": "circuit_breaker",
            "status": "optimal" if brk["state"] == "closed" else "degraded",
            "value": brk["state"],
            "message": f"breaker {brk['state']}",
            "kind": "server",
        },
    ]
    return {
        "ok": d["ok"],
        "env": env,
        "status": d["status"],
        "checks": checks,
        "tables": {t: r.rows for t, r in sorted(rep.facts.tables.items())},
        "timestamp": d["checked_at"],
        "cached": d["cached"],
        "duration_ms": d["duration_ms"],
        "breaker": brk,
    }


@router.get("/api/admin/production-health", tags=["admin"])
async def admin_production_health(
    request: Request,
    caller: Viewer,  # noqa: ARG001
    env: str | None = None,
) -> JSONResponse:
    """The health report of production (``[service] production``; ``?env=`` for another)."""
    svc = service(request)
    name = env_or_production(svc, env)
    known = svc.cached_health(name)  # the usual case: no I/O, no thread
    if known is not None:
        return ok(production_health(svc, name, known))
    return ok(await anyio.to_thread.run_sync(production_health, svc, name))


@router.get("/api/environments", tags=["read"])
def environments(request: Request, caller: Viewer) -> JSONResponse:  # noqa: ARG001
    """Every environment: protection, where it lives (no password), its circuit breaker."""
    from pgferry.jobs import breaker
    from pgferry.redaction import redact_dsn

    svc = service(request)
    states = breaker.states(svc.cfg, svc.ctl)
    try:
        prod: str | None = svc.production
    except Exception:  # noqa: BLE001 - no production configured: none is marked
        prod = None
    out = []
    for name, e in svc.cfg.environments.items():
        try:
            where = (
                redact_dsn(svc.cfg.resolve(e.url, f"environments.{name}.url"))
                if e.url
                else f"embedded database {e.database or 'pgferry_' + name}"
            )
        except Exception as err:  # noqa: BLE001 - a missing variable is shown, not raised
            where = f"unresolved: {err}"
        out.append(
            {
                "name": name,
                "protected": e.protected,
                "production": name == prod,
                "embedded": not e.url,
                "where": where,
                "breaker": states[name].to_dict(),
            }
        )
    return ok({"ok": True, "environments": out})


@router.get("/api/migrations", tags=["read"])
def migrations(
    request: Request,
    caller: Viewer,  # noqa: ARG001
    env: str | None = None,
) -> JSONResponse:
    """``migrate status`` of one environment (default: production)."""
    from pgferry.commands import migrate_info

    svc = service(request)
    return ok(migrate_info.status(svc.cfg, env_or_production(svc, env)).to_dict())


@router.get("/api/backups", tags=["read"])
def backups(
    request: Request,
    caller: Viewer,  # noqa: ARG001
    env: str | None = None,
) -> JSONResponse:
    """``backup list`` of one environment (default: production)."""
    from pgferry.commands import backup

    svc = service(request)
    return ok(backup.listing(svc.cfg, env_or_production(svc, env)).to_dict())


@router.get("/api/journal", tags=["read"])
def journal(
    request: Request,
    caller: Viewer,  # noqa: ARG001
    env: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSONResponse:
    """The newest journal rows of one environment (default: production)."""
    from pgferry.commands import journal as journal_cmd

    svc = service(request)
    return ok(journal_cmd.show(svc.cfg, env_or_production(svc, env), limit).to_dict())


@router.get("/api/audit", tags=["read"])
def audit_log(
    request: Request,
    caller: Viewer,  # noqa: ARG001
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSONResponse:
    """The control database's journal: refused requests, approvals, tokens."""
    from pgferry import journal as journal_mod

    svc = service(request)
    return ok({"ok": True, "entries": journal_mod.read(svc.ctl.target, limit)})


@router.get("/metrics", tags=["read"])
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus exposition: production's health metrics, runs and circuit breakers."""
    from pgferry.server import metrics as metrics_mod

    svc = service(request)
    if svc.cfg.service.metrics_auth:
        authorize(request, "viewer")
    return PlainTextResponse(
        metrics_mod.exposition(svc), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


# -- tokens and sessions ----------------------------------------------------------------


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    role: tokens.Role


@router.get("/api/tokens", tags=["tokens"])
def token_list(request: Request, caller: Admin) -> JSONResponse:  # noqa: ARG001
    return ok({"ok": True, "tokens": [t.to_dict() for t in tokens.listing(service(request).ctl)]})


@router.post("/api/tokens", tags=["tokens"], status_code=201)
def token_create(request: Request, body: TokenBody, caller: Admin) -> JSONResponse:
    """A new token, shown once in this answer."""
    svc = service(request)
    made = tokens.create(svc.ctl, body.name, body.role)
    audit(svc.ctl, "token create", caller, details={"name": body.name, "role": body.role})
    return JSONResponse(made.to_dict(), status_code=201)  # the secret, once: not redacted


@router.delete("/api/tokens/{name}", tags=["tokens"])
def token_revoke(request: Request, name: str, caller: Admin) -> JSONResponse:
    svc = service(request)
    n = tokens.revoke(svc.ctl, name)
    svc.tokens.clear()
    audit(svc.ctl, "token revoke", caller, details={"name": name})
    return ok({"ok": True, "revoked": n})


@router.post("/api/sessions", tags=["tokens"])
def session_create(request: Request) -> JSONResponse:
    """A browser session from a bearer token: an HttpOnly cookie (for the dashboard)."""
    svc = service(request)
    token = identify(svc, request)
    value = tokens.new_session(svc.ctl, token, svc.cfg.service.session_ttl)
    resp = ok({"ok": True, "name": token.name, "role": token.role})
    resp.set_cookie(
        SESSION_COOKIE,
        value,
        httponly=True,
        samesite="strict",
        max_age=int(svc.cfg.service.session_ttl.total_seconds()),
    )
    return resp


@router.delete("/api/sessions", tags=["tokens"])
def session_end(request: Request) -> Response:
    svc = service(request)
    value = request.cookies.get(SESSION_COOKIE)
    if not value:
        raise AuthError("no session")
    tokens.end_session(svc.ctl, value)
    resp = ok({"ok": True})
    resp.delete_cookie(SESSION_COOKIE)
    return resp

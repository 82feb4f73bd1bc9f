"""The dashboard's routes: a page per concern (GET), a form per action (POST), the login.

Contract: every page needs a viewer's session (or bearer token); without one the browser
is sent to ``/login?next=...``. Every form POST needs the session and its CSRF token
(:mod:`.session`) and the role the API route doing the same needs (operator starts and
cancels runs, approver approves and rejects); it calls the same function that route
calls (:mod:`pgferry.jobs.service`) and then sends the browser to the run's page (303).
A refusal is an HTML page with the error's own sentence and HTTP status (401, 403,
404, 409, 422, 429): the approval of a run by the person who asked for it is refused
(403) by :func:`pgferry.jobs.service.approve` itself, whatever the page showed.

Pages: ``/`` environments (health, checks, rows per table), ``/migrations``,
``/runs`` (live progress), ``/runs/{id}``, ``/approvals``, ``/backups``, ``/journal``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from pgferry import __version__
from pgferry.errors import PgferryError
from pgferry.jobs import lifecycle, runs
from pgferry.jobs import service as jobs
from pgferry.jobs.service import Caller
from pgferry.server.auth import SESSION_COOKIE, AuthError, Forbidden
from pgferry.server.dashboard import render, session, views
from pgferry.server.state import Service

router = APIRouter(include_in_schema=False)
View = Callable[[Service, Caller, Request], dict[str, Any]]
NAV = (
    ("/", "Environments"),
    ("/migrations", "Migrations"),
    ("/runs", "Runs"),
    ("/approvals", "Approvals"),
    ("/backups", "Backups"),
    ("/journal", "Journal"),
)


def _svc(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


def _to_login(request: Request, forget: bool = False) -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    resp = RedirectResponse(f"/login?next={quote(here)}", status_code=303)
    if forget:  # an expired or revoked session: drop the cookie, ask once more
        resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


def _base(request: Request, who: Caller | None, title: str) -> dict[str, Any]:
    waiting = 0
    if who is not None:
        waiting = sum(
            1
            for r in runs.listing(_svc(request).ctl, limit=200, state="awaiting_approval")
            if r.requested_by != who.name
        )
    return {
        "who": who,
        "title": title,
        "nav": NAV,
        "path": request.url.path,
        "csrf": session.csrf_token(request),
        "version": __version__,
        "waiting": waiting,
        "can_operate": who is not None and session.can(who, "operator"),
        "can_approve": who is not None and session.can(who, "approver"),
    }


def _error(request: Request, who: Caller | None, e: PgferryError | ValidationError) -> Response:
    if isinstance(e, ValidationError):
        err = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid"}
        where = ".".join(str(x) for x in err.get("loc", ())) or "form"
        status, name, msg = 422, "BadInput", f"{where}: {err.get('msg')}"
    else:
        status, name, msg = e.http_status, type(e).__name__, e.message
        if status == 400 and "field" in e.details:
            status = 422
    headers = (
        {"Retry-After": str(e.details["retry_after"])}
        if isinstance(e, PgferryError) and "retry_after" in e.details
        else None
    )
    ctx = {
        **_base(request, who, "Refused" if status in (401, 403) else "Error"),
        "status": status,
        "error": name,
        "message": msg,
    }
    return render.html("error.html", ctx, status, headers)


def _page(request: Request, template: str, title: str, view: View) -> Response:
    """Who asks, what the view says, rendered; or the login, or an error page."""
    svc = _svc(request)
    try:
        who = session.caller(svc, request)
    except AuthError:
        return _to_login(request, forget=True)
    except PgferryError as e:
        return _error(request, None, e)
    if who is None:
        return _to_login(request)
    try:
        ctx = view(svc, who, request)
    except PgferryError as e:
        return _error(request, who, e)
    return render.html(template, {**_base(request, who, title), **ctx})


@router.get("/")
def environments_page(request: Request) -> Response:
    return _page(request, "environments.html", "Environments", views.environments)


@router.get("/migrations")
def migrations_page(request: Request) -> Response:
    return _page(request, "migrations.html", "Migrations", views.migrations)


@router.get("/runs")
def runs_page(request: Request) -> Response:
    return _page(request, "runs.html", "Runs", views.runs_page)


@router.get("/runs/{run_id}")
def run_page(request: Request, run_id: str) -> Response:  # noqa: ARG001 - in path_params
    return _page(request, "run.html", "Run", views.run_page)


@router.get("/approvals")
def approvals_page(request: Request) -> Response:
    return _page(request, "approvals.html", "Approvals", views.approvals)


@router.get("/backups")
def backups_page(request: Request) -> Response:
    return _page(request, "backups.html", "Backups", views.backups)


@router.get("/journal")
def journal_page(request: Request) -> Response:
    return _page(request, "journal.html", "Journal", views.journal)


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    return render.static(name)


# -- login --------------------------------------------------------------------------


def _login_form(request: Request, status: int = 200, message: str = "") -> Response:
    token, new = session.login_form_token(request)
    ctx = {
        **_base(request, None, "Log in"),
        "login_csrf": token,
        "message": message,
        "next": session.safe_next(request.query_params.get("next")),
    }
    resp = render.html("login.html", ctx, status)
    if new is not None:
        session.set_login_cookie(request, resp, new)
    return resp


@router.get("/login")
def login_page(request: Request) -> Response:
    return _login_form(request)


@router.post("/login")
async def login_submit(request: Request) -> Response:
    svc = _svc(request)
    form = await render.read_form(request)
    try:
        _, value = await anyio.to_thread.run_sync(session.login, svc, request, form)
    except PgferryError as e:
        resp = _login_form(request, e.http_status, e.message)
        if "retry_after" in e.details:
            resp.headers["Retry-After"] = str(e.details["retry_after"])
        return resp
    resp = RedirectResponse(session.safe_next(form.get("next")), status_code=303)
    session.set_session_cookie(request, resp, svc, value)
    resp.delete_cookie(session.LOGIN_COOKIE, path="/login")
    return resp


# -- actions ------------------------------------------------------------------------


Act = Callable[[Service, Caller, dict[str, str]], str]


async def _act(request: Request, role: str, act: Act) -> Response:
    """A form POST: session, CSRF, role; then ``act`` (in a thread), whose answer is where
    the browser goes next."""
    svc = _svc(request)
    form = await render.read_form(request)
    who: Caller | None = None
    try:
        who = await anyio.to_thread.run_sync(session.caller, svc, request)
        if who is None:
            raise AuthError("no session: log in first")
        session.check_csrf(request, form)
        if not session.can(who, role):
            raise Forbidden(
                f"{who.name} has role {who.role}; this needs {role} or above",
                needs=role,
                role=who.role,
            )
        where = await anyio.to_thread.run_sync(act, svc, who, form)
    except AuthError:
        return _to_login(request, forget=True)
    except (PgferryError, ValidationError) as e:
        return _error(request, who, e)
    return RedirectResponse(where, status_code=303)


def _start(svc: Service, who: Caller, form: dict[str, str]) -> str:
    args = {k[2:]: v for k, v in form.items() if k.startswith("a.") and v != ""}
    kind = form.get("kind", "")
    # the same form sent twice (a double click, a reload) is one run; other arguments
    # from the same page are another run
    key = (
        f"dashboard:{who.name}:{form.get('nonce', '')}:{runs.digest([kind, args])[:16]}"
        if form.get("nonce")
        else None
    )
    run, _ = jobs.submit(svc.cfg, svc.ctl, kind, args, who, idempotency_key=key)
    return f"/runs/{run.id}"


def _approve(run_id: str) -> Act:
    def act(svc: Service, who: Caller, form: dict[str, str]) -> str:
        jobs.approve(svc.cfg, svc.ctl, run_id, who, plan_hash=form.get("plan_hash") or None)
        return f"/runs/{run_id}"

    return act


def _reject(run_id: str) -> Act:
    def act(svc: Service, who: Caller, form: dict[str, str]) -> str:
        lifecycle.reject(svc.ctl, run_id, who, form.get("reason", ""))
        return f"/runs/{run_id}"

    return act


def _cancel(run_id: str) -> Act:
    def act(svc: Service, who: Caller, form: dict[str, str]) -> str:  # noqa: ARG001
        lifecycle.cancel(svc.ctl, run_id, who)
        return f"/runs/{run_id}"

    return act


def _retry(run_id: str) -> Act:
    def act(svc: Service, who: Caller, form: dict[str, str]) -> str:  # noqa: ARG001
        lifecycle.retry(svc.ctl, run_id, who)
        return f"/runs/{run_id}"

    return act


def _logout(svc: Service, who: Caller, form: dict[str, str]) -> str:  # noqa: ARG001
    return "/login"


@router.post("/runs")
async def start_run(request: Request) -> Response:
    return await _act(request, "operator", _start)


@router.post("/runs/{run_id}/approve")
async def approve_run(request: Request, run_id: str) -> Response:
    return await _act(request, "approver", _approve(run_id))


@router.post("/runs/{run_id}/reject")
async def reject_run(request: Request, run_id: str) -> Response:
    return await _act(request, "approver", _reject(run_id))


@router.post("/runs/{run_id}/cancel")
async def cancel_run(request: Request, run_id: str) -> Response:
    return await _act(request, "operator", _cancel(run_id))


@router.post("/runs/{run_id}/retry")
async def retry_run(request: Request, run_id: str) -> Response:
    return await _act(request, "operator", _retry(run_id))


@router.post("/logout")
async def logout(request: Request) -> Response:
    resp = await _act(request, "viewer", _logout)
    if resp.status_code == 303 and resp.headers.get("location") == "/login":
        await anyio.to_thread.run_sync(session.logout, _svc(request), request)
        resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp

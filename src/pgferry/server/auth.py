"""Who is calling: bearer tokens and sessions, roles, and a limit on failed attempts.

Contract: :func:`require` is a FastAPI dependency for a minimum role. It reads
``Authorization: Bearer <token>`` (else the ``pgferry_session`` cookie), and answers

- 401 (JSON) for a missing, wrong or revoked token or session,
- 403 (JSON) for a role below the route's,
- 429 (JSON, ``Retry-After``) once an address failed ``[service] auth_failures`` times
  within ``auth_window``, until the window has passed (counted in this process),

each refusal journaled in the control journal with the caller's address.
:class:`CallerFirst` asks the same before an API write's body is read: FastAPI reads and
parses a body before it solves the dependencies, so a body that is not JSON was a 422 to
a caller without a token (not journaled, not counted), and any body was read for one. A token
found is cached for a second (a revoked token stops working within a second). The
dependency runs on the event loop: only a token not in that cache, or a refusal (it is
journaled), goes to a thread for the control database; a thread hop per request cost
more than the rest of the check.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

import anyio
from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from pgferry.errors import PgferryError
from pgferry.jobs import tokens
from pgferry.jobs.service import Caller, audit
from pgferry.server.error_reply import error_response
from pgferry.server.state import Service

SESSION_COOKIE = "pgferry_session"


class AuthError(PgferryError):
    exit_code = 4
    http_status = 401


class Forbidden(PgferryError):
    exit_code = 4
    http_status = 403


class TooManyFailures(PgferryError):
    exit_code = 4
    http_status = 429


_SAFE = ("GET", "HEAD", "OPTIONS")


def address(request: Request) -> str:
    """The caller's IP address, or "unknown". Never anything else: the runs keep it as
    ``requested_from``, where ``cli`` marks a ``pgferry release --yes`` (its consent), and
    a forwarded-for header names the client with any text it likes."""
    host = request.client.host if request.client else ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return "unknown"


def _presented(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        return ("bearer", value.strip()) if scheme.lower() == "bearer" else ("bad", header)
    cookie = request.cookies.get(SESSION_COOKIE)
    return ("session", cookie) if cookie else None


def _session_write(got: tuple[str, str] | None, request: Request) -> bool:
    """A browser session asking the API to change something (refused: see :func:`identify`)."""
    return (
        got is not None
        and got[0] == "session"
        and request.method not in _SAFE
        and request.url.path.startswith("/api/")
    )


def identify(svc: Service, request: Request) -> tokens.Token:
    """The token behind the request, or :class:`AuthError` (journaled, counted)."""
    addr = address(request)
    wait = svc.limiter.blocked_for(addr)
    if wait > 0:
        raise TooManyFailures(
            f"too many failed attempts from {addr}; try again in {wait:.0f} s",
            retry_after=int(wait) + 1,
        )
    got = _presented(request)
    if _session_write(got, request):
        # a browser's cookie rides along with any page's request to this site; the API's
        # writes carry no CSRF token, so they take the bearer header only (the dashboard's
        # forms post to its own routes, which check theirs)
        raise Forbidden(
            "the API changes nothing for a browser session; send "
            "Authorization: Bearer <token> (pgferry token create)"
        )
    token: tokens.Token | None = None
    if got is not None and got[0] in ("bearer", "session"):
        key = f"{got[0]}:{tokens.hash_secret(got[1])}"
        token = svc.tokens.get(key)
        if token is None:
            token = (
                tokens.check(svc.ctl, got[1])
                if got[0] == "bearer"
                else tokens.check_session(svc.ctl, got[1])
            )
            if token is not None:
                svc.tokens.put(key, token)
    if token is None:
        svc.limiter.fail(addr)
        why = (
            "no token: send Authorization: Bearer <token> (pgferry token create)"
            if got is None
            else "the token is wrong, revoked or expired"
        )
        audit(
            svc.ctl,
            "http 401",
            Caller("anonymous", "", addr),
            outcome="refused",
            exit_code=4,
            details={"path": request.url.path, "method": request.method, "error": why},
        )
        raise AuthError(why)
    return token


def known(svc: Service, request: Request) -> tokens.Token | None:
    """The token behind the request when the cache holds it and the address is not
    blocked (no database asked); None when :func:`identify` has to decide."""
    got = _presented(request)
    if (
        got is None
        or got[0] not in ("bearer", "session")
        or _session_write(got, request)
        or svc.limiter.blocked_for(address(request)) > 0
    ):
        return None
    return svc.tokens.get(f"{got[0]}:{tokens.hash_secret(got[1])}")


def authorize(request: Request, role: str) -> Caller:
    """The caller, who must hold ``role`` or a higher one (blocking: it may ask the
    control database); :class:`AuthError`, :class:`Forbidden`, :class:`TooManyFailures`."""
    svc: Service = request.app.state.service
    token = identify(svc, request)
    caller = Caller(token.name, token.role, address(request))
    if tokens.rank(token.role) < tokens.rank(role):
        audit(
            svc.ctl,
            "http 403",
            caller,
            outcome="refused",
            exit_code=4,
            details={"path": request.url.path, "method": request.method, "needs": role},
        )
        raise Forbidden(
            f"{token.name} has role {token.role}; this needs {role} or above",
            needs=role,
            role=token.role,
        )
    request.state.caller = caller
    return caller


def require(role: str) -> Callable[[Request], Awaitable[Caller]]:
    """A dependency: the caller, who must hold ``role`` or a higher one."""

    async def dependency(request: Request) -> Caller:
        token = known(request.app.state.service, request)
        if token is not None and tokens.rank(token.role) >= tokens.rank(role):
            caller = Caller(token.name, token.role, address(request))
            request.state.caller = caller
            return caller
        return await anyio.to_thread.run_sync(authorize, request, role)

    return dependency


class CallerFirst:
    """An ASGI middleware: an ``/api/`` request that may change something (not ``GET``,
    ``HEAD``, ``OPTIONS``; ``/api/sessions`` judges its own) is refused, as
    :func:`identify` refuses, before its body is read. The route then checks the role
    (the token found is in the cache)."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app, self.svc = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] not in _SAFE
            and scope["path"].startswith("/api/")
            and scope["path"] != "/api/sessions"
        ):
            request = Request(scope)
            if known(self.svc, request) is None:
                try:
                    await anyio.to_thread.run_sync(identify, self.svc, request)
                except PgferryError as e:
                    await error_response(e)(scope, receive, send)
                    return
        await self.app(scope, receive, send)

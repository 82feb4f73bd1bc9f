"""Who is looking at the dashboard: a session cookie made from an API token, and CSRF.

Contract:

- :func:`login` checks a token a person pasted into the login form with the API's own
  store (:func:`pgferry.jobs.tokens.check`), the API's failure limit per address and its
  journal (a wrong token is a journaled ``http 401``); a right one becomes a session
  (:func:`pgferry.jobs.tokens.new_session`, the same as ``POST /api/sessions``) in the
  ``pgferry_session`` cookie: HttpOnly, SameSite=Strict, ``Max-Age`` = ``[service]
  session_ttl`` (Secure behind https), stored hashed, ended by logout or token revoke.
- :func:`caller` is the page's person: the same check as the API's
  (:func:`pgferry.server.auth.identify`: bearer header, else the cookie) with the same
  roles; ``None`` without any credential (the page sends the browser to the login).
- CSRF: every form carries :func:`csrf_token`, a digest of the session secret (the
  cookie is HttpOnly: a page of another site can neither read it nor compute the
  digest); :func:`check_csrf` refuses a form without the right one (403). The login
  form, before there is a session, is bound the same way to a short-lived
  ``pgferry_login`` cookie. SameSite=Strict keeps the cookies off requests other sites
  start in the first place; the check holds even where a browser ignores it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from pgferry.errors import PgferryError
from pgferry.jobs import tokens
from pgferry.jobs.service import Caller, audit
from pgferry.server.auth import SESSION_COOKIE, TooManyFailures, address, identify
from pgferry.server.state import Service

LOGIN_COOKIE = "pgferry_login"
LOGIN_TTL_S = 900


class CsrfRefused(PgferryError):
    """A form without the token of this session (HTTP 403)."""

    exit_code = 4
    http_status = 403


class LoginRefused(PgferryError):
    """A wrong, revoked or empty token at the login form (HTTP 401)."""

    exit_code = 4
    http_status = 401


def _digest(purpose: str, secret: str) -> str:
    return hashlib.sha256(f"pgferry-{purpose}\0{secret}".encode()).hexdigest()[:40]


def csrf_token(request: Request) -> str:
    """The token this session's forms carry ("" without a session cookie)."""
    value = request.cookies.get(SESSION_COOKIE)
    return _digest("csrf", value) if value else ""


def check_csrf(request: Request, form: dict[str, str]) -> None:
    """Refuse (403) a form whose ``csrf`` field is not this session's token."""
    want = csrf_token(request)
    got = form.get("csrf", "")
    if not want or not hmac.compare_digest(want, got):
        raise CsrfRefused(
            "this form is stale or did not come from this dashboard: reload the page and try again"
        )


def login_form_token(request: Request) -> tuple[str, str | None]:
    """The login form's CSRF token, and a new ``pgferry_login`` cookie value to set (None
    when the browser has one)."""
    value = request.cookies.get(LOGIN_COOKIE)
    new = None if value else secrets.token_urlsafe(24)
    return _digest("login", value or new or ""), new


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_login_cookie(request: Request, resp: Response, value: str) -> None:
    resp.set_cookie(
        LOGIN_COOKIE,
        value,
        max_age=LOGIN_TTL_S,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/login",
    )


def set_session_cookie(request: Request, resp: Response, svc: Service, value: str) -> None:
    resp.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=int(svc.cfg.service.session_ttl.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/",
    )


def login(svc: Service, request: Request, form: dict[str, str]) -> tuple[tokens.Token, str]:
    """Check the login form (CSRF, failure limit, token); the token and a new session."""
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or not hmac.compare_digest(_digest("login", cookie), form.get("csrf", "")):
        raise CsrfRefused(
            "the login form expired or did not come from this dashboard: "
            "reload the page and try again"
        )
    addr = address(request)
    wait = svc.limiter.blocked_for(addr)
    if wait > 0:
        raise TooManyFailures(
            f"too many failed attempts from {addr}; try again in {wait:.0f} s",
            retry_after=int(wait) + 1,
        )
    secret = form.get("token", "").strip()
    token = tokens.check(svc.ctl, secret) if secret else None
    if token is None:
        svc.limiter.fail(addr)
        why = "the token is wrong, revoked or expired" if secret else "no token given"
        audit(
            svc.ctl,
            "http 401",
            Caller("anonymous", "", addr),
            outcome="refused",
            exit_code=4,
            details={"path": request.url.path, "method": "POST", "error": why},
        )
        raise LoginRefused(f"{why}: paste a token made with `pgferry token create`")
    value = tokens.new_session(svc.ctl, token, svc.cfg.service.session_ttl)
    audit(svc.ctl, "dashboard login", Caller(token.name, token.role, addr))
    return token, value


def logout(svc: Service, request: Request) -> None:
    value = request.cookies.get(SESSION_COOKIE)
    if value:
        tokens.end_session(svc.ctl, value)


def caller(svc: Service, request: Request) -> Caller | None:
    """The person behind the request (the API's check and roles), or None when the
    request carries no credential at all (not counted as a failure: a first visit)."""
    if not request.headers.get("authorization") and not request.cookies.get(SESSION_COOKIE):
        return None
    token = identify(svc, request)
    return Caller(token.name, token.role, address(request))


def can(who: Caller, role: str) -> bool:
    return tokens.rank(who.role) >= tokens.rank(role)


#: a path of this site, and nothing a browser could read as another host (``//host``,
#: ``/\\host``, a tab or newline it would drop first)
_LOCAL_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9/_.~%?=&+:@!$',;*()-]*")


def safe_next(value: Any) -> str:
    """Where to go after the login: a path of this site only, else ``/``."""
    text = str(value or "/")
    return text if _LOCAL_PATH.fullmatch(text) else "/"

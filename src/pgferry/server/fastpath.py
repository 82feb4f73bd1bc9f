"""The two hot reads answered before FastAPI's routing: ``GET /api/runs`` and
``GET /api/admin/production-health`` of a known token.

Contract: :class:`FastPath` is a plain ASGI middleware. A ``GET`` of one of those paths
with a plain query (:func:`_query`: only the route's own parameters, each at most once,
``limit`` digits from 1 to 500), sent with a token the service's token cache holds
(:func:`pgferry.server.auth.known`: no database asked, the address not blocked), is
answered here with the very bytes the route answers, without FastAPI's route matching,
dependency solving and middleware (most of what a kept answer cost):

- ``/api/runs``: :func:`pgferry.server.routes_runs.listing_answer` (kept answers while
  no run changed);
- ``/api/admin/production-health``: when the health and breaker caches are fresh
  (:meth:`pgferry.server.state.Service.cached_health`), the route's answer from them,
  made once per report and breaker state (a report is known by the time it was made).

Anything else goes on to the app untouched and the route answers it: a token seen for
the first time (its check and ``last_used_at``), a refusal (401/403/429, journaled), a
query FastAPI has to judge (422), an unknown environment, a health report to make. A
control database that does not answer is 503 here too, the app's JSON error
(:mod:`pgferry.server.error_reply`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from pgferry.errors import PgferryError
from pgferry.jobs import tokens
from pgferry.server.auth import known
from pgferry.server.error_reply import error_response
from pgferry.server.routes_read import ok, production_health
from pgferry.server.routes_runs import listing_answer
from pgferry.server.state import Service

RUNS = "/api/runs"
HEALTH = "/api/admin/production-health"
#: the query parameters each route reads
PARAMS = {RUNS: ("state", "env", "kind", "limit"), HEALTH: ("env",)}
VIEWER = tokens.rank("viewer")
_HEADERS = [(b"content-type", b"application/json")]

Query = dict[str, str]


def _query(raw: bytes, params: tuple[str, ...] = PARAMS[RUNS]) -> Query | None:
    """The query as the route reads it, or None when the route has to judge it."""
    # as Starlette reads a query string: latin-1, blank values kept
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    out: Query = {}
    for k, v in pairs:
        if k in out or k not in params:
            return None
        out[k] = v
    limit = out.get("limit")
    if limit is not None and not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= 500):
        return None
    return out


async def _runs(svc: Service, role: str, q: Query) -> bytes | None:
    return await listing_answer(
        svc, role, q.get("state"), q.get("env"), q.get("kind"), int(q.get("limit", "50"))
    )


async def _health(svc: Service, role: str, q: Query) -> bytes | None:  # noqa: ARG001
    try:
        name = q.get("env") or svc.production
    except PgferryError:
        return None  # no production configured: the route says so
    if name not in svc.cfg.environments:
        return None
    cached = svc.cached_health(name)
    if cached is None:
        return None  # a health run to make (in a thread): the route's
    # the answer is made of the report and the breaker alone: made once per report
    rep, brk = cached
    made_of = (rep.checked_at, tuple(sorted(brk.items())))
    kept = svc.health_answers.get(name)
    if kept is not None and kept[0] == made_of:
        return kept[1]
    body = bytes(ok(production_health(svc, name, cached)).body)
    svc.health_answers[name] = (made_of, body)
    return body


HANDLERS: dict[str, Callable[[Service, str, Query], Awaitable[bytes | None]]] = {
    RUNS: _runs,
    HEALTH: _health,
}


class FastPath:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app, self.svc = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = HANDLERS.get(scope["path"]) if scope["type"] == "http" else None
        if handler is not None and scope["method"] == "GET":
            q = _query(scope.get("query_string", b""), PARAMS[scope["path"]])
            token = known(self.svc, Request(scope)) if q is not None else None
            if q is not None and token is not None and tokens.rank(token.role) >= VIEWER:
                try:
                    body = await handler(self.svc, token.role, q)
                except PgferryError as e:  # the control database does not answer: 503
                    await error_response(e)(scope, receive, send)
                    return
                if body is not None:
                    headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

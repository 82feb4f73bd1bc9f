"""The hot read answered before FastAPI's routing: ``GET /api/runs`` of a known token.

Contract: :class:`RunsFastPath` is a plain ASGI middleware. A ``GET /api/runs`` whose
query holds nothing but ``state``, ``env``, ``kind`` (each at most once) and ``limit``
(digits, 1 to 500), sent with a token the service's token cache holds
(:func:`pgferry.server.auth.known`: no database asked, the address not blocked), is
answered with :func:`pgferry.server.routes_runs.listing_answer`: the same bytes the
route answers, without FastAPI's route matching, dependency solving and middleware,
which were most of what a kept answer cost. Anything else goes on to the app
untouched and the route answers it: a token seen for the first time (its check and
``last_used_at``), a refusal (401/403/429, journaled), a query FastAPI has to judge
(422). A control database that does not answer is 503 here too, the app's JSON error
(:mod:`pgferry.server.error_reply`).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from pgferry.errors import PgferryError
from pgferry.jobs import tokens
from pgferry.server.auth import known
from pgferry.server.error_reply import error_response
from pgferry.server.routes_runs import listing_answer
from pgferry.server.state import Service

PATH = "/api/runs"
_TEXT = ("state", "env", "kind")
VIEWER = tokens.rank("viewer")
VIEWER = tokens.rank("viewer")
_HEADERS = [(b"content-type", b"application/json")]


def _query(raw: bytes) -> dict[str, str] | None:
    """The query as the route would read it, or None when the route should judge it."""
    # as Starlette reads a query string: latin-1, blank values kept
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    out: dict[str, str] = {}
    for k, v in pairs:
        if k in out or (k not in _TEXT and k != "limit"):
            return None
        out[k] = v
    limit = out.get("limit")
    if limit is not None and not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= 500):
        return None
    return out


class RunsFastPath:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app, self.svc = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "GET":
            q = _query(scope.get("query_string", b""))
            token = known(self.svc, Request(scope)) if q is not None else None
            if q is not None and token is not None and tokens.rank(token.role) >= VIEWER:
                await self._answer(token.role, q, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answer(
        self, role: str, q: dict[str, str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        try:
            body = await listing_answer(
                self.svc,
                role,
                q.get("state"),
                q.get("env"),
                q.get("kind"),
                int(q.get("limit", "50")),
            )
        except PgferryError as e:  # the control database does not answer: 503
            await error_response(e)(scope, receive, send)
            return
        headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

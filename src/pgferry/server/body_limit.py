"""The most a request body may hold: :data:`MAX_BODY` bytes, or 413 before more is read.

Contract: :class:`BodyLimit` is an ASGI middleware, below every other (none of them
reads a body; the hot reads :mod:`pgferry.server.fastpath` answers never reach it). A
request whose ``Content-Length`` says more than :data:`MAX_BODY` is answered 413
(:class:`BodyTooLarge`, JSON, one sentence) without its body being read; one that sends
more than that without saying so (chunked) is stopped by the reader at the first byte
past it, with the same 413 (raised as FastAPI's ``HTTPException``, which FastAPI passes
on as it is while it reads a body, and the app's handler answers in JSON).

Why: the dashboard's login form reads a body before any token is known, and every
other write reads one once a token is; without a bound, one request could make the
server hold as much as it is sent. pgferry's largest real body is a run's
arguments, a few kilobytes.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgferry.errors import BadInput

#: bytes a request body may hold
MAX_BODY = 1 << 20


class BodyTooLarge(BadInput):
    """The request body is larger than the service accepts (HTTP 413)."""

    http_status = 413


def _sentence(size: str, limit: int) -> str:
    return f"the request body is {size}; the service accepts at most {limit:,} bytes"


class BodyLimit:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            from pgferry.server.error_reply import error_response

            e = BodyTooLarge(_sentence(f"{int(length):,} bytes", self.limit), limit=self.limit)
            await error_response(e)(scope, receive, send)
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, _sentence(f"over {self.limit:,} bytes", self.limit))
            return message

        await self.app(scope, bounded, send)

"""How the service answers a :class:`~pgferry.errors.PgferryError`: one place for the app's
exception handler and the short way past routing (:mod:`pgferry.server.fastpath`).

Contract: :func:`error_response` is JSON ``{"ok": false, "error": <class>, "message":
<one sentence>, "exit_code": N, "details": ..., "field": ...}`` (redacted) with the
error's HTTP status (:func:`status_of`) and ``Retry-After`` when the error says when.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from pgferry.errors import BadInput, PgferryError
from pgferry.redaction import redact_tree


def error_body(e: PgferryError) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, **e.to_dict()}
    if "field" in e.details:
        body["field"] = e.details["field"]
    return dict(redact_tree(body))


def status_of(e: PgferryError) -> int:
    # bad input about one field of a request (an unknown environment) is 422, as the
    # body's own validation errors are
    if isinstance(e, BadInput) and "field" in e.details and e.http_status == 400:
        return 422
    return e.http_status


def error_response(e: PgferryError) -> JSONResponse:
    headers = {"Retry-After": str(e.details["retry_after"])} if "retry_after" in e.details else None
    return JSONResponse(error_body(e), status_code=status_of(e), headers=headers)

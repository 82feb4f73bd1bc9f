"""HTML out, forms in: the dashboard's templates, its two static files, its headers.

Contract: :func:`html` renders a template of ``pgferry/server/templates`` (jinja2,
autoescaped) with the security headers every page carries: a Content-Security-Policy
that allows only this site's own script and style (no inline script, no inline style,
no frame), ``X-Frame-Options: DENY``, ``no-store`` caching and no referrer to other
sites. :func:`static` serves ``dashboard.js`` and ``dashboard.css`` from
``pgferry/server/static`` (no build step, nothing fetched from elsewhere).
:func:`read_form` parses an ``application/x-www-form-urlencoded`` body (the only kind
the dashboard's forms send) into one value per field.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from pgferry.redaction import redact_tree

HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'none'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
MAX_FORM_BYTES = 64 * 1024


def _when(value: Any) -> str:
    """A timestamp as a person reads it, in UTC: 2026-12-06 05:59:11."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return str(value.strftime("%Y-%m-%d %H:%M:%S"))
    return str(value)


def _pretty(value: Any) -> str:
    return json.dumps(redact_tree(value), indent=2, sort_keys=True, default=str, ensure_ascii=False)


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("pgferry.server", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["pretty"] = _pretty
    # charts are SVG the chart module escaped itself
    env.filters["svg"] = Markup
    return env


def html(
    template: str, context: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> HTMLResponse:
    body = environment().get_template(template).render(**context)
    return HTMLResponse(body, status_code=status, headers={**HEADERS, **(headers or {})})


def static(name: str) -> Response:
    kind = STATIC.get(name)
    if kind is None:
        return Response("not found", status_code=404, media_type="text/plain")
    body = resources.files("pgferry.server").joinpath("static", name).read_bytes()
    return Response(
        body,
        media_type=kind,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


async def read_form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))

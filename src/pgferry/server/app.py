"""The admin service: a FastAPI app over :mod:`pgferry.jobs` and :mod:`pgferry.commands`.

Contract: :func:`create_app` builds the app for a config: on start-up it creates the
control database's schema (:mod:`pgferry.jobs.control`) and, unless ``worker=False``
(``pgferry serve --no-worker``), starts the in-process worker
(:class:`pgferry.jobs.queue.Worker`). Every answer is JSON, errors too:
``{"ok": false, "error": <class>, "message": <one sentence>, ...}`` with the error's
HTTP status (:mod:`pgferry.errors`); a request that does not validate is 422 naming
the field (``field``); an unknown path is a JSON 404. Nothing a response carries
holds a password (:func:`pgferry.redaction.redact_tree`). The routes:
:mod:`pgferry.server.routes_runs` (starting and watching runs) and
:mod:`pgferry.server.routes_read` (what the environments hold; health; metrics).
OpenAPI at ``/docs``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from pgferry import __version__
from pgferry.config import Config
from pgferry.errors import PgferryError
from pgferry.jobs.control import Control
from pgferry.jobs.runs_version import VersionReader
from pgferry.redaction import redact, redact_tree
from pgferry.server.error_reply import error_response
from pgferry.server.guard import Limiter, TokenCache
from pgferry.server.runs_cache import AnswerCache
from pgferry.server.state import Service

log = logging.getLogger("pgferry.server")


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "header", "path")]
    return ".".join(parts) or "body"


def validation_body(errors: list[Any]) -> dict[str, Any]:
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid"}
    loc = tuple(first.get("loc", ()))
    fld = _field(loc)
    if first.get("type") == "json_invalid":
        fld, msg = "body", "the body is not valid JSON"
    elif first.get("type") == "extra_forbidden":
        msg = "unknown field"
    else:
        msg = str(first.get("msg", "invalid"))
    return {
        "ok": False,
        "error": "BadInput",
        "message": f"{fld}: {msg}",
        "field": fld,
        "exit_code": 2,
        "details": redact_tree(
            [
                {
                    "field": _field(tuple(e.get("loc", ()))),
                    "message": e.get("msg"),
                    "type": e.get("type"),
                }
                for e in errors
            ]
        ),
    }


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(PgferryError)
    async def pgferry_error(request: Request, e: PgferryError) -> JSONResponse:  # noqa: ARG001
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError) -> JSONResponse:  # noqa: ARG001
        return JSONResponse(validation_body(list(e.errors())), status_code=422)

    @app.exception_handler(ValidationError)
    async def bad_arguments(request: Request, e: ValidationError) -> JSONResponse:  # noqa: ARG001
        errors = [{**x, "loc": ("arguments", *x["loc"])} for x in e.errors()]
        return JSONResponse(validation_body(errors), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        msg = (
            f"no route {request.method} {request.url.path}"
            if e.status_code == 404
            else str(e.detail)
        )
        return JSONResponse(
            {
                "ok": False,
                "error": "NotFound" if e.status_code == 404 else "HTTPError",
                "message": msg,
                "exit_code": 2,
            },
            status_code=e.status_code,
        )

    @app.exception_handler(Exception)
    async def crash(request: Request, e: Exception) -> JSONResponse:  # noqa: ARG001
        log.error("unexpected error: %s", redact(f"{type(e).__name__}: {e}"))
        return JSONResponse(
            {
                "ok": False,
                "error": type(e).__name__,
                "message": redact(str(e)) or type(e).__name__,
                "exit_code": 3,
            },
            status_code=500,
        )


def _freeze_startup() -> None:
    """Move what start-up made (FastAPI's and pydantic's models, routes, the modules) out of
    the collector's reach: the oldest generation's collections walked all of it, pauses
    that were the slowest answers under load (``GET /api/runs`` in a 10 s bench run: p95
    34 and 65 ms without, 4 and 6 ms with; cycles made while serving are still
    collected)."""
    import gc

    gc.collect()
    gc.freeze()


#: how long stopping waits for the worker and the pools when the control database is gone
GONE_WAIT_S = 1.0
#: the loggers that repeat, while stopping, what the one line said (reconnect attempts)
_NOISY = ("psycopg.pool", "procrastinate")


async def _shut_down(svc: Service) -> None:
    """Stop the worker and close the pools. With the control database gone there is
    nothing to wait for (no job can record its end): one line says so and the process
    stops within seconds instead of waiting out each pool's and the worker's timeouts."""
    import anyio

    from pgferry.jobs.queue import close_deferrers

    why = await anyio.to_thread.run_sync(svc.ctl.unanswered)
    wait = 10.0 if why is None else GONE_WAIT_S
    if why is not None:
        log.error(
            "pgferry serve: stopping without the control database (%s): "
            "runs in flight are taken over by the next worker",
            why,
        )
        for name in _NOISY:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    if svc.worker is not None:
        await anyio.to_thread.run_sync(svc.worker.stop, wait)
    await anyio.to_thread.run_sync(close_deferrers)
    await svc.runs_version.close()
    svc.ctl.close(5.0 if why is None else GONE_WAIT_S)


def create_app(cfg: Config, *, worker: bool = True) -> FastAPI:
    """The admin service for ``cfg`` (see the module docstring)."""
    ctl = Control(cfg, max_size=16)
    svc = Service(
        cfg,
        ctl,
        Limiter(cfg.service.auth_failures, cfg.service.auth_window.total_seconds()),
        TokenCache(),
        VersionReader(ctl),
        AnswerCache(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:  # noqa: ARG001
        import anyio

        await anyio.to_thread.run_sync(ctl.ensure)
        if worker:
            from pgferry.jobs.queue import Worker

            svc.worker = await anyio.to_thread.run_sync(lambda: Worker(cfg, ctl).start())
        _freeze_startup()
        try:
            yield
        finally:
            await _shut_down(svc)

    app = FastAPI(
        title="pgferry admin service",
        version=__version__,
        lifespan=lifespan,
        description="Migrations, syncs, backups and health of a team's PostgreSQL "
        "environments, as runs with live progress and four-eyes approvals.",
    )
    app.state.service = svc
    _handlers(app)
    from pgferry.server.body_limit import BodyLimit

    # innermost (each middleware added wraps the ones before): every body is read below
    # it, known caller or not, and the two above read none, so their answers skip it
    app.add_middleware(BodyLimit)  # no body past MAX_BODY
    from pgferry.server.fastpath import FastPath

    app.add_middleware(FastPath, service=svc)  # the hot reads of a known token
    from pgferry.server.auth import CallerFirst

    app.add_middleware(CallerFirst, service=svc)  # no body read for an unknown caller
    from pgferry.server import dashboard, routes_read, routes_runs

    app.include_router(routes_read.router)
    app.include_router(routes_runs.router)
    app.include_router(dashboard.router)  # the pages at / (issue 15)
    return app

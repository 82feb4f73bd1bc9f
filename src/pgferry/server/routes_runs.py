"""Routes that start and watch runs: the ``/api/admin`` POSTs, ``/api/runs*``,
``/api/releases`` and the dead letters.

Contract: every POST that starts a run goes through :func:`pgferry.jobs.service.submit`
(policy, plan, approval, queue) and answers 202 with the run and its links; the same
``Idempotency-Key`` with the same body answers with the run it started the first time
(header ``Idempotent-Replayed: true``), with another body 422. ``?wait=SECONDS`` waits
until the run ends or waits for approval (then 200). ``GET /api/runs/{id}/events`` is
Server-Sent Events: every stored event of the run from the start (or after
``Last-Event-ID``), then new ones as they come, named ``batch:progress``, and last
``batch:complete`` or ``batch:error``; ``id:`` is the event's sequence number.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from pgferry.errors import Unreachable
from pgferry.jobs import lifecycle, runs
from pgferry.jobs import service as jobs
from pgferry.jobs.control import Control
from pgferry.jobs.service import Caller, NotFound
from pgferry.redaction import redact_tree
from pgferry.server.auth import require
from pgferry.server.routes_read import env_or_production, ok, service
from pgferry.server.state import Service

router = APIRouter()
Viewer = Annotated[Caller, Depends(require("viewer"))]
Operator = Annotated[Caller, Depends(require("operator"))]
Approver = Annotated[Caller, Depends(require("approver"))]
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
Wait = Annotated[float, Query(ge=0, le=600, description="seconds to wait for the run to end")]
SSE_POLL_S = 0.3


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnvironmentSync(Body):
    mode: Literal["incremental", "full", "verify"]
    source: str
    target: str
    tables: list[str] = Field(default_factory=list)


class ProSync(Body):
    source: str
    tables: list[str] = Field(default_factory=list)


class ProfessionalMigration(Body):
    #: default: production
    env: str | None = None
    sync: ProSync | None = None


class RunRequest(Body):
    kind: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ReleaseRequest(Body):
    #: default: production
    env: str | None = None
    source: str
    tables: list[str] = Field(default_factory=list)


class Approve(Body):
    #: the plan hash the approver looked at (default: the run's)
    plan_hash: str | None = None


class Reject(Body):
    reason: str


def run_view(run: runs.ServiceRun) -> dict[str, Any]:
    d = run.to_dict()
    if run.kind == "professional_migration":
        d["data"] = (run.result or {}).get("data") or {
            "migratedCount": 0,
            "duration": None,
            "errors": [],
            "report": None,
        }
        if run.error and run.error not in d["data"]["errors"]:
            d["data"]["errors"] = [*d["data"]["errors"], run.error]
    return d


async def _wait(request: Request, run: runs.ServiceRun, wait: float) -> runs.ServiceRun:
    svc = service(request)
    deadline = anyio.current_time() + wait
    while (
        wait
        and not run.final
        and run.state != "awaiting_approval"
        and anyio.current_time() < deadline
    ):
        await asyncio.sleep(0.2)
        now = await anyio.to_thread.run_sync(runs.get, svc.ctl, run.id)
        run = now if now is not None else run
    return run


async def _submit(
    request: Request,
    kind: str,
    arguments: dict[str, Any],
    caller: Caller,
    key: str | None,
    wait: float,
) -> JSONResponse:
    svc = service(request)
    run, created = await anyio.to_thread.run_sync(
        lambda: jobs.submit(svc.cfg, svc.ctl, kind, arguments, caller, idempotency_key=key)
    )
    run = await _wait(request, run, wait)
    status = 200 if wait and (run.final or run.state == "awaiting_approval") else 202
    resp = ok(
        {
            "ok": True,
            "id": run.id,
            "state": run.state,
            "run": run_view(run),
            "links": runs.links(run.id),
            **({"data": run_view(run)["data"]} if kind == "professional_migration" else {}),
        },
        status,
    )
    if not created:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


@router.post("/api/admin/environment-sync", tags=["admin"], status_code=202)
async def environment_sync(
    request: Request, body: EnvironmentSync, caller: Operator, key: IdemKey = None, wait: Wait = 0
) -> JSONResponse:
    """Sync (incremental, full) or verify ``source`` into ``target``."""
    if body.mode == "verify":
        args: dict[str, Any] = {"source": body.source, "target": body.target, "tables": body.tables}
        return await _submit(request, "verify", args, caller, key, wait)
    return await _submit(request, "sync", body.model_dump(), caller, key, wait)


@router.post("/api/admin/professional-migration", tags=["admin"], status_code=202)
async def professional_migration(
    request: Request,
    body: ProfessionalMigration,
    caller: Operator,
    key: IdemKey = None,
    wait: Wait = 0,
) -> JSONResponse:
    """``migrate up`` on production, then (with ``sync``) the source's rows into it."""
    env = env_or_production(service(request), body.env)
    args = {"env": env, "sync": body.sync.model_dump() if body.sync else None}
    return await _submit(request, "professional_migration", args, caller, key, wait)


@router.post("/api/releases", tags=["runs"], status_code=202)
async def release(
    request: Request, body: ReleaseRequest, caller: Operator, key: IdemKey = None, wait: Wait = 0
) -> JSONResponse:
    """The release saga: backup → migrate up → sync → verify → health."""
    env = env_or_production(service(request), body.env)
    args = {"env": env, "source": body.source, "tables": body.tables}
    return await _submit(request, "release", args, caller, key, wait)


@router.post("/api/runs", tags=["runs"], status_code=202)
async def run_create(
    request: Request, body: RunRequest, caller: Operator, key: IdemKey = None, wait: Wait = 0
) -> JSONResponse:
    """Any operation: ``kind`` (migrate_up, migrate_undo, sync, verify, sync_revert,
    backup_create, backup_verify, backup_restore, backup_prune, health, release,
    professional_migration) and its ``arguments``."""
    return await _submit(request, body.kind, body.arguments, caller, key, wait)


def _listing_body(
    ctl: Control, state: str | None, env: str | None, kind: str | None, limit: int
) -> bytes:
    found = runs.listing(ctl, limit=limit, state=state, env=env, kind=kind, brief=True)
    return bytes(ok({"ok": True, "runs": [r.summary() for r in found]}).body)


async def listing_answer(
    svc: Service, role: str, state: str | None, env: str | None, kind: str | None, limit: int
) -> bytes:
    """The body of ``GET /api/runs`` for a caller of ``role``: kept while no run changed
    (:mod:`pgferry.server.runs_cache`), else made in a thread; Unreachable (503) when
    the control database does not answer."""

    def make() -> Awaitable[bytes]:
        return anyio.to_thread.run_sync(_listing_body, svc.ctl, state, env, kind, limit)

    try:
        # read after this request came: any run changed before it is in the answer
        version = await svc.runs_version.read()
    except Unreachable:
        return await make()  # answered (or refused) the way it was without kept answers
    return await svc.runs_answers.answer((role, state, env, kind, limit), version, make)


@router.get("/api/runs", tags=["runs"])
async def run_list(
    request: Request,
    caller: Viewer,
    state: str | None = None,
    env: str | None = None,
    kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """The newest runs, newest first."""
    body = await listing_answer(service(request), caller.role, state, env, kind, limit)
    return Response(body, media_type="application/json")


@router.get("/api/dead-letters", tags=["runs"])
def dead_letters(request: Request, caller: Viewer) -> JSONResponse:  # noqa: ARG001
    """Runs that failed for good, with their errors; ``POST /api/runs/{id}/retry`` queues
    one again."""
    return ok({"ok": True, "runs": [r.summary() for r in runs.dead_letters(service(request).ctl)]})


def _run(request: Request, run_id: str) -> runs.ServiceRun:
    run = runs.get(service(request).ctl, run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}")
    return run


@router.get("/api/runs/{run_id}", tags=["runs"])
def run_get(request: Request, run_id: str, caller: Viewer) -> JSONResponse:  # noqa: ARG001
    """One run: its plan and plan hash, approval, state, result (a release: its steps)."""
    return ok({"ok": True, "run": run_view(_run(request, run_id))})


@router.post("/api/runs/{run_id}/approve", tags=["approvals"])
def run_approve(
    request: Request, run_id: str, caller: Approver, body: Approve | None = None
) -> JSONResponse:
    """Approve the run's plan (a different person than who asked; bound to the plan hash)."""
    svc = service(request)
    run = jobs.approve(svc.cfg, svc.ctl, run_id, caller, plan_hash=body.plan_hash if body else None)
    return ok({"ok": True, "run": run_view(run)})


@router.post("/api/runs/{run_id}/reject", tags=["approvals"])
def run_reject(request: Request, run_id: str, body: Reject, caller: Approver) -> JSONResponse:
    """Reject the run, with a reason."""
    return ok(
        {
            "ok": True,
            "run": run_view(lifecycle.reject(service(request).ctl, run_id, caller, body.reason)),
        }
    )


@router.post("/api/runs/{run_id}/cancel", tags=["runs"])
def run_cancel(request: Request, run_id: str, caller: Operator) -> JSONResponse:
    """Cancel a run (a running one stops at its next event, rolled back)."""
    return ok({"ok": True, "run": run_view(lifecycle.cancel(service(request).ctl, run_id, caller))})


@router.post("/api/runs/{run_id}/retry", tags=["runs"], status_code=202)
def run_retry(request: Request, run_id: str, caller: Operator) -> JSONResponse:
    """Queue a failed or cancelled run again."""
    run = lifecycle.retry(service(request).ctl, run_id, caller)
    return ok({"ok": True, "id": run.id, "state": run.state, "run": run_view(run)}, 202)


def sse_name(event: dict[str, Any]) -> str:
    kind = event.get("type")
    return {"complete": "batch:complete", "error": "batch:error"}.get(str(kind), "batch:progress")


def sse_message(seq: int, event: dict[str, Any]) -> str:
    data = json.dumps(redact_tree(event), default=str, ensure_ascii=False)
    return f"id: {seq}\nevent: {sse_name(event)}\ndata: {data}\n\n"


@router.get("/api/runs/{run_id}/events", tags=["runs"])
async def run_events(
    request: Request,
    run_id: str,
    caller: Viewer,  # noqa: ARG001
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    after: int = 0,
) -> StreamingResponse:
    """Server-Sent Events of the run, replayed from its start, then live."""
    svc = service(request)
    await anyio.to_thread.run_sync(_run, request, run_id)
    start = int(last_event_id) if last_event_id and last_event_id.isdigit() else after

    async def stream() -> AsyncIterator[str]:
        seen = start
        idle = 0.0
        yield "retry: 1000\n\n"
        while True:
            batch = await anyio.to_thread.run_sync(runs.events, svc.ctl, run_id, seen)
            ended = False
            for seq, ev in batch:
                seen = seq
                yield sse_message(seq, ev)
                ended = ended or sse_name(ev) != "batch:progress"
            if await request.is_disconnected():
                return
            if ended or not batch:  # the stream ends when the run has and nothing is left
                run = await anyio.to_thread.run_sync(runs.get, svc.ctl, run_id)
                if run is None or (
                    run.final
                    and not await anyio.to_thread.run_sync(runs.events, svc.ctl, run_id, seen)
                ):
                    return
                idle += SSE_POLL_S
                if idle >= 15:
                    idle = 0.0
                    yield ": keep-alive\n\n"
            await asyncio.sleep(SSE_POLL_S)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )

"""Runs: every operation the service starts, with its state, plan, approval and events.

Contract: a run is one row of ``pgferry_control.runs`` (:class:`ServiceRun`); its progress
events are rows of ``pgferry_control.run_events`` in the order they were published
(``seq``), kept with the run so a stream can be replayed from the start. States:

- ``awaiting_approval``: writes to a protected environment; waits for a second person
  (``approved`` moves it to ``queued``; ``rejected`` ends it);
- ``queued`` → ``running`` → ``succeeded`` (exit 0), ``problem`` (exit 1: it ran to its
  end and found something: differences, dead letters, a degraded health), ``failed``
  (exit 2-4, or the worker running it died and it cannot be resumed) or ``cancelled``.

A failed run whose job will not be tried again is a dead letter (:func:`dead_letters`)
until it is retried. :func:`create` honours an ``Idempotency-Key``: the same key with
the same request returns the run it made first (``created`` False); with another
request it raises :class:`IdempotencyConflict`. Every text stored is redacted.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb

from pgferry.errors import BadInput
from pgferry.jobs.control import Control
from pgferry.redaction import redact, redact_tree

State = Literal[
    "awaiting_approval",
    "rejected",
    "queued",
    "running",
    "succeeded",
    "problem",
    "failed",
    "cancelled",
]
FINAL: frozenset[str] = frozenset({"rejected", "succeeded", "problem", "failed", "cancelled"})
_COLUMNS = (
    "id, kind, env, arguments, state, requested_by, requested_from, plan, plan_hash,"
    " approved_by, approved_at, decided_reason, idempotency_key, request_hash, job_id,"
    " attempts, schedule, result, error, exit_code, cancel_requested, created_at,"
    " started_at, finished_at"
)
#: what :meth:`ServiceRun.summary` shows: a listing need not carry plans and results
_SUMMARY = (
    "id, kind, env, arguments, state, requested_by, approved_by, schedule, attempts,"
    " exit_code, error, created_at, started_at, finished_at"
)


class IdempotencyConflict(BadInput):
    """The Idempotency-Key was used before with a different request (HTTP 422)."""

    http_status = 422


def digest(value: Any) -> str:
    """sha256 of ``value`` as canonical JSON (sorted keys): plans and request bodies."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def state_of(exit_code: int) -> State:
    return "succeeded" if exit_code == 0 else "problem" if exit_code == 1 else "failed"


@dataclass
class ServiceRun:
    id: str
    kind: str
    env: str
    arguments: dict[str, Any]
    state: str
    requested_by: str
    requested_from: str | None = None
    plan: dict[str, Any] | None = None
    plan_hash: str | None = None
    approved_by: str | None = None
    approved_at: datetime | None = None
    decided_reason: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    job_id: int | None = None
    attempts: int = 0
    schedule: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    exit_code: int | None = None
    cancel_requested: bool = False
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    links: dict[str, str] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return round((self.finished_at - self.started_at).total_seconds(), 3)
        return None

    def summary(self) -> dict[str, Any]:
        """The run without its plan and result (lists)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "env": self.env,
            "state": self.state,
            "arguments": self.arguments,
            "requested_by": self.requested_by,
            "approved_by": self.approved_by,
            "schedule": self.schedule,
            "attempts": self.attempts,
            "exit_code": self.exit_code,
            "error": self.error,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_s": self.duration_s,
            "links": links(self.id),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "requested_from": self.requested_from,
            "plan": self.plan,
            "plan_hash": self.plan_hash,
            "approved_at": _iso(self.approved_at),
            "reason": self.decided_reason,
            "cancel_requested": self.cancel_requested,
            "result": self.result,
        }


def links(run_id: str) -> dict[str, str]:
    base = f"/api/runs/{run_id}"
    return {
        "self": base,
        "events": f"{base}/events",
        "cancel": f"{base}/cancel",
        "approve": f"{base}/approve",
        "reject": f"{base}/reject",
    }


def _iso(d: datetime | None) -> str | None:
    return d.isoformat() if d is not None else None


def _run(row: Mapping[str, Any] | None) -> ServiceRun | None:
    return ServiceRun(**row) if row is not None else None


def new_id() -> str:
    return secrets.token_hex(6)


def create(
    ctl: Control,
    *,
    kind: str,
    env: str,
    arguments: Mapping[str, Any],
    requested_by: str,
    state: State,
    requested_from: str | None = None,
    plan: Mapping[str, Any] | None = None,
    plan_hash: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    schedule: str | None = None,
    decided_reason: str | None = None,
    error: str | None = None,
    exit_code: int | None = None,
) -> tuple[ServiceRun, bool]:
    """A new run, or (with ``idempotency_key``) the run that key made before."""
    rid = new_id()
    final = state in FINAL
    with ctl.conn() as c:
        try:
            row = c.execute(
                f"INSERT INTO pgferry_control.runs (id, kind, env, arguments, state,"  # noqa: S608
                " requested_by, requested_from, plan, plan_hash, idempotency_key,"
                " request_hash, schedule, decided_reason, error, exit_code, finished_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " CASE WHEN %s THEN now() END)"
                f" RETURNING {_COLUMNS}",
                [
                    rid,
                    kind,
                    env,
                    Jsonb(redact_tree(dict(arguments))),
                    state,
                    requested_by,
                    requested_from,
                    Jsonb(redact_tree(dict(plan))) if plan is not None else None,
                    plan_hash,
                    idempotency_key,
                    request_hash,
                    schedule,
                    decided_reason,
                    redact(error) if error else None,
                    exit_code,
                    final,
                ],
            ).fetchone()
        except psycopg.errors.UniqueViolation:
            if idempotency_key is None:
                raise
            old = by_key(ctl, idempotency_key)
            assert old is not None
            if old.request_hash != request_hash:
                raise IdempotencyConflict(
                    f"Idempotency-Key {idempotency_key!r} was used for another request "
                    f"(run {old.id}); use a new key for a new request",
                    field="Idempotency-Key",
                    run=old.id,
                ) from None
            return old, False
    run = _run(row)
    assert run is not None
    return run, True


def by_key(ctl: Control, key: str) -> ServiceRun | None:
    with ctl.conn() as c:
        return _run(
            c.execute(
                f"SELECT {_COLUMNS} FROM pgferry_control.runs WHERE idempotency_key = %s",  # noqa: S608
                [key],
            ).fetchone()
        )


def get(ctl: Control, run_id: str) -> ServiceRun | None:
    with ctl.conn() as c:
        return _run(
            c.execute(
                f"SELECT {_COLUMNS} FROM pgferry_control.runs WHERE id = %s",  # noqa: S608
                [run_id],
            ).fetchone()
        )


def listing(
    ctl: Control,
    *,
    limit: int = 50,
    state: str | None = None,
    env: str | None = None,
    kind: str | None = None,
    before: datetime | None = None,
    brief: bool = False,
) -> list[ServiceRun]:
    """The newest runs (filters are optional), newest first; ``brief``: only what
    :meth:`ServiceRun.summary` shows is read (no plan, no result)."""
    with ctl.conn() as c:
        rows = c.execute(
            f"SELECT {_SUMMARY if brief else _COLUMNS} FROM pgferry_control.runs"  # noqa: S608
            " WHERE (%(state)s::text IS NULL OR state = %(state)s)"
            " AND (%(env)s::text IS NULL OR env = %(env)s)"
            " AND (%(kind)s::text IS NULL OR kind = %(kind)s)"
            " AND (%(before)s::timestamptz IS NULL OR created_at < %(before)s)"
            " ORDER BY created_at DESC, id LIMIT %(limit)s",
            {"state": state, "env": env, "kind": kind, "before": before, "limit": limit},
        ).fetchall()
    return [r for r in map(_run, rows) if r is not None]


def dead_letters(ctl: Control, limit: int = 100) -> list[ServiceRun]:
    """Failed runs, newest first: what failed for good and waits to be looked at or retried."""
    return listing(ctl, limit=limit, state="failed")


_SETTABLE = {
    "state",
    "plan",
    "plan_hash",
    "approved_by",
    "approved_at",
    "decided_reason",
    "job_id",
    "attempts",
    "result",
    "error",
    "exit_code",
    "cancel_requested",
    "started_at",
    "finished_at",
}


def update(
    ctl: Control, run_id: str, *, expect: Iterable[str] | None = None, **fields: Any
) -> ServiceRun | None:
    """Set ``fields`` of the run; with ``expect``, only while its state is one of those
    (None: the run was not in such a state; nothing changed)."""
    from psycopg import sql

    unknown = set(fields) - _SETTABLE
    if unknown:
        raise ValueError(f"cannot set {', '.join(sorted(unknown))} of a run")
    values: list[Any] = []
    parts: list[sql.Composable] = []
    for k, v in fields.items():
        if v == "now()":
            parts.append(sql.SQL("{} = now()").format(sql.Identifier(k)))
            continue
        parts.append(sql.SQL("{} = %s").format(sql.Identifier(k)))
        if k in ("plan", "result") and v is not None:
            v = Jsonb(redact_tree(v))
        elif k in ("error", "decided_reason") and isinstance(v, str):
            v = redact(v)
        values.append(v)
    where = sql.SQL("id = %s")
    values.append(run_id)
    if expect is not None:
        where = sql.SQL("id = %s AND state = ANY(%s)")
        values.append(list(expect))
    query = sql.SQL("UPDATE pgferry_control.runs SET {} WHERE {} RETURNING {}").format(
        sql.SQL(", ").join(parts), where, sql.SQL(_COLUMNS)
    )
    with ctl.conn() as c:
        return _run(c.execute(query, values).fetchone())


def add_events(ctl: Control, run_id: str, events: list[dict[str, Any]]) -> None:
    """Store ``events`` (event dicts with a ``type``) in order, redacted."""
    if not events:
        return
    with ctl.conn() as c, c.cursor() as cur:
        cur.executemany(
            "INSERT INTO pgferry_control.run_events (run_id, type, data) VALUES (%s, %s, %s)",
            [(run_id, str(e.get("type", "notice")), Jsonb(redact_tree(e))) for e in events],
        )


def events(
    ctl: Control, run_id: str, after: int = 0, limit: int = 1000
) -> list[tuple[int, dict[str, Any]]]:
    """The run's events after ``seq`` ``after``, oldest first: (seq, event dict)."""
    with ctl.conn() as c:
        rows = c.execute(
            "SELECT seq, data FROM pgferry_control.run_events WHERE run_id = %s AND seq > %s"
            " ORDER BY seq LIMIT %s",
            [run_id, after, limit],
        ).fetchall()
    return [(int(r["seq"]), dict(r["data"])) for r in rows]

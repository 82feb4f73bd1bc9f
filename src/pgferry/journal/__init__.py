"""Append-only record of every operation, kept in the target database.

Contract:

- :func:`operation` wraps a command that writes: before the block runs it writes a
  ``start`` row (who, what, arguments) on a connection of its own and holds a session
  advisory lock for the run; when the block ends it writes the ``end`` row (outcome,
  exit code, duration, details, and for anything but ``ok`` the error). A run whose
  process dies (SIGKILL, a lost connection) keeps its start row and reads ``died``
  in :func:`read` and in the view ``pgferry.journal``. ``create=False`` writes only
  where a journal already exists (a read-only command never creates pgferry's schema).
- :func:`refused` / :func:`refusals` journal a command refused by policy (outcome
  ``refused``, exit 4, the reason; or ``problem`` for a check such as validate that
  stopped it) where the journal exists; nothing is created for it.
- :func:`append` adds one finished row; :func:`read` the newest runs;
  :func:`verify` recomputes the hash chain (:mod:`pgferry.journal.chain`).
- Who: ``db_role`` is the server's ``session_user``; ``os_user`` the account of the
  process (its real uid), not a variable anyone can set.
- Arguments and details are redacted before they are written; pgferry never updates
  or deletes journal rows (the table's layout and triggers: :mod:`pgferry.journal.schema`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgferry import jsonio
from pgferry.errors import PgferryError, ProblemFound, Refused
from pgferry.journal import chain
from pgferry.journal import schema as schema
from pgferry.pg.connect import Target, connect, os_user, redact

#: a row's phase: a run's ``start`` and ``end`` rows, or one ``once`` row (a refusal)
Phase = Literal["start", "end", "once"]
#: how a run ended (``running``: a start row whose end has not come, or never will: died)
Outcome = Literal["ok", "problem", "bad_input", "failed", "refused", "running", "planned"]
_OUTCOMES: dict[int, Outcome] = {1: "problem", 2: "bad_input", 4: "refused"}
_INSERT = (
    "INSERT INTO pgferry.journal_log (phase, run_id, os_user, env, command, arguments,"
    " outcome, exit_code, duration_ms, error, details)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
)


def ensure(conn: psycopg.Connection[Any]) -> None:
    """Create (or repair) pgferry's schema and journal; idempotent, safe under concurrency.

    A trigger someone dropped or disabled is re-created, and a row says so.
    """
    restored = schema.ensure(conn)
    if restored:
        _insert(
            conn,
            "once",
            None,
            "journal",
            {},
            "problem",
            1,
            None,
            f"trigger {', '.join(restored)} of pgferry.journal_log was dropped or disabled; "
            "pgferry re-created it",
            {"restored_triggers": restored},
            env="",
        )


def scrub(value: Any, key: str = "") -> Any:
    """``value`` with secrets removed: secret-looking keys masked, DSNs redacted."""
    if isinstance(value, Mapping):
        return {str(k): scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, key) for v in value]
    if isinstance(value, str):
        low = key.lower()
        if any(s in low for s in ("password", "secret", "token")) and value:
            return "***"
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def _json(value: Mapping[str, Any] | None) -> Jsonb:
    return Jsonb(scrub(jsonio.loads(jsonio.dumps(dict(value or {}), default=str))))


def _insert(
    conn: psycopg.Connection[Any],
    phase: Phase,
    run_id: int | None,
    command: str,
    arguments: Mapping[str, Any] | None,
    outcome: Outcome,
    exit_code: int | None,
    duration_ms: int | None,
    error: str | None,
    details: Mapping[str, Any] | None,
    *,
    env: str,
) -> int:
    """One chained row; the chain lock is taken first, so ids follow the chain's order."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [schema.CHAIN_LOCK])
        row = conn.execute(
            _INSERT,
            [
                phase,
                run_id,
                os_user(),
                env,
                command,
                _json(arguments),
                outcome,
                exit_code,
                duration_ms,
                redact(error) if error else None,
                _json(details),
            ],
        ).fetchone()
    assert row is not None
    return int(row[0])


def _open(target: Target, create: bool, retry_for: float = 5) -> psycopg.Connection[Any] | None:
    """A connection to write the journal on, or None where there is none and ``create`` is
    False."""
    c = connect(
        target.dsn, autocommit=True, retry_for=retry_for, application_name="pgferry journal"
    )
    try:
        if not create and not schema.exists(c):
            c.close()
            return None
        ensure(c)
    except BaseException:
        c.close()
        raise
    return c


def append(
    target: Target,
    command: str,
    *,
    outcome: Outcome,
    arguments: Mapping[str, Any] | None = None,
    exit_code: int = 0,
    duration_ms: int | None = None,
    details: Mapping[str, Any] | None = None,
    conn: psycopg.Connection[Any] | None = None,
    create: bool = True,
    error: str | None = None,
    retry_for: float = 5,
) -> None:
    """Append one finished row to ``target`` (on ``conn`` if given, else a fresh one).

    ``create=False``: write only where the journal already exists.
    """
    c = conn if conn is not None else _open(target, create, retry_for)
    if c is None:
        return
    try:
        if conn is not None:
            if not create and not schema.exists(c):
                return
            ensure(c)
        _insert(
            c,
            "once",
            None,
            command,
            arguments,
            outcome,
            exit_code,
            duration_ms,
            error,
            details,
            env=target.name,
        )
    finally:
        if conn is None:
            c.close()


def warn(target: Target, e: BaseException) -> None:
    """One stderr line: the journal of ``target`` could not be written (the command goes on)."""
    print(
        f"warning: could not write the journal of {target.name}: "
        f"{redact(str(e)).splitlines()[0] if str(e) else type(e).__name__}",
        file=sys.stderr,
    )


def refused(
    target: Target, command: str, error: PgferryError, arguments: Mapping[str, Any] | None = None
) -> None:
    """Journal a command that was stopped before it ran, where the journal exists: refused by
    policy (``refused``, exit 4) or stopped by a check that found a problem (``problem``)."""
    if getattr(error, "journaled", False):
        return
    try:
        append(
            target,
            command,
            outcome=_OUTCOMES.get(error.exit_code, "failed"),
            arguments=arguments,
            exit_code=error.exit_code,
            details={"error": error.message, **error.details},
            create=False,
            error=error.message,
            retry_for=1,
        )  # the refusal must not wait
        error.journaled = True  # type: ignore[attr-defined]
    except (PgferryError, psycopg.Error) as e:
        warn(target, e)


@contextmanager
def refusals(
    target: Target, command: str, arguments: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """Journal a :class:`~pgferry.errors.Refused` (or a
    :class:`~pgferry.errors.ProblemFound` of a check) raised in the block, see :func:`refused`."""
    try:
        yield
    except (Refused, ProblemFound) as e:
        refused(target, command, e, arguments)
        raise


@dataclass
class Operation:
    """What a journaled command fills in while it runs."""

    details: dict[str, Any] = field(default_factory=dict)
    outcome: Outcome = "ok"
    exit_code: int = 0


@dataclass
class _Run:
    conn: psycopg.Connection[Any]
    id: int


def _start(
    target: Target, command: str, arguments: Mapping[str, Any] | None, create: bool
) -> _Run | None:
    c = _open(target, create)
    if c is None:
        return None
    try:
        if c.info.server_version >= 140000:  # the session (and its lock) must outlive idling
            c.execute("SELECT set_config('idle_session_timeout', '0', false)")
        with c.transaction():  # the lock is held before the row is visible
            run_id = _insert(
                c,
                "start",
                None,
                command,
                arguments,
                "running",
                None,
                None,
                None,
                None,
                env=target.name,
            )
            c.execute("SELECT pg_advisory_lock(%s, %s)", [schema.RUN_LOCK, run_id % 2147483647])
    except BaseException:
        c.close()
        raise
    return _Run(c, run_id)


def _error_of(op: Operation) -> str | None:
    if op.outcome == "ok":
        return None
    err = op.details.get("error")
    if not err and op.outcome == "problem":  # a finding, not an error: the details say it
        return None
    return str(err) if err else f"{op.outcome} (exit {op.exit_code})"


def _finish(
    target: Target,
    run: _Run | None,
    command: str,
    arguments: Mapping[str, Any] | None,
    op: Operation,
    ms: int,
    create: bool,
) -> None:
    if "ok" in op.details:  # a caller's summary must not contradict the outcome
        op.details["ok"] = op.outcome == "ok"
    err = _error_of(op)
    if run is None:
        append(
            target,
            command,
            outcome=op.outcome,
            arguments=arguments,
            exit_code=op.exit_code,
            duration_ms=ms,
            details=op.details,
            create=create,
            error=err,
        )
        return
    try:
        conn = run.conn
        if conn.broken or conn.closed:
            conn = _open(target, True) or conn
        _insert(
            conn,
            "end",
            run.id,
            command,
            None,
            op.outcome,
            op.exit_code,
            ms,
            err,
            op.details,
            env=target.name,
        )
        if conn is not run.conn:
            conn.close()
    finally:
        run.conn.close()  # ends the session: its run lock goes with it


@contextmanager
def operation(
    target: Target,
    command: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    create: bool = True,
) -> Iterator[Operation]:
    """Journal the block in ``target``: a start row now, the outcome when it ends (also
    when it raises, and as ``died`` when the process does not live to say).

    ``create=False``: journal only where the journal already exists.
    """
    op = Operation()
    start = time.monotonic()
    run: _Run | None = None
    try:
        run = _start(target, command, arguments, create)
    except (PgferryError, psycopg.Error) as e:
        warn(target, e)  # the command itself will say whether the database answers
    try:
        yield op
    except PgferryError as e:
        op.outcome = _OUTCOMES.get(e.exit_code, "failed")
        op.exit_code = e.exit_code
        op.details.setdefault("error", e.message)
        for k, v in e.details.items():  # sqlstate, the server's detail and hint ...
            op.details.setdefault(k, v)
        e.journaled = True  # type: ignore[attr-defined]
        raise
    except KeyboardInterrupt:
        op.outcome, op.exit_code = "failed", 3
        op.details.setdefault("error", "interrupted (Ctrl-C or SIGTERM)")
        raise
    except BaseException as e:
        op.outcome, op.exit_code = "failed", 3
        op.details.setdefault("error", redact(f"{type(e).__name__}: {e}"))
        raise
    finally:
        try:
            _finish(
                target, run, command, arguments, op, int((time.monotonic() - start) * 1000), create
            )
        except (PgferryError, psycopg.Error) as e:
            warn(target, e)


_READ = (
    "SELECT id, at, os_user, db_role, env, command, arguments, outcome, exit_code,"
    " duration_ms, details, error, finished_at FROM pgferry.journal"
    " ORDER BY id DESC LIMIT %s"
)
_READ_LEGACY = (
    "SELECT id, at, os_user, db_role, env, command, arguments, outcome, exit_code,"
    " duration_ms, details FROM pgferry.journal ORDER BY id DESC LIMIT %s"
)


def read(target: Target, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` runs of ``target``, newest first ([] when there is no journal)."""
    with connect(target.dsn, autocommit=True) as c:
        kind, log, _ = schema.state(c)
        if kind is None:
            return []
        return (
            c.cursor(row_factory=dict_row)
            .execute(_READ if log else _READ_LEGACY, [limit])
            .fetchall()
        )


def verify(target: Target, kept: str | None = None) -> chain.ChainReport:
    """Recompute the journal's hash chain in ``target`` (read-only); ``kept``: a head printed
    earlier, which must still be in it."""
    with connect(target.dsn, autocommit=True, application_name="pgferry journal verify") as c:
        return chain.verify(c, kept)

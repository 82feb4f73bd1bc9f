"""Non-transactional files: statement by statement in autocommit, with progress.

Contract: :func:`run_autocommit` runs a file whose statements cannot run in
a transaction block (``CREATE INDEX CONCURRENTLY`` & co.) on the runner's work
connection with session-level ``lock_timeout``/``statement_timeout``; each
completed statement is recorded in ``pgferry.migration_progress`` (see
:mod:`pgferry.migrate.progress`): a statement that can run in a transaction (and
cannot commit by itself, as a ``CALL`` or ``DO`` can) commits in one with its
record, so a run that dies or fails between the two never leaves it applied but
unrecorded (the next run would apply it again). A failure writes
Flyway's ``success = false`` row and where it stopped; a later run resumes after
the completed statements (their digests must still match) and first drops the
INVALID index a failed concurrent build of the statement left behind, found by
name or by definition (:mod:`pgferry.migrate.leftovers`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import psycopg

from pgferry.errors import Refused
from pgferry.migrate import progress
from pgferry.migrate.leftovers import drop_leftovers
from pgferry.migrate.locks import Waiting
from pgferry.migrate.plan import Step
from pgferry.migrate.statements import ParsedFile, Statement
from pgferry.pg import errors as pgerrors

if TYPE_CHECKING:
    from pgferry.migrate.runner import FileResult, Runner


#: statements that may COMMIT themselves (a procedure or DO block committing in batches)
SELF_COMMITTING = frozenset({"CallStmt", "DoStmt"})


def alone(stmt: Statement) -> bool:
    """Runs in autocommit on its own, its progress recorded after it; every other statement
    commits in one transaction with its progress record."""
    return bool(stmt.non_tx) or stmt.kind in SELF_COMMITTING


def resume_point(step: Step, pf: ParsedFile, prog: progress.Progress | None) -> int:
    if prog is None or not prog.done_digests:
        return 0
    for i, d in enumerate(prog.done_digests):
        if i >= len(pf.statements) or pf.statements[i].digest != d:
            raise Refused(
                f"{step.script}: statement {i + 1} was applied in an earlier, failed run and "
                "has changed since; restore it, or restart the file from its first "
                "statement (pgferry.migrate.progress.forget) once the database matches",
                script=step.script,
                statement=i + 1,
            )
    return len(prog.done_digests)


def run_autocommit(
    r: Runner, step: Step, pf: ParsedFile, undo: bool, prog: progress.Progress | None
) -> FileResult:
    c, s = r.work, r.settings
    version = str(step.version) if step.version is not None else None
    resume, total = resume_point(step, pf, prog), len(pf.statements)
    start = time.monotonic()
    retries, dropped = 0, []
    again = "migrate undo" if undo else "migrate up"
    progress.ensure(c)
    progress.start(
        c,
        s.schema,
        s.table,
        script=step.script,
        version=version,
        checksum=step.checksum,
        total=total,
        runner_pid=r.lock.conn.info.backend_pid if r.lock.conn else 0,
    )
    stmt: Statement | None = None
    seen: Waiting | None = None
    attempts, completed = 0, resume
    try:
        for stmt in pf.statements[resume:]:
            attempts, seen = 0, None
            for attempt in r._retrying(step):
                with attempt:
                    attempts += 1
                    r._set_timeouts(local=False, lock_timeout=r.lock_timeout_for(seen))
                    dropped += drop_leftovers(c, stmt)
                    with r._watcher() as w:
                        try:
                            if alone(stmt):  # its record can only follow it
                                c.execute(stmt.text.encode())
                            else:  # it commits with its record: a re-run never repeats it
                                with c.transaction():
                                    c.execute(stmt.text.encode())
                                    progress.step_done(
                                        c, s.schema, s.table, step.script, stmt.digest
                                    )
                        finally:
                            seen = w.seen or seen
            retries += attempts - 1
            if alone(stmt):
                progress.step_done(c, s.schema, s.table, step.script, stmt.digest)
            completed += 1
        ms = int((time.monotonic() - start) * 1000)
        r._check_lock(step)
        with c.transaction():
            rank = r._history_row(
                version, step.description, step.script, step.checksum, ms, True, undo, step.undoes
            )
            progress.forget(c, s.schema, s.table, step.script)
    except psycopg.Error as e:
        n = completed
        if n == total:  # all applied, the history row not: a failed row, `repair` records it
            record_failure(r, step, None, e, undo, int((time.monotonic() - start) * 1000))
            raise r._server_error(
                step,
                None,
                e,
                f"all {n} statements are applied and recorded, but the history row of the file "
                f"could not be written; run `pgferry migrate repair`, then `{again}` records it",
            ) from None
        if n:  # partly applied: Flyway's failed row, `repair` needed before a re-run
            record_failure(r, step, stmt, e, undo, int((time.monotonic() - start) * 1000))
            tail = (
                f"this file runs outside a transaction: statements 1-{n} are applied and "
                f"recorded; fix the cause, run `pgferry migrate repair`, then `{again}` "
                f"resumes at statement {n + 1}"
            )
        else:  # nothing applied (a failed concurrent build is cleaned up on retry)
            forget_quietly(r, step)
            tail = f"nothing of this file was applied; fix the cause and run `{again}` again"
        if pgerrors.lock_timeout(e):
            raise r._lock_error(
                step, stmt, attempts, seen, "statement" + (f"; {tail}" if n else "")
            ) from None
        raise r._server_error(step, stmt, e, tail) from None
    finally:
        if not c.closed and not c.broken:
            c.execute("RESET lock_timeout")
            c.execute("RESET statement_timeout")
    from pgferry.migrate.runner import FileResult  # runner imports this module

    return FileResult(
        step.script,
        version,
        step.kind,
        "autocommit",
        int((time.monotonic() - start) * 1000),
        1 + retries,
        len(pf.statements),
        resumed_after=resume,
        installed_rank=rank,
        dropped_invalid_indexes=dropped,
    )


def record_failure(
    r: Runner, step: Step, stmt: Statement | None, e: psycopg.Error, undo: bool, ms: int
) -> None:
    """Flyway's ``success = false`` row plus where it stopped (best effort)."""
    from pgferry.migrate.runner import server_message

    try:
        with r.work.transaction():
            progress.failed(
                r.work,
                r.settings.schema,
                r.settings.table,
                step.script,
                statement=stmt.index + 1 if stmt else None,
                line=stmt.line if stmt else None,
                error=server_message(e),
            )
            r._history_row(
                str(step.version) if step.version is not None else None,
                step.description,
                step.script,
                step.checksum,
                ms,
                False,
                undo,
            )
    except psycopg.Error:
        pass  # the connection is gone; the next run settles the 'running' row


def forget_quietly(r: Runner, step: Step) -> None:
    """Nothing of the file was applied: forget its progress so a re-run starts clean."""
    try:
        progress.forget(r.work, r.settings.schema, r.settings.table, step.script)
    except psycopg.Error:
        pass  # the connection is gone; the next run settles the 'running' row

"""The migration runner: executes planned steps against one database, safely.

API (the checks are :mod:`pgferry.migrate.service`'s; policy and the journal are
:mod:`pgferry.commands.migrate_run`'s)::

    with Runner(target, RunSettings.from_config(cfg), on_event=publish) as r:  # takes the lock
        r.settle_interrupted()              # interrupted non-tx files -> failed rows
        rows = r.history()
        results = r.apply([(step, parsed), ...], undo=False)

- ``Runner.__enter__`` takes the session advisory lock on a dedicated
  connection (:class:`~pgferry.migrate.locks.MigrationLock`), terminates work
  backends left by an interrupted run, opens one autocommit *work* connection
  (``client_connection_check_interval`` set, so a killed client's statement is
  cancelled by the server) and creates the history table if missing.
- A transactional file runs in one transaction: ``set_config('lock_timeout',
  ..., true)`` (= ``SET LOCAL``) and ``statement_timeout``, its statements,
  then its history row (Flyway's layout, ``installed_by`` = the database role
  as Flyway writes it). A server error rolls it all back: no history row.
- A file with statements that cannot run in a transaction runs statement by
  statement in autocommit with session-level timeouts, recording progress in
  ``pgferry.migration_progress`` (layout and the repair protocol:
  :mod:`pgferry.migrate.progress`). A failure records Flyway's
  ``success = false`` row and the failing statement; after ``repair`` a re-run
  resumes after the completed statements, dropping an INVALID index left by a
  failed ``CREATE INDEX CONCURRENTLY`` before retrying it.
- Lock timeouts (SQLSTATE 55P03) roll back and retry with exponential backoff
  and jitter (tenacity) up to ``lock_retries``; then
  :class:`~pgferry.errors.LockUnavailable` names the lock and its holders,
  sampled from the lock connection while waiting.
- Progress: :mod:`pgferry.migrate.events` (MigrationStarted, LockRetry,
  MigrationFinished) to the ``on_event`` subscriber.
- Hooks for ``migrate repair``/``status``: :func:`clear_progress`,
  :func:`failed_statements`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from pgferry.config import Config
from pgferry.errors import BadInput, LockUnavailable, OperationFailed
from pgferry.events import Subscriber, ignore
from pgferry.migrate import history, nontx, progress
from pgferry.migrate.events import LockRetry, MigrationFinished, MigrationStarted
from pgferry.migrate.files import parse_name
from pgferry.migrate.history import SQL, HistoryRow, undo_row
from pgferry.migrate.locks import (
    LockWatcher,
    MigrationLock,
    Waiting,
    lock_key,
    terminate_orphans,
    work_app_name,
)
from pgferry.migrate.plan import Step
from pgferry.migrate.settings import FileResult as FileResult
from pgferry.migrate.settings import RunSettings as RunSettings
from pgferry.migrate.statements import ParsedFile, Statement
from pgferry.pg import errors as pgerrors
from pgferry.pg.connect import (
    APP_NAME,
    Target,
    connect,
    map_db_error,
    redact,
    with_server_lines,
)

#: how far past deadlock_timeout a retry facing autovacuum waits
AUTOVACUUM_MARGIN_MS = 500


def label(step: Step) -> str:
    """How progress lines name a file: ``V3 add email``, ``U3 add email``, ``R refresh view``."""
    v = f"{step.kind}{step.version} " if step.version is not None else "R "
    return f"{v}{step.description}"


def server_message(e: psycopg.Error, *, detail: bool = True) -> str:
    """The server's message (and, with ``detail``, its DETAIL in parentheses) on one line,
    redacted: for the progress table and ``status``. Errors shown to the user carry the
    DETAIL and HINT on lines of their own (:func:`pgferry.pg.connect.with_server_lines`)."""
    d = e.diag
    text = (d.message_primary or str(e)).strip().splitlines()[0] if d else str(e)
    if detail and d and d.message_detail:
        text += f" ({' '.join(d.message_detail.split())})"
    return redact(text)


def _retryable(e: BaseException) -> bool:
    """Lock timeout, or a deadlock the server broke by cancelling us: roll back, try again."""
    return pgerrors.retry_statement(e)


class Runner:
    """Executes steps on ``target`` while holding the migration lock (a context manager)."""

    def __init__(
        self,
        target: Target,
        settings: RunSettings,
        *,
        on_event: Subscriber | None = None,
        application_name: str | None = None,
    ) -> None:
        self.target, self.settings = target, settings
        self.on_event: Subscriber = on_event or ignore
        self.key = lock_key(settings.schema, settings.table)
        self.lock = MigrationLock(
            target.dsn,
            self.key,
            wait=settings.lock_wait,
            application_name=application_name or f"{APP_NAME} migrate",
        )
        self.conn: psycopg.Connection[Any] | None = None
        self.pid = 0
        self.role = ""
        self.orphans: list[int] = []
        self.deadlock_timeout_ms = 1000  # read from the server on enter
        self.done: list[FileResult] = []  # files applied by this runner so far

    # -- lifecycle -------------------------------------------------------------
    def __enter__(self) -> Runner:
        self.lock.acquire()
        try:
            lc = self.lock.conn
            assert lc is not None
            lock_pid = lc.info.backend_pid
            self.orphans = terminate_orphans(lc, self.key, {lock_pid})
            self.conn = connect(
                self.target.dsn, autocommit=True, application_name=work_app_name(self.key)
            )
            self.pid = self.conn.info.backend_pid
            self._session()
            row = self.conn.execute(
                "SELECT current_user, setting::int FROM pg_settings WHERE name = 'deadlock_timeout'"
            ).fetchone()
            if row:
                self.role, self.deadlock_timeout_ms = str(row[0]), int(row[1])
            self._no_history_elsewhere()
            with self.conn.transaction():
                history.ensure_table(self.conn, self.settings.schema, self.settings.table)
        except psycopg.Error as e:
            self.__exit__()
            raise map_db_error(e, f"cannot prepare {self.target.name}") from None
        except BaseException:
            self.__exit__()
            raise
        return self

    def _no_history_elsewhere(self) -> None:
        """BadInput when the configured history table is missing but one of its name is in
        another schema: starting an empty history here would apply every file again."""
        schema, table = self.settings.schema, self.settings.table
        other = history.elsewhere(self.work, schema, table)
        if other:
            advice = history.elsewhere_advice(f"{schema}.{table}", other)
            raise BadInput(f"{self.target.name}: {advice}", history=other)

    def _session(self, *, reset: bool = False) -> None:
        """The work session every file starts from; ``reset`` first undoes what a file set
        for the session (``SET search_path``, ``SET ROLE`` ... persist after its commit), so
        a file runs alike whether earlier files ran in the same run or in another one."""
        c = self.work
        if reset:
            c.execute("RESET ALL")
            c.execute("RESET ROLE")
        if c.info.server_version >= 140000:
            c.execute("SELECT set_config('client_connection_check_interval', '1000', false)")
        # Unqualified names resolve to [migrate] schema first (as Flyway does with its
        # default schema): else "$user" in search_path sends CREATE TABLE into a schema
        # named like the role (the embedded role `pgferry` meets schema `pgferry`).
        c.execute(
            "SELECT set_config('search_path', %s || ', ' || current_setting('search_path'), false)",
            [psycopg.sql.Identifier(self.settings.schema).as_string(c)],
        )

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.lock.release()

    @property
    def work(self) -> psycopg.Connection[Any]:
        assert self.conn is not None, "use Runner as a context manager"
        return self.conn

    def history(self) -> list[history.HistoryRow]:
        return history.read(self.work, self.settings.schema, self.settings.table)

    def progress_rows(self) -> list[progress.Progress]:
        return progress.read_progress(self.work, self.settings.schema, self.settings.table)

    def settle_interrupted(self) -> list[str]:
        """Files a killed run left mid-way: record them failed (as Flyway would have).

        We hold the lock, so a ``running`` progress row belongs to a dead run. One
        killed before its first statement completed is simply forgotten (nothing
        of it was applied). Returns one description per file recorded failed.
        """
        out = []
        for p in self.progress_rows():
            if p.state != "running":
                continue
            if p.statements_done == 0:  # nothing applied: start it afresh, no repair needed
                progress.forget(self.work, self.settings.schema, self.settings.table, p.script)
                continue
            mf = parse_name(Path(p.script))
            desc = mf.description if mf else p.script
            undo = bool(mf and mf.kind == "U")
            with self.work.transaction():
                progress.failed(
                    self.work,
                    self.settings.schema,
                    self.settings.table,
                    p.script,
                    statement=(
                        p.statements_done + 1 if p.statements_done < p.statements_total else None
                    ),
                    line=None,
                    error=progress.INTERRUPTED,
                )
                self._history_row(p.version, desc, p.script, p.checksum, 0, False, undo)
            out.append(p.describe())
        return out

    # -- execution ---------------------------------------------------------------
    def apply(
        self, steps: list[tuple[Step, ParsedFile]], *, undo: bool = False
    ) -> list[FileResult]:
        """Run ``steps`` in order; stops at the first failure (raising). Returns results."""
        done = self.done  # kept on the runner, so a caller still sees them after a failure
        known = {p.script: p for p in self.progress_rows()}
        total = len(steps)
        for i, (step, pf) in enumerate(steps, 1):
            self._check_lock(step)
            self.on_event(MigrationStarted(step.script, label(step), i, total, undo))
            if pf.transactional:
                r = self._run_transactional(step, pf, undo)
            else:
                r = nontx.run_autocommit(self, step, pf, undo, known.get(step.script))
            done.append(r)
            self._session(reset=True)
            self.on_event(
                MigrationFinished(
                    step.script,
                    label(step),
                    i,
                    total,
                    r.mode,
                    r.duration_ms,
                    undo,
                    r.attempts,
                    r.resumed_after,
                    list(r.dropped_invalid_indexes),
                )
            )
        return done

    def _check_lock(self, step: Step) -> None:
        """Stop if the lock connection died (terminated): another run could start.

        Checked before each file and again just before a file's history row is
        written, so a file commits only while this run still holds the lock."""
        try:
            assert self.lock.conn is not None
            self.lock.conn.execute("SELECT 1")
        except psycopg.Error:
            raise OperationFailed(
                f"lost the migration lock (its connection was closed or terminated); stopped "
                f"at {step.script}, which is not recorded as applied; run `pgferry migrate up` "
                "again",
                script=step.script,
            ) from None

    def _retrying(self, step: Step) -> Retrying:
        """Retry lock timeouts/deadlocks with exponential backoff and jitter, reporting each."""

        def report(rs: RetryCallState) -> None:
            self.on_event(
                LockRetry(
                    step.script, label(step), rs.attempt_number, self.settings.lock_retries + 1
                )
            )

        return Retrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self.settings.lock_retries + 1),
            wait=wait_random_exponential(
                multiplier=max(self.settings.lock_timeout_s, 0.05), max=10
            ),
            before_sleep=report,
            reraise=True,
        )

    def _watcher(self) -> LockWatcher:
        assert self.lock.conn is not None
        # sample a few times per lock_timeout (at most once a second; 0 = no timeout)
        lt = self.settings.lock_timeout_s
        return LockWatcher(self.lock.conn, self.pid, min(max(lt / 3, 0.05), 1.0) if lt else 1.0)

    def _history_row(
        self,
        version: str | None,
        description: str,
        script: str,
        checksum: int | None,
        ms: int,
        success: bool,
        undo: bool,
        undoes: HistoryRow | None = None,
    ) -> int:
        """Flyway's row for a file; for an undo, see :func:`undo_row`."""
        kind = SQL
        if undo:
            kind, description, script, checksum, ms = undo_row(
                self.settings.undo_history, success, undoes, description, script, checksum, ms
            )
        return history.insert(
            self.work,
            self.settings.schema,
            self.settings.table,
            version=version,
            description=description,
            type=kind,
            script=script,
            checksum=checksum,
            installed_by=self.role,
            execution_time=ms,
            success=success,
        )

    def _lock_error(
        self, step: Step, stmt: Statement | None, attempts: int, seen: Any, scope: str = "file"
    ) -> LockUnavailable:
        what = seen.describe() if seen else "a lock (its holder had gone when sampled)"
        at = f" at line {stmt.line}" if stmt else ""
        av = (
            "; autovacuum did not yield even after deadlock_timeout (a vacuum against "
            "transaction-id wraparound never does: let it finish)"
            if seen is not None and seen.autovacuum
            else ""
        )
        return LockUnavailable(
            f"{step.script}{at}: could not get {what} within lock_timeout "
            f"{self.settings.lock_timeout} after {attempts} attempts{av}; nothing of this {scope} "
            "was "
            "applied. Retry when the blocking session is done, or raise [migrate] lock_retries",
            script=step.script,
            line=stmt.line if stmt else None,
            lock=seen.__dict__ if seen else None,
        )

    def lock_timeout_for(self, seen: Waiting | None) -> str:
        """``lock_timeout`` for the next attempt: past ``deadlock_timeout`` when autovacuum
        blocked the last one (the server cancels an autovacuum for a lock waiter only once
        the waiter has waited ``deadlock_timeout``; a shorter wait never gets the lock)."""
        configured = int(self.settings.lock_timeout_s * 1000)
        if seen is not None and seen.autovacuum and configured > 0:
            return f"{max(configured, self.deadlock_timeout_ms + AUTOVACUUM_MARGIN_MS)}ms"
        return self.settings.lock_timeout

    def _set_timeouts(self, *, local: bool, lock_timeout: str | None = None) -> None:
        """``SET [LOCAL] lock_timeout / statement_timeout`` in one round trip."""
        lt = lock_timeout or self.settings.lock_timeout
        if self.settings.statement_timeout:
            self.work.execute(
                "SELECT set_config('lock_timeout', %s, %s),"
                " set_config('statement_timeout', %s, %s)",
                [lt, local, self.settings.statement_timeout, local],
            )
        else:
            self.work.execute("SELECT set_config('lock_timeout', %s, %s)", [lt, local])

    def _run_transactional(self, step: Step, pf: ParsedFile, undo: bool) -> FileResult:
        c, attempts, seen = self.work, 0, None
        current: Statement | None = None
        version = str(step.version) if step.version is not None else None
        start = time.monotonic()
        try:
            for attempt in self._retrying(step):
                with attempt:
                    attempts += 1
                    t0 = time.monotonic()
                    current = None
                    with self._watcher() as w:
                        try:
                            with c.transaction():
                                self._set_timeouts(
                                    local=True, lock_timeout=self.lock_timeout_for(seen)
                                )
                                for current in pf.statements:
                                    c.execute(current.text.encode())
                                ms = int((time.monotonic() - t0) * 1000)
                                self._check_lock(step)  # commit only while we hold the lock
                                rank = self._history_row(
                                    version,
                                    step.description,
                                    step.script,
                                    step.checksum,
                                    ms,
                                    True,
                                    undo,
                                    step.undoes,
                                )
                        finally:
                            seen = w.seen or seen
        except psycopg.Error as e:
            if pgerrors.lock_timeout(e):
                raise self._lock_error(step, current, attempts, seen) from None
            raise self._server_error(
                step,
                current,
                e,
                "nothing of this file was applied (its transaction was rolled back)",
            ) from None
        return FileResult(
            step.script,
            version,
            step.kind,
            "transaction",
            int((time.monotonic() - start) * 1000),
            attempts,
            len(pf.statements),
            installed_rank=rank,
        )

    def _server_error(
        self, step: Step, stmt: Statement | None, e: psycopg.Error, tail: str
    ) -> OperationFailed:
        err = map_db_error(e)
        at = f":{stmt.line}" if stmt else ""
        n = f" (statement {stmt.index + 1})" if stmt else ""
        text = f"{step.script}{at}{n}: {server_message(e, detail=False)}; {tail}"
        return OperationFailed(
            with_server_lines(text, e),
            script=step.script,
            line=stmt.line if stmt else None,
            **err.details,
        )


# -- hooks for repair and status ------------------------------------------------


def clear_progress(conn: psycopg.Connection[Any], cfg: Config, scripts: list[str]) -> int:
    """``repair`` calls this after deleting failed rows: keep completed statements, mark the
    failure cleared, so the next ``up`` resumes after them (see :mod:`progress`)."""
    return progress.mark_repaired(conn, cfg.migrate.schema_, cfg.migrate.history_table, scripts)


def failed_statements(conn: psycopg.Connection[Any], cfg: Config) -> dict[str, dict[str, Any]]:
    """For ``status``: where each failed/interrupted non-transactional file stopped, by script."""
    out = {}
    for p in progress.read_progress(conn, cfg.migrate.schema_, cfg.migrate.history_table):
        out[p.script] = {
            "state": p.state,
            "statement": p.failed_statement,
            "line": p.failed_line,
            "error": p.error,
            "statements_done": p.statements_done,
            "statements_total": p.statements_total,
            "describe": p.describe(),
        }
    return out

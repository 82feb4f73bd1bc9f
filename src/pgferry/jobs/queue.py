"""The job queue (procrastinate, in the control database), the worker and the schedules.

Contract:

- :func:`defer` puts a run on the queue as a job of task ``pgferry.run`` with the
  procrastinate *lock* ``env:<environment>``: jobs on one environment run one at a
  time, in the order they were queued; jobs on different environments run in
  parallel. (A procrastinate *queueing lock* would refuse a second job instead of
  queueing it; schedules use one, below.)
- :class:`Worker` runs jobs: in ``pgferry serve`` on a thread of its own (the
  in-process worker), in ``pgferry worker`` in the foreground. It registers every
  ``[[schedule]]`` as a procrastinate periodic task with the lock of its environment
  and the queueing lock ``schedule:<name>``: a schedule never has two copies queued,
  and never two running (the environment's lock).
- Workers say they are alive every ``[service] heartbeat``; a job whose worker fell
  silent for ``stalled_after`` (killed, its machine gone) is taken over by any live
  worker (:meth:`Worker.sweep`): a run that can resume (sync, migrate, verify, health,
  backups, a release's saga) is queued again and resumes; one that cannot safely
  (``backup_restore``, ``sync_revert``) is marked failed with the reason. Never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from typing import Any

from procrastinate import App, JobContext, PsycopgConnector, SyncPsycopgConnector

from pgferry.config import Config, ScheduleConfig
from pgferry.jobs import claim, runner, runs
from pgferry.jobs.control import Control
from pgferry.jobs.operations import KINDS

QUEUE = "pgferry"
RUN_TASK = "pgferry.run"
SCHEDULE_TASK = "pgferry.schedule"
log = logging.getLogger("pgferry.jobs")


def env_lock(env: str) -> str:
    return f"env:{env}"


# -- deferring (any process: the server's request threads, the CLI) ----------------------

_deferrers: dict[str, App] = {}
_deferrers_lock = threading.Lock()


def _deferrer(ctl: Control) -> App:
    """A procrastinate app with a synchronous pool, for deferring from any thread."""
    with _deferrers_lock:
        app = _deferrers.get(ctl.dsn)
        if app is None:
            app = App(connector=SyncPsycopgConnector(conninfo=ctl.dsn, min_size=1, max_size=4))
            app.open()
            _deferrers[ctl.dsn] = app
        return app


def defer(ctl: Control, run: runs.ServiceRun) -> int:
    """Queue ``run``; its procrastinate job id (stored with the run)."""
    op = KINDS[run.kind]
    env = op.env(op.args.model_validate(run.arguments))
    job_id = (
        _deferrer(ctl)
        .configure_task(RUN_TASK, queue=QUEUE, lock=env_lock(env))
        .defer(run_id=run.id)
    )
    runs.update(ctl, run.id, job_id=job_id)
    return int(job_id)


def close_deferrers() -> None:
    with _deferrers_lock:
        for app in _deferrers.values():
            with contextlib.suppress(Exception):
                app.close()
        _deferrers.clear()


# -- schedules ------------------------------------------------------------------------


def schedule_run(s: ScheduleConfig) -> tuple[str, dict[str, Any]]:
    """The run kind and arguments a schedule starts."""
    if s.operation in ("sync", "verify"):
        a: dict[str, Any] = {"source": s.source, "target": s.target, "tables": s.tables}
        if s.operation == "sync":
            a["mode"] = s.mode
        return s.operation, a
    kind = {
        "backup": "backup_create",
        "backup_verify": "backup_verify",
        "backup_prune": "backup_prune",
        "health": "health",
        "migrate_up": "migrate_up",
    }[s.operation]
    args: dict[str, Any] = {"env": s.env}
    if s.operation == "backup" and s.prune:
        args["prune"] = True
    return kind, args


def schedule_env(s: ScheduleConfig) -> str:
    return str(s.target or s.env)


# -- the worker ------------------------------------------------------------------------


class Worker:
    """A procrastinate worker running pgferry's jobs (and schedules, and the sweep)."""

    def __init__(
        self,
        cfg: Config,
        ctl: Control,
        *,
        name: str | None = None,
        concurrency: int | None = None,
        schedules: bool = True,
    ) -> None:
        self.cfg, self.ctl = cfg, ctl
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.concurrency = concurrency or cfg.service.concurrency
        self.app = self._app(schedules)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[Any] | None = None
        self._thread: threading.Thread | None = None
        self.started = threading.Event()
        self.error: BaseException | None = None

    def _app(self, schedules: bool) -> App:
        app = App(
            connector=PsycopgConnector(
                conninfo=self.ctl.dsn, kwargs={"application_name": "pgferry worker"}
            )
        )
        cfg, ctl = self.cfg, self.ctl

        @app.task(name=RUN_TASK, queue=QUEUE, pass_context=True)
        def run_task(context: JobContext, run_id: str) -> None:  # noqa: ARG001
            with contextlib.suppress(claim.RunElsewhere):  # it goes on there; not twice
                runner.execute(cfg, ctl, run_id)

        @app.task(name=SCHEDULE_TASK, queue=QUEUE, pass_context=True)
        def schedule_task(context: JobContext, timestamp: int, name: str) -> None:  # noqa: ARG001
            s = next((x for x in cfg.schedule if x.name == name), None)
            if s is None:
                return  # removed from the config since it was queued
            kind, args = schedule_run(s)
            run, _ = runs.create(
                ctl,
                kind=kind,
                env=schedule_env(s),
                arguments=args,
                requested_by=f"schedule:{name}",
                state="queued",
                schedule=name,
                idempotency_key=f"schedule:{name}:{timestamp}",
                request_hash=runs.digest([kind, args]),
            )
            runner.execute(cfg, ctl, run.id)

        if schedules:
            for s in self.cfg.schedule:
                app.periodic(
                    cron=s.cron,
                    periodic_id=s.name,
                    queue=QUEUE,
                    lock=env_lock(schedule_env(s)),
                    queueing_lock=f"schedule:{s.name}",
                    task_kwargs={"name": s.name},
                )(schedule_task)
        return app

    # -- taking over the jobs of workers that died --------------------------------------

    async def sweep(self) -> list[str]:
        """Jobs whose worker stopped saying it is alive: resume or fail their runs."""
        seconds = self.cfg.service.stalled_after.total_seconds()
        taken: list[str] = []
        for job in await self.app.job_manager.get_stalled_jobs(
            queue=QUEUE, seconds_since_heartbeat=seconds
        ):
            run_id = job.task_kwargs.get("run_id")
            run = runs.get(self.ctl, str(run_id)) if run_id else None
            op = KINDS.get(run.kind) if run else None
            assert job.id is not None
            if run is None or op is None or run.final:
                await self.app.job_manager.finish_job_by_id_async(
                    job.id, status=_failed(), delete_job=False
                )
                continue
            if op.resumable:
                await self.app.job_manager.retry_job_by_id_async(job.id, retry_at=_now())
                runs.update(self.ctl, run.id, state="queued")
                runner.announce(
                    self.ctl,
                    run.id,
                    "the worker running it stopped (killed or lost); queued again to resume",
                    "resume",
                    "queued",
                )
            else:
                await self.app.job_manager.finish_job_by_id_async(
                    job.id, status=_failed(), delete_job=False
                )
                rec = runner.Recorder(self.ctl, run.id, cfg=self.cfg)
                runner.finish(
                    self.ctl,
                    run.id,
                    rec,
                    "failed",
                    3,
                    None,
                    f"the worker running this {run.kind} stopped (killed or lost) "
                    "before it ended; it is not resumed (not safe to repeat): "
                    "check the environment and its journal, then retry",
                )
            taken.append(run.id)
        return taken

    async def _sweeper(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as e:  # noqa: BLE001 - the sweep tries again next beat
                log.warning("sweep failed: %s", e)
            await asyncio.sleep(self.cfg.service.heartbeat.total_seconds())

    # -- running ---------------------------------------------------------------------

    async def run_async(self) -> None:
        """Run until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        async with self.app.open_async():
            sweeper = asyncio.create_task(self._sweeper())
            self.started.set()
            try:
                await self.app.run_worker_async(
                    queues=[QUEUE],
                    name=self.name,
                    concurrency=self.concurrency,
                    install_signal_handlers=False,
                    shutdown_graceful_timeout=5,
                    update_heartbeat_interval=self.cfg.service.heartbeat.total_seconds(),
                    stalled_worker_timeout=self.cfg.service.stalled_after.total_seconds(),
                    listen_notify=True,
                    fetch_job_polling_interval=1.0,
                )
            finally:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper

    def _thread_main(self) -> None:
        try:
            asyncio.run(self.run_async())
        except asyncio.CancelledError:
            pass
        except BaseException as e:  # noqa: BLE001 - kept for the caller to see
            self.error = e
            self.started.set()

    def start(self) -> Worker:
        """Run on a daemon thread (the in-process worker of ``pgferry serve``)."""
        self._thread = threading.Thread(
            target=self._thread_main, name="pgferry-worker", daemon=True
        )
        self._thread.start()
        self.started.wait(30)
        if self.error is not None:
            raise self.error
        return self

    def stop(self, timeout: float = 10) -> None:
        loop, main = self._loop, self._main
        if loop is not None and main is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(main.cancel)
        if self._thread is not None:
            self._thread.join(timeout)


def _failed() -> Any:
    from procrastinate.jobs import Status

    return Status.FAILED


def _now() -> Any:
    from procrastinate import utils

    return utils.utcnow()

"""``pgferry serve``, ``pgferry worker``, ``pgferry token create|list|revoke`` and
``pgferry release``: the admin service from the command line.

Contract: ``serve`` runs the HTTP API (uvicorn) on ``[service] host``/``port``
(127.0.0.1:8765 by default) with an in-process worker unless ``--no-worker``;
``worker`` runs jobs and schedules in the foreground until SIGINT/SIGTERM;
``token create`` prints the new token once (only its hash is kept); ``release`` runs
the release saga in this process (:mod:`pgferry.jobs.saga`), its state in the control
database like a service run's, ``--resume RUN_ID`` carries on one that was
interrupted.
"""

from __future__ import annotations

import getpass
import os
import signal
from typing import Annotated, Any

import typer

from pgferry.cli.common import JsonOpt, YesOpt, state
from pgferry.errors import BadInput


def register(app: typer.Typer) -> None:
    _serve(app)
    _worker(app)
    _token(app)
    _release(app)


def _serve(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        ctx: typer.Context,
        host: Annotated[
            str | None,
            typer.Option("--host", help="Address to bind (default [service] host: 127.0.0.1)."),
        ] = None,
        port: Annotated[
            int | None,
            typer.Option("--port", help="Port (default [service] port: 8765; 0: any free one)."),
        ] = None,
        no_worker: Annotated[
            bool,
            typer.Option(
                "--no-worker", help="Do not run jobs in this process (run `pgferry worker`)."
            ),
        ] = False,
    ) -> None:
        """Run the admin HTTP API (OpenAPI at /docs) and, by default, a worker."""
        import uvicorn

        from pgferry.server.app import create_app

        st = state(ctx)
        cfg = st.config()
        bind = host or cfg.service.host
        if bind not in ("127.0.0.1", "localhost", "::1"):
            st.note(
                f"warning: binding {bind}: the API is reachable from other machines; "
                "put TLS in front of it"
            )
        uvicorn.run(
            create_app(cfg, worker=not no_worker),
            host=bind,
            port=cfg.service.port if port is None else port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=10,
            # the caller's address is the socket's: a forwarded-for header is any local
            # process's say-so (it would spoof the journal and escape the failure limit),
            # believed only from the proxies FORWARDED_ALLOW_IPS names (uvicorn's variable)
            proxy_headers=bool(os.environ.get("FORWARDED_ALLOW_IPS")),
        )


def _worker(app: typer.Typer) -> None:
    @app.command("worker")
    def worker(
        ctx: typer.Context,
        concurrency: Annotated[
            int | None,
            typer.Option("--concurrency", help="Jobs at once (default [service] concurrency)."),
        ] = None,
    ) -> None:
        """Run queued jobs and the [[schedule]] entries until SIGINT or SIGTERM."""
        import asyncio

        from pgferry.jobs.control import Control
        from pgferry.jobs.queue import Worker

        st = state(ctx)
        cfg = st.config()
        ctl = Control(cfg).ensure()
        w = Worker(cfg, ctl, concurrency=concurrency)
        st.note(f"worker {w.name}: {len(cfg.schedule)} schedule(s); Ctrl-C stops it")

        async def main() -> None:
            loop = asyncio.get_running_loop()
            task = asyncio.create_task(w.run_async())
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            try:
                await task
            except asyncio.CancelledError:
                pass

        asyncio.run(main())
        ctl.close()


def _token(app: typer.Typer) -> None:
    token_app = typer.Typer(help="API tokens of the admin service.", no_args_is_help=True)
    app.add_typer(token_app, name="token")

    @token_app.command("create")
    def create(
        ctx: typer.Context,
        name: Annotated[str, typer.Option("--name", help="Whose token (a person or a bot).")],
        role: Annotated[
            str, typer.Option("--role", help="viewer, operator, approver or admin.")
        ] = "viewer",
        json_: JsonOpt = False,
    ) -> None:
        """Make a token; it is printed once, only its hash is kept."""
        from pgferry.jobs import tokens
        from pgferry.jobs.control import Control
        from pgferry.jobs.service import audit

        st = state(ctx, json_)
        ctl = Control(st.config()).ensure()
        made = tokens.create(ctl, name, role)
        audit(ctl, "token create", _me(), details={"name": name, "role": role})
        ctl.close()

        def render(out: Any) -> None:
            out.print(made.secret, soft_wrap=True)
            st.note(f"token {name!r} ({role}) made: it is shown once; only its hash is kept")

        st.emit(made.to_dict(), render)

    @token_app.command("list")
    def listing(
        ctx: typer.Context,
        all_: Annotated[bool, typer.Option("--all", help="Revoked ones too.")] = False,
        json_: JsonOpt = False,
    ) -> None:
        """Tokens: name, role, created, last used (never the token)."""
        from pgferry.jobs import tokens
        from pgferry.jobs.control import Control

        st = state(ctx, json_)
        ctl = Control(st.config()).ensure()
        found = tokens.listing(ctl, include_revoked=all_)
        ctl.close()

        def render(out: Any) -> None:
            if not found:
                out.print("no tokens: pgferry token create --name NAME --role ROLE")
            for t in found:
                used = t.last_used_at.strftime("%Y-%m-%d %H:%M") if t.last_used_at else "never"
                gone = f"  revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else ""
                out.print(
                    f"{t.name:<20} {t.role:<9} created {t.created_at:%Y-%m-%d %H:%M}"
                    f"  last used {used}{gone}"
                )

        st.emit({"ok": True, "tokens": [t.to_dict() for t in found]}, render)

    @token_app.command("revoke")
    def revoke(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="The token's name.")],
        json_: JsonOpt = False,
    ) -> None:
        """Revoke a token (and its sessions): the service refuses it within a second."""
        from pgferry.jobs import tokens
        from pgferry.jobs.control import Control
        from pgferry.jobs.service import audit

        st = state(ctx, json_)
        ctl = Control(st.config()).ensure()
        n = tokens.revoke(ctl, name)
        audit(ctl, "token revoke", _me(), details={"name": name})
        ctl.close()
        st.emit({"ok": True, "revoked": n}, lambda out: out.print(f"revoked {name}"))


def _me() -> Any:
    from pgferry.jobs.service import Caller

    return Caller(f"cli:{getpass.getuser()}", "admin", "local")


def _release(app: typer.Typer) -> None:
    @app.command("release")
    def release(
        ctx: typer.Context,
        env: Annotated[
            str | None,
            typer.Option(
                "--env", "-e", help="The environment to release to (default: production)."
            ),
        ] = None,
        source: Annotated[
            str | None, typer.Option("--from", help="Where the rows come from (e.g. dev).")
        ] = None,
        tables: Annotated[
            list[str] | None,
            typer.Option(
                "--table",
                "-t",
                help="A table to sync (repeat; default [service] "
                "release_tables, else [sync] tables).",
            ),
        ] = None,
        resume: Annotated[
            str | None,
            typer.Option("--resume", help="Carry on the release run RUN_ID where it stopped."),
        ] = None,
        yes: YesOpt = False,
        json_: JsonOpt = False,
    ) -> None:
        """Backup → migrate up → sync → verify → health, undone newest first if a step fails."""
        from pgferry.jobs import release as release_mod

        st = state(ctx, json_)
        cfg = st.config()
        if resume is None and source is None:
            raise BadInput("name the source with --from (e.g. --from dev)")
        run = release_mod.run_here(
            cfg,
            env=env,
            source=source,
            tables=list(tables or []),
            resume=resume,
            yes=yes,
            confirm=st.confirm(),
            who=f"cli:{getpass.getuser()}",
            progress=None if st.json else _echo(st),
        )
        result = run.to_dict()
        st.emit({"ok": run.state == "succeeded", **result}, lambda out: _render(out, result))
        if run.state != "succeeded":
            raise typer.Exit(run.exit_code or 3)


def _echo(st: Any) -> Any:
    def show(event: Any) -> None:
        d = event.to_dict()
        if d.get("type") in ("run_step", "notice", "warning"):
            st.note(d.get("message", ""))

    return show


def _render(out: Any, run: dict[str, Any]) -> None:
    steps = (run.get("result") or {}).get("steps") or []
    for s in steps:
        comp = s.get("compensation") or {}
        extra = f"  compensation: {comp.get('action')}" if comp else ""
        out.print(f"{s['step']:<8} {s['state']}{extra}")
    out.print(
        f"release {run['id']}: {run['state']}" + (f" ({run['error']})" if run.get("error") else "")
    )

"""``pgferry backfill run|revert|status``: thin wrappers over :mod:`pgferry.backfill.service`.

Contract: each verb parses its arguments, runs the policy that needs a person (blackout
window, ``--yes`` on a protected environment), calls one service function and renders
its result (one JSON object under ``--json``; progress on stderr: a bar with rows/s on a
terminal, a line every two seconds otherwise). Exit codes: 0 done (or already done);
2 bad input (no such backfill, a file that is not one statement with ``:lo``/``:hi``, a
table without a usable key, ``--where`` that is not one condition, a gate query its source
rejects); 3 failed (lock retries exhausted, paused past ``max_pause``, a gate fired:
stopped, or reverted; interrupted — every one resumable); 4 refused (protected without
``--yes``, blackout window).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pgferry.cli.common import (
    EnvOpt,
    JsonOpt,
    State,
    YesOpt,
    confirm_protected,
    sigterm_interrupts,
    state,
)
from pgferry.policy import blackout_guard

app = typer.Typer(help="Batched backfills: keyset batches, paced, resumable, gated.",
                  no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="backfills/NAME.sql")]
WhereOpt = Annotated[str | None, typer.Option(
    "--where", help="Only rows matching this condition (e.g. \"territory = 'EU'\").")]
OverrideOpt = Annotated[bool, typer.Option("--override-blackout",
                                           help="Run inside a blackout window (needs --reason).")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why; goes into the journal.")]


class _Progress:
    """A bar with keys and rows/s on a terminal; a line every two seconds otherwise."""

    def __init__(self, st: State, name: str) -> None:
        self.st, self.name = st, name
        self.bar: Progress | None = None
        self.task: Any = None
        self.last_line = 0.0

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text, markup=False, soft_wrap=True)
        else:
            self.st.err.print(text, markup=False, soft_wrap=True)

    def event(self, kind: str, data: dict[str, Any]) -> None:
        res = data.get("result")
        if kind == "start":
            est = res.estimate if res is not None else None
            resumed = f", resuming after {data['state'].batches:,} batch(es)" \
                if res is not None and res.resumed else ""
            where = f"{res.table} by {res.key}" if res is not None else ""
            self._line(f"backfill {self.name}: {where}, ~{est or 0:,} keys to go, batches of "
                       f"{data['batch_size']:,} to start{resumed}")
            if sys.stderr.isatty() and not self.st.json:
                self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                    TextColumn("{task.completed:,}/{task.total:,} keys"),
                                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                    console=self.st.err, transient=True)
                self.bar.start()
                self.task = self.bar.add_task(self.name, total=est or None, rate="")
        elif kind == "batch" and res is not None:
            rate = f"{res.rows_per_s:,.0f} rows/s"
            if self.bar is not None:
                self.bar.update(self.task, advance=data["keys"], rate=rate)
            now = time.monotonic()
            if self.bar is None and now - self.last_line >= 2:
                self.last_line = now
                of = f" of ~{res.estimate:,}" if res.estimate else ""
                self._line(f"batch {res.total_batches:,}: {data['rows']:,} rows in {data['ms']} ms;"
                           f" {res.keys:,}{of} keys done, {rate}; next batch "
                           f"{data['next_size']:,}")
        elif kind == "retry":
            lock = f" ({data['lock']})" if data.get("lock") else ""
            self._line(f"{data['reason']}{lock} (attempt {data['attempt']}/{data['of']}); "
                       f"retrying with {data['batch_size']:,} keys after a backoff")
        elif kind == "pause":
            self._line(f"pausing: {data['reason']} (checking again every {data['pause_s']:g}s)")
        elif kind == "resume":
            self._line(f"resuming after {data['seconds']:.1f}s")
        elif kind == "gate":
            self._line(data["firing"]["message"])
        elif kind == "revert":
            self._line(f"rolling back: {data['reason']}")
        elif kind == "reverted":
            kept = f", {data['kept']} changed since and kept" if data["kept"] else ""
            self._line(f"reverted batch {data['batch']}: {data['rows']} row(s) put back{kept}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _policy(st: State, env: str | None, verb: str, yes: bool, override: bool,
            reason: str | None, arguments: dict[str, Any]) -> tuple[Any, Any]:
    cfg, t = st.config(), st.target(env)
    arguments["env"] = t.name
    blackout_guard(cfg, t, verb, override=override, reason=reason, now=datetime.now(UTC),
                   arguments=arguments)
    confirm_protected(st, t, yes, verb, arguments=arguments)
    return cfg, t


def register(root: typer.Typer) -> None:
    """Add ``pgferry backfill ...`` to ``root``."""
    root.add_typer(app, name="backfill")


@app.command("run")
def run_cmd(ctx: typer.Context, name: NameArg, env: EnvOpt = None, where: WhereOpt = None,
            batch_size: Annotated[int | None, typer.Option(
                "--batch-size", min=1, help="Keys in the first batch ([backfill] batch_size).")
            ] = None,
            target_duration: Annotated[str | None, typer.Option(
                "--target-duration", help="Grow or shrink batches toward this duration "
                "(\"0\": a fixed size; [backfill] target_duration).")] = None,
            restart: Annotated[bool, typer.Option(
                "--restart", help="Start over instead of resuming from the checkpoint.")
            ] = False,
            yes: YesOpt = False, override_blackout: OverrideOpt = False,
            reason: ReasonOpt = None, json_: JsonOpt = False) -> None:
    """Run backfills/NAME.sql in keyset batches (resumes after a crash)."""
    from pgferry.backfill import service

    st = state(ctx, json_)
    args: dict[str, Any] = {"name": name, "where": where, "batch_size": batch_size,
                            "target_duration": target_duration, "restart": restart,
                            "yes": yes, "override_blackout": override_blackout,
                            "reason": reason}
    cfg = st.config()
    opts = service.options(cfg, where=where, batch_size=batch_size,
                           target_duration=target_duration, restart=restart)
    cfg, t = _policy(st, env, "backfill run", yes, override_blackout, reason, args)
    bar = _Progress(st, name)
    try:
        with sigterm_interrupts():
            res = service.run(cfg, t, name, opts, arguments=args, on_event=bar.event)
    finally:
        bar.close()

    def render(out: Console) -> None:
        if res["batches"] == 0 and res["status"] == "completed" and not res["keys"]:
            out.print(f"{t.name}: backfill {name} is complete already ({res['total_rows']:,} rows"
                      f" in {res['total_batches']:,} batches); --restart runs it again",
                      markup=False)
            return
        pauses = f", {len(res['pauses'])} pause(s)" if res["pauses"] else ""
        retries = f", {res['retries']} retried batch(es)" if res["retries"] else ""
        out.print(f"{t.name}: backfill {name} completed: {res['rows']:,} rows over "
                  f"{res['keys']:,} keys in {res['batches']:,} batches, {res['duration_s']:.1f}s "
                  f"({res['rows_per_s']:,.0f} rows/s){pauses}{retries}", markup=False)

    st.emit({"ok": True, **res}, render)


@app.command("revert")
def revert_cmd(ctx: typer.Context, name: NameArg, env: EnvOpt = None, where: WhereOpt = None,
               yes: YesOpt = False, override_blackout: OverrideOpt = False,
               reason: ReasonOpt = None, json_: JsonOpt = False) -> None:
    """Put back what backfills/NAME.sql changed, from its before-images."""
    from pgferry.backfill import service

    st = state(ctx, json_)
    args: dict[str, Any] = {"name": name, "where": where, "yes": yes,
                            "override_blackout": override_blackout, "reason": reason}
    cfg, t = _policy(st, env, "backfill revert", yes, override_blackout, reason, args)
    bar = _Progress(st, name)
    with sigterm_interrupts():
        res = service.revert(cfg, t, name, where, arguments=args, on_event=bar.event)
    kept = f"; {res['kept']:,} changed since and kept" if res["kept"] else ""
    st.emit({"ok": True, **res}, lambda out: out.print(
        f"{t.name}: backfill {name} reverted: {res['batches']:,} batch(es), {res['rows']:,} "
        f"row(s) put back{kept}", markup=False))


@app.command("status")
def status_cmd(ctx: typer.Context, env: EnvOpt = None, json_: JsonOpt = False) -> None:
    """Every backfill's state in an environment: done, running, stopped, reverted."""
    from pgferry.backfill import service

    st = state(ctx, json_)
    cfg, t = st.config(), st.target(env)
    res = service.status(cfg, t)

    def render(out: Console) -> None:
        table = Table("Backfill", "Where", "Table", "State", "Batches", "Rows", "Updated",
                      title=f"{t.name}: backfills", title_justify="left")
        for b in res["backfills"]:
            table.add_row(b["name"], escape(b["scope"] or ""), b["table_name"], b["status"],
                          f"{b['batches']:,}", f"{b['rows']:,}",
                          f"{b['updated_at']:%Y-%m-%d %H:%M}")
        for n in res["never_run"]:
            table.add_row(n, "", "", "never run", "", "", "")
        out.print(table)

    st.emit({"ok": True, **res}, render)

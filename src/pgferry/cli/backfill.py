"""``pgferry backfill run|revert|status``: thin wrappers over :mod:`pgferry.commands.backfill`.

Contract: each verb parses its arguments, calls one command (which decides the policy:
blackout window, ``--yes`` on a protected environment, asking a person at a terminal) and
renders its result (one JSON object under ``--json``; progress on stderr: a bar with rows/s on a
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
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pgferry.backfill import events as ev
from pgferry.cli.common import EnvOpt, JsonOpt, State, YesOpt, sigterm_interrupts, state
from pgferry.events import Event

app = typer.Typer(
    help="Batched backfills: keyset batches, paced, resumable, gated.", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="backfills/NAME.sql")]
WhereOpt = Annotated[
    str | None,
    typer.Option("--where", help="Only rows matching this condition (e.g. \"territory = 'EU'\")."),
]
OverrideOpt = Annotated[
    bool, typer.Option("--override-blackout", help="Run inside a blackout window (needs --reason).")
]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why; goes into the journal.")]


class BackfillLines:
    """A bar with keys and rows/s on a terminal; a line every two seconds otherwise."""

    def __init__(self, st: State) -> None:
        self.st = st
        self.bar: Progress | None = None
        self.task: Any = None
        self.last_line = 0.0

    def __enter__(self) -> BackfillLines:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def _line(self, text: str) -> None:
        console = self.bar.console if self.bar is not None else self.st.err
        console.print(text, markup=False, soft_wrap=True)

    def __call__(self, event: Event) -> None:  # noqa: C901 (one branch per event class)
        if isinstance(event, ev.BackfillStarted):
            resumed = (
                f", resuming after {event.resumed_after:,} batch(es)" if event.resumed_after else ""
            )
            self._line(
                f"backfill {event.name}: {event.table} by {event.key}, "
                f"~{event.estimate or 0:,} keys to go, batches of "
                f"{event.batch_size:,} to start{resumed}"
            )
            if sys.stderr.isatty() and not self.st.json:
                self.bar = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TextColumn("{task.completed:,}/{task.total:,} keys"),
                    TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(),
                    console=self.st.err,
                    transient=True,
                )
                self.bar.start()
                self.task = self.bar.add_task(event.name, total=event.estimate or None, rate="")
        elif isinstance(event, ev.BatchDone):
            rate = f"{event.rows_per_s:,.0f} rows/s"
            if self.bar is not None:
                self.bar.update(self.task, advance=event.keys, rate=rate)
                return
            now = time.monotonic()
            if now - self.last_line >= 2:
                self.last_line = now
                of = f" of ~{event.estimate:,}" if event.estimate else ""
                self._line(
                    f"batch {event.batch:,}: {event.rows:,} rows in "
                    f"{event.duration_ms} ms; {event.keys_done:,}{of} keys done, "
                    f"{rate}; next batch {event.next_size:,}"
                )
        elif isinstance(event, ev.BatchRetry):
            lock = f" ({event.lock})" if event.lock else ""
            self._line(
                f"{event.reason}{lock} (attempt {event.attempt}/{event.max_attempts}); "
                f"retrying with {event.batch_size:,} keys after a backoff"
            )
        elif isinstance(event, ev.Paused):
            self._line(f"pausing: {event.reason} (checking again every {event.pause_s:g}s)")
        elif isinstance(event, ev.Resumed):
            self._line(f"resuming after {event.seconds:.1f}s")
        elif isinstance(event, ev.GateFired):
            self._line(event.message)
        elif isinstance(event, ev.Reverting):
            self._line(f"rolling back: {event.reason}")
        elif isinstance(event, ev.BatchReverted):
            kept = f", {event.kept} changed since and kept" if event.kept else ""
            self._line(f"reverted batch {event.batch}: {event.rows} row(s) put back{kept}")


def register(root: typer.Typer) -> None:
    """Add ``pgferry backfill ...`` to ``root``."""
    root.add_typer(app, name="backfill")


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    name: NameArg,
    env: EnvOpt = None,
    where: WhereOpt = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", min=1, help="Keys in the first batch ([backfill] batch_size)."
        ),
    ] = None,
    target_duration: Annotated[
        str | None,
        typer.Option(
            "--target-duration",
            help="Grow or shrink batches toward this duration "
            '("0": a fixed size; [backfill] target_duration).',
        ),
    ] = None,
    restart: Annotated[
        bool, typer.Option("--restart", help="Start over instead of resuming from the checkpoint.")
    ] = False,
    yes: YesOpt = False,
    override_blackout: OverrideOpt = False,
    reason: ReasonOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Run backfills/NAME.sql in keyset batches (resumes after a crash)."""
    from pgferry.commands import backfill as cmd

    st = state(ctx, json_)
    opts = cmd.BackfillRunOptions(
        name, env, where, batch_size, target_duration, restart, yes, override_blackout, reason
    )
    with sigterm_interrupts(), BackfillLines(st) as lines:
        result = cmd.run(st.config(), opts, progress=lines, confirm=st.confirm())
    res = result.to_dict()
    t_name = result.env

    def render(out: Console) -> None:
        if res["batches"] == 0 and res["status"] == "completed" and not res["keys"]:
            out.print(
                f"{t_name}: backfill {name} is complete already ({res['total_rows']:,} rows"
                f" in {res['total_batches']:,} batches); --restart runs it again",
                markup=False,
            )
            return
        pauses = f", {len(res['pauses'])} pause(s)" if res["pauses"] else ""
        retries = f", {res['retries']} retried batch(es)" if res["retries"] else ""
        out.print(
            f"{t_name}: backfill {name} completed: {res['rows']:,} rows over "
            f"{res['keys']:,} keys in {res['batches']:,} batches, {res['duration_s']:.1f}s "
            f"({res['rows_per_s']:,.0f} rows/s){pauses}{retries}",
            markup=False,
        )

    st.emit(res, render)


@app.command("revert")
def revert_cmd(
    ctx: typer.Context,
    name: NameArg,
    env: EnvOpt = None,
    where: WhereOpt = None,
    yes: YesOpt = False,
    override_blackout: OverrideOpt = False,
    reason: ReasonOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Put back what backfills/NAME.sql changed, from its before-images."""
    from pgferry.commands import backfill as cmd

    st = state(ctx, json_)
    opts = cmd.BackfillRevertOptions(name, env, where, yes, override_blackout, reason)
    with sigterm_interrupts(), BackfillLines(st) as lines:
        result = cmd.revert(st.config(), opts, progress=lines, confirm=st.confirm())
    r = result.reverted
    kept = f"; {r.kept:,} changed since and kept" if r.kept else ""
    st.emit(
        result.to_dict(),
        lambda out: out.print(
            f"{result.env}: backfill {name} reverted: {r.batches:,} batch(es), {r.rows:,} "
            f"row(s) put back{kept}",
            markup=False,
        ),
    )


@app.command("status")
def status_cmd(ctx: typer.Context, env: EnvOpt = None, json_: JsonOpt = False) -> None:
    """Every backfill's state in an environment: done, running, stopped, reverted."""
    from pgferry.commands import backfill as cmd

    st = state(ctx, json_)
    result = cmd.status(st.config(), env)
    res = result.to_dict()

    def render(out: Console) -> None:
        table = Table(
            "Backfill",
            "Where",
            "Table",
            "State",
            "Batches",
            "Rows",
            "Updated",
            title=f"{result.env}: backfills",
            title_justify="left",
        )
        for b in res["backfills"]:
            table.add_row(
                b["name"],
                escape(b["scope"] or ""),
                b["table_name"],
                b["status"],
                f"{b['batches']:,}",
                f"{b['rows']:,}",
                f"{b['updated_at']:%Y-%m-%d %H:%M}",
            )
        for n in res["never_run"]:
            table.add_row(n, "", "", "never run", "", "", "")
        out.print(table)

    st.emit(res, render)

"""``pgferry journal``: who changed what, when, in one environment."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from pgferry import jsonio
from pgferry.cli.common import EnvOpt, JsonOpt, state
from pgferry.commands import journal as cmd

_SHOWN_ELSEWHERE = {"ok", "outcome", "exit_code", "duration_s", "started_at", "finished_at"}
_TOTALS_SHOWN = (
    "inserted",
    "updated",
    "deleted",
    "dead_lettered",
    "differing",
    "only_in_source",
    "only_in_target",
    "conflicts",
)


def summary(details: dict[str, Any]) -> str:
    """One line of a journal row's details: its error, else its scalar facts and list sizes."""
    if details.get("error"):
        return f"error: {details['error']}"
    parts = []
    totals = details.get("totals")
    if isinstance(totals, dict):  # a sync or verify: what it found and did, first
        parts += [
            f"{k}: {v}"
            for k, v in totals.items()
            if k in _TOTALS_SHOWN and isinstance(v, int) and v
        ]
    for k, v in details.items():
        if k in _SHOWN_ELSEWHERE:
            continue
        if isinstance(v, list):
            if v:
                parts.append(f"{k}: {len(v)}")
        elif isinstance(v, str | int | float) and not isinstance(v, bool) and v != "":
            parts.append(f"{k}: {v}")
    text = ", ".join(parts) or jsonio.dumps(details)
    return text if len(text) <= 70 else text[:69] + "…"


def _show(ctx: typer.Context, env: str | None, limit: int, json_: bool) -> None:
    st = state(ctx, json_)
    res = cmd.show(st.config(), env, limit)
    rows = res.entries

    def render(out: Console) -> None:
        if not rows:
            out.print(f"the journal of {res.env} is empty")
            return
        cells = [
            [
                str(r["id"]),
                r["at"].strftime("%Y-%m-%d %H:%M:%S"),
                f"{r['os_user']} as {r['db_role']}",
                r["command"],
                r["outcome"],
                f"{r['duration_ms'] or 0} ms" if r["duration_ms"] is not None else "",
                summary({**r["details"], "error": r.get("error") or r["details"].get("error")}),
            ]
            for r in rows
        ]
        heads = ["id", "when", "who", "command", "outcome", "took", "details"]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
        # plain aligned columns: a rich table squeezes them unreadably on narrow screens
        for line in [heads, *cells]:
            out.print(
                "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip(),
                markup=False,
            )

    st.emit(res.to_dict(), render)


def register(app: typer.Typer) -> None:
    """Add ``pgferry journal`` (show) and ``pgferry journal verify`` to ``app``."""
    sub = typer.Typer(
        help="The append-only journal of an environment.", invoke_without_command=True
    )
    app.add_typer(sub, name="journal")

    @sub.callback()
    def journal_cmd(
        ctx: typer.Context,
        env: EnvOpt = None,
        limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Rows to show.")] = 20,
        json_: JsonOpt = False,
    ) -> None:
        """Show the append-only journal of an environment, newest first."""
        if ctx.invoked_subcommand is None:
            _show(ctx, env, limit, json_)

    @sub.command("verify")
    def verify_cmd(
        ctx: typer.Context,
        env: EnvOpt = None,
        head: Annotated[
            str | None,
            typer.Option(
                "--head",
                metavar="HASH",
                help="A head an earlier verify printed, kept elsewhere: it must still be in "
                "the chain (rows removed from the end, or a rewritten chain, lose it).",
            ),
        ] = None,
        json_: JsonOpt = False,
    ) -> None:
        """Recompute the journal's hash chain; exit 1 naming the first row changed, removed or
        inserted out of order."""
        st = state(ctx, json_)
        res = cmd.verify(st.config(), env, head)
        rep, name = res.report, res.env

        def render(out: Console) -> None:
            if not rep.exists:
                out.print(f"{name} has no journal yet: nothing to verify")
            for p in rep.problems:
                out.print(f"problem  {p}", markup=False)
            if rep.exists and rep.ok:
                out.print(
                    f"{name}: the journal is intact ({rep.rows} rows, chain "
                    f"unbroken, append-only triggers in place); head {rep.head}"
                )
                if rep.kept_row is not None:
                    out.print(
                        f"the head kept is row {rep.kept_row}; {rep.since} row(s) were "
                        "written since"
                    )
            elif rep.exists:
                out.print(f"{name}: the journal was tampered with ({len(rep.problems)} problem(s))")

        st.emit(res.to_dict(), render)
        if res.exit_code:
            raise typer.Exit(res.exit_code)

"""``pgferry journal``: who changed what, when, in one environment."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pgferry import journal
from pgferry.cli.common import EnvOpt, JsonOpt, state


def register(app: typer.Typer) -> None:
    @app.command("journal")
    def journal_cmd(
        ctx: typer.Context,
        env: EnvOpt,
        limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Rows to show.")] = 20,
        json_: JsonOpt = False,
    ) -> None:
        """Show the append-only journal of an environment, newest first."""
        st = state(ctx, json_)
        rows = journal.read(st.target(env), limit)

        def render(out: Console) -> None:
            if not rows:
                out.print(f"the journal of {env} is empty")
                return
            t = Table("id", "when", "who", "command", "outcome", "ms", "details")
            for r in rows:
                t.add_row(
                    str(r["id"]), r["at"].strftime("%Y-%m-%d %H:%M:%S"),
                    f"{r['os_user']} as {r['db_role']}", r["command"], r["outcome"],
                    str(r["duration_ms"] or ""),
                    json.dumps(r["details"])[:80],
                )
            out.print(t)

        st.emit({"ok": True, "env": env, "entries": rows}, render)

"""``pgferry migrate test|bench``: migrations proven on a scratch database.

(How the ``migrate`` verbs are split between modules: :mod:`pgferry.cli.migrate`.)

Thin: arguments and rendering; the verbs are :mod:`pgferry.commands.migrate_test` (the
work: :mod:`pgferry.migrate.testing`, :mod:`pgferry.migrate.bench`). Exit codes: 0 every
check passed; 1 an undo that does not restore its migration, a migration that fails on an
empty database, an assertion file that returned rows (or a pgTAP failure), a p95 above
``--p95``; 2 bad input (a file that does not parse, pgTAP without the extension, no such
script); 3 failed (no CREATEDB on the server of ``--env``, pgbench failed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from pgferry.cli.common import JsonOpt, state

ServerEnvOpt = Annotated[
    str | None,
    typer.Option(
        "--env",
        "-e",
        help="Make the scratch database on this environment's server (the role "
        "needs CREATEDB); default: the embedded server.",
    ),
]
KeepOpt = Annotated[bool, typer.Option("--keep", help="Keep the scratch database afterwards.")]


def register(app: typer.Typer) -> None:
    """Add ``migrate test`` and ``migrate bench`` to the ``migrate`` app."""

    @app.command("test")
    def test_cmd(
        ctx: typer.Context, env: ServerEnvOpt = None, keep: KeepOpt = False, json_: JsonOpt = False
    ) -> None:
        """Apply every migration on a scratch database with up, undo, up, then run tests/*.sql."""
        from pgferry.commands import migrate_test as cmd

        st = state(ctx, json_)
        res = cmd.test(st.config(), env, keep=keep, progress=st.notices()).to_dict()

        def render(out: Console) -> None:
            out.print(
                f"migrate test: {len(res['applied'])} migration(s) applied, "
                f"{len(res['undo_checked'])} proven by up, undo, up "
                f"({len(res['no_undo'])} without an undo file); "
                f"{len(res['tests'])} assertion file(s) passed",
                markup=False,
            )
            if res["kept"]:
                out.print(f"kept the scratch database: {res['kept']}", markup=False)

        st.emit(res, render)

    @app.command("bench")
    def bench_cmd(
        ctx: typer.Context,
        script: Annotated[Path, typer.Argument(metavar="FILE", help="A pgbench script.")],
        p95: Annotated[
            str | None,
            typer.Option("--p95", help="Exit 1 when the p95 latency is above this (e.g. 50ms)."),
        ] = None,
        clients: Annotated[
            int, typer.Option("--clients", "-c", min=1, max=200, help="Concurrent sessions.")
        ] = 4,
        time_: Annotated[str, typer.Option("--time", help="How long to run.")] = "10s",
        transactions: Annotated[
            int | None,
            typer.Option(
                "--transactions", min=1, help="Transactions per client (instead of --time)."
            ),
        ] = None,
        seed: Annotated[
            Path | None,
            typer.Option("--seed", help="SQL run once before the benchmark (test data)."),
        ] = None,
        env: ServerEnvOpt = None,
        keep: KeepOpt = False,
        json_: JsonOpt = False,
    ) -> None:
        """Run a pgbench script against the migrated scratch database; p50/p95/p99."""
        from pgferry.commands import migrate_test as cmd

        st = state(ctx, json_)
        opts = cmd.BenchOptions(script, env, p95, clients, time_, transactions, seed, keep)
        res: dict[str, Any] = cmd.bench(st.config(), opts, progress=st.notices()).to_dict()

        def render(out: Console) -> None:
            lat = res["latency_ms"]
            limit = f" (limit {p95})" if p95 else ""
            out.print(
                f"{Path(res['script']).name}: {res['transactions']:,} transactions, "
                f"{res['tps'] or 0:,.0f} tps; latency p50 {lat.get('p50', 0):.2f} ms, "
                f"p95 {lat.get('p95', 0):.2f} ms{limit}, p99 {lat.get('p99', 0):.2f} ms",
                markup=False,
            )

        st.emit(res, render)

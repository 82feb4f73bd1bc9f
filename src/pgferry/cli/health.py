"""``pgferry health``: the checks of one environment, as a table, JSON or Prometheus text."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pgferry.cli.common import EnvOpt, JsonOpt, state
from pgferry.commands.health import health
from pgferry.errors import BadInput

STYLE = {
    "optimal": "green",
    "healthy": "green",
    "degraded": "yellow",
    "critical": "bold red",
    "unknown": "magenta",
}


FORMATS = ("text", "json", "prometheus")


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and a rename (textfile collectors
    must never read half a file)."""
    path = path.resolve()
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        raise BadInput(
            f"cannot write {path}: {e.strerror or e}; pick a directory you can write to"
        ) from None


def register(app: typer.Typer) -> None:
    @app.command("health")
    def health_cmd(
        ctx: typer.Context,
        env: EnvOpt = None,
        fmt: Annotated[
            str,
            typer.Option(
                "--format",
                "-f",
                help="text (default), json, or prometheus (exposition text).",
            ),
        ] = "text",
        output: Annotated[
            Path | None,
            typer.Option(
                "--output",
                "-o",
                help="Write the output to this file (atomically) instead of "
                "stdout, e.g. for node_exporter's textfile collector.",
            ),
        ] = None,
        json_: JsonOpt = False,
    ) -> None:
        """Check an environment: exit 0 when optimal or healthy, 1 when degraded or critical."""
        if fmt not in FORMATS:
            raise BadInput(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
        st = state(ctx, json_ or fmt == "json")
        if st.json and fmt == "prometheus":
            raise BadInput(
                "--json and --format prometheus ask for two different outputs; pass one of them"
            )
        # a command line asks now: the cache is for the service a scraper polls
        report = health(st.config(), env)
        if fmt == "prometheus":
            from pgferry.health import metrics

            text = metrics.exposition([report])
            if output is not None:
                _write_atomically(output, text)
            else:
                print(text, end="")
        elif output is not None:
            from pgferry.cli.common import dumps

            _write_atomically(output, dumps(report.to_dict()) + "\n")
        else:
            st.emit(report.to_dict(), lambda out: render(report, out))
        if not report.ok:
            raise typer.Exit(1)


def render(report: object, out: Console) -> None:
    """The checks as aligned columns, then what to do for each one not optimal."""
    from pgferry.health.status import HealthReport

    assert isinstance(report, HealthReport)
    cached = ", cached" if report.cached else ""
    out.print(
        f"[bold]{report.env}: [{STYLE[report.status]}]{report.status}[/][/] "
        f"({len(report.checks)} checks in {report.duration_s * 1000:.0f} ms{cached})"
    )
    heads = ["check", "status", "value", "threshold", "message"]
    cells = [[c.name, c.status, c.value, c.threshold, c.message] for c in report.checks]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(heads[:-1])]
    for row in [heads, *cells]:
        line = "  ".join(v.ljust(w) for v, w in zip(row[:-1], widths, strict=True))
        style = STYLE.get(row[1], "bold")
        out.print(
            f"{line}  {row[-1]}".rstrip(),
            style=style if row is not heads else "bold",
            markup=False,
            highlight=False,
        )
    todo = [c for c in report.checks if c.fix and c.status != "optimal"]
    if todo:
        out.print("\nwhat to do:", style="bold")
        for c in todo:
            out.print(f"  {c.name}: {c.fix}", markup=False, highlight=False)

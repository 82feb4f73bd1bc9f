"""``pgferry lint``: the zero-downtime migration linter.

Contract: :func:`register` adds the Typer command; :func:`fast_main` runs the
same command without importing Typer, rich, pydantic or psycopg (a single file
must lint in well under 150 ms including interpreter start-up), and returns
None for anything it does not understand (``--help``, typos) so the full CLI
answers instead (:func:`pgferry.cli.entry.entry` chooses). Both call
:func:`pgferry.commands.lint.lint`; output and exit codes are identical.
"""

# No ``from __future__ import annotations`` here: Typer must see real annotation objects
# for the command defined inside register(), whose imports are local (lazy).
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

from pgferry.commands.lint import LintOptions, lint
from pgferry.errors import PgferryError

_HELP = """Lint migration SQL for statements that would block reads or writes.

Lints PATHS (files or migration directories); without PATHS, the pending
migrations of --env, else every migration in the migrations directory.
With --env (or --catalog FILE) it reads the target's catalog: fewer false
positives, and each finding says which lock, on what size of table, for how long.
Exit 1 when an error-level finding remains, 2 when SQL does not parse."""


def register(app: "typer.Typer") -> None:
    """Add the lint command to ``app``."""
    from pathlib import Path
    from typing import Annotated

    import typer

    from pgferry.cli.common import JsonOpt, state

    @app.command("lint", help=_HELP)
    def lint(
        ctx: typer.Context,
        paths: Annotated[
            list[Path] | None,
            typer.Argument(help="SQL files or migration directories.", show_default=False),
        ] = None,
        env: Annotated[
            str | None,
            typer.Option(
                "--env", "-e", help="Lint the pending migrations of this env against its catalog."
            ),
        ] = None,
        catalog: Annotated[
            str | None,
            typer.Option(
                "--catalog", help="Catalog snapshot JSON: written with --env, read without."
            ),
        ] = None,
        fmt: Annotated[
            str,
            typer.Option(
                "--format", "-f", help="text, json or sarif (markdown with --list-rules)."
            ),
        ] = "text",
        pg_version: Annotated[
            int | None,
            typer.Option(
                "--pg-version",
                help="PostgreSQL major version to lint for (default: target's, "
                "else [lint] pg_version, else 18).",
            ),
        ] = None,
        list_rules: Annotated[
            bool, typer.Option("--list-rules", help="List the rules instead of linting.")
        ] = False,
        jobs: Annotated[
            int | None,
            typer.Option(
                "--jobs",
                "-j",
                min=1,
                help="Processes to lint many files on (default: one per "
                "CPU; 1: no worker processes).",
                show_default=False,
            ),
        ] = None,
        all_files: Annotated[
            bool,
            typer.Option(
                "--all",
                help="Directory mode: lint the files the catalog's history marks as "
                "applied too (skipped by default).",
            ),
        ] = False,
        json_: JsonOpt = False,
    ) -> None:
        st = state(ctx, json_)
        opts = LintOptions(
            [str(p) for p in paths or []],
            env,
            catalog,
            "json" if st.json and fmt == "text" else fmt,
            pg_version,
            list_rules,
            str(st.config_path) if st.config_path else None,
            jobs,
            all_files,
        )
        code = _run(opts)
        if code:
            raise typer.Exit(code)


def _run(opts: LintOptions) -> int:
    """Lint, print the report on stdout; the exit code."""
    res = lint(opts)
    sys.stdout.write(res.output + "\n")
    sys.stdout.flush()
    return res.exit_code


_GLOBAL_VALUE = {"--config", "-c"}
_VALUE = {
    "--env": "env",
    "-e": "env",
    "--catalog": "catalog",
    "--format": "fmt",
    "-f": "fmt",
    "--pg-version": "pg_version",
    "--jobs": "jobs",
    "-j": "jobs",
}


_FLAGS = {"--list-rules": "list_rules", "--all": "all"}


def _scan_fast(argv: list[str]) -> dict[str, Any] | None:
    """The tokens of ``[global opts] lint [opts] [paths]`` as raw options; None: not ours."""
    opts: dict[str, Any] = {
        "paths": [],
        "env": None,
        "catalog": None,
        "fmt": "text",
        "pg_version": None,
        "list_rules": False,
        "config": None,
        "json": False,
        "debug": False,
        "jobs": None,
        "all": False,
    }
    i, seen_lint = 0, False
    while i < len(argv):
        a = argv[i]
        key, eq, val = a.partition("=")
        name = (
            "config"
            if key in _GLOBAL_VALUE and not seen_lint
            else _VALUE.get(key)
            if seen_lint
            else None
        )
        if not seen_lint and a == "lint":
            seen_lint = True
        elif a == "--json" or (a == "--debug" and not seen_lint):
            opts[a[2:]] = True
        elif name is not None:  # an option with a value: --env dev or --env=dev
            if not eq:
                i += 1
                if i >= len(argv):
                    return None
                val = argv[i]
            opts[name] = val
        elif seen_lint and a in _FLAGS:
            opts[_FLAGS[a]] = True
        elif seen_lint and a == "--":
            opts["paths"] += argv[i + 1 :]
            break
        elif seen_lint and not a.startswith("-"):
            opts["paths"].append(a)
        else:
            return None
        i += 1
    return opts if seen_lint else None


def _parse_fast(argv: list[str]) -> dict[str, Any] | None:
    """``[global opts] lint [opts] [paths]`` → options, or None to defer to Typer."""
    opts = _scan_fast(argv)
    if opts is None:
        return None
    for name, least in (("pg_version", 0), ("jobs", 1)):
        if opts[name] is not None:
            if not str(opts[name]).isdigit() or int(opts[name]) < least:
                return None  # Typer says what is wrong with it
            opts[name] = int(opts[name])
    if opts["fmt"] not in ("text", "json", "sarif", "markdown"):
        return None
    if opts["json"] and opts["fmt"] == "text":
        opts["fmt"] = "json"
    return opts


def fast_main(argv: list[str]) -> int | None:
    """Run ``pgferry lint`` without the full CLI; None when Typer should handle argv."""
    opts = _parse_fast(argv)
    if opts is None:
        return None
    import os

    config = opts["config"] or os.environ.get("PGFERRY_CONFIG") or None  # as Typer's envvar
    try:
        return _run(
            LintOptions(
                opts["paths"],
                opts["env"],
                opts["catalog"],
                opts["fmt"],
                opts["pg_version"],
                opts["list_rules"],
                config,
                opts["jobs"],
                opts["all"],
            )
        )
    except PgferryError as e:
        return _fail(e, opts["json"], opts["debug"])


def _fail(e: PgferryError, want_json: bool, debug: bool) -> int:
    """Render an error exactly as :func:`pgferry.cli.app.main` does."""
    from pgferry import jsonio
    from pgferry.redaction import redact

    if debug:
        import traceback

        traceback.print_exc()
    if want_json:
        print(jsonio.dumps({"ok": False, **e.to_dict()}, default=str))
    print(f"error: {redact(e.message)}", file=sys.stderr)
    return e.exit_code

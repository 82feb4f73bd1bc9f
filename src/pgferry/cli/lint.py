"""``pgferry lint``: the zero-downtime migration linter.

Contract: :func:`register` adds the Typer command; :func:`fast_main` runs the
same command without importing Typer, rich, pydantic or psycopg (a single file
must lint in well under 150 ms including interpreter start-up), and returns
None for anything it does not understand (``--help``, typos) so the full CLI
answers instead. Both call :func:`pgferry.lint.service.run`; output and exit
codes are identical.
"""

# No ``from __future__ import annotations`` here: Typer must see real annotation objects
# for the command defined inside register(), whose imports are local (lazy).
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

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
        paths: Annotated[list[Path] | None, typer.Argument(
            help="SQL files or migration directories.", show_default=False)] = None,
        env: Annotated[str | None, typer.Option(
            "--env", "-e", help="Lint the pending migrations of this env against its catalog.")
        ] = None,
        catalog: Annotated[str | None, typer.Option(
            "--catalog", help="Catalog snapshot JSON: written with --env, read without.")
        ] = None,
        fmt: Annotated[str, typer.Option(
            "--format", "-f", help="text, json or sarif (markdown with --list-rules).")
        ] = "text",
        pg_version: Annotated[int | None, typer.Option(
            "--pg-version", help="PostgreSQL major version to lint for (default: target's, "
            "else [lint] pg_version, else 18).")] = None,
        list_rules: Annotated[bool, typer.Option(
            "--list-rules", help="List the rules instead of linting.")] = False,
        jobs: Annotated[int | None, typer.Option(
            "--jobs", "-j", min=1, help="Processes to lint many files on (default: one per "
            "CPU; 1: no worker processes).", show_default=False)] = None,
        all_files: Annotated[bool, typer.Option(
            "--all", help="Directory mode: lint the files the catalog's history marks as "
            "applied too (skipped by default).")] = False,
        json_: JsonOpt = False,
    ) -> None:
        st = state(ctx, json_)
        req = _request([str(p) for p in paths or []], env, catalog,
                       "json" if st.json and fmt == "text" else fmt, pg_version, list_rules,
                       str(st.config_path) if st.config_path else None, jobs, all_files)
        out, code = _run(req)
        sys.stdout.write(out + "\n")
        sys.stdout.flush()
        if code:
            raise typer.Exit(code)


def _request(paths: list[str], env: str | None, catalog: str | None, fmt: str,
             pg_version: int | None, list_rules: bool, config: str | None,
             jobs: int | None = None, all_files: bool = False) -> Any:
    from pgferry.lint.service import Request

    return Request(paths, env, catalog, fmt, pg_version, list_rules, config, jobs, all_files)


def _run(req: Any) -> tuple[str, int]:
    from pgferry.lint.service import run

    return run(req)


_GLOBAL_VALUE = {"--config", "-c"}
_VALUE = {"--env": "env", "-e": "env", "--catalog": "catalog", "--format": "fmt",
          "-f": "fmt", "--pg-version": "pg_version", "--jobs": "jobs", "-j": "jobs"}


def _parse_fast(argv: list[str]) -> dict[str, Any] | None:
    """``[global opts] lint [opts] [paths]`` → options, or None to defer to Typer."""
    opts: dict[str, Any] = {"paths": [], "env": None, "catalog": None, "fmt": "text",
                            "pg_version": None, "list_rules": False, "config": None,
                            "json": False, "debug": False, "jobs": None, "all": False}
    i, seen_lint = 0, False
    while i < len(argv):
        a = argv[i]
        key, eq, val = a.partition("=")
        if not seen_lint and a == "lint":
            seen_lint = True
        elif a == "--json":
            opts["json"] = True
        elif a == "--debug" and not seen_lint:
            opts["debug"] = True
        elif key in _GLOBAL_VALUE and not seen_lint:
            if not eq:
                i += 1
                if i >= len(argv):
                    return None
                val = argv[i]
            opts["config"] = val
        elif seen_lint and key in _VALUE:
            if not eq:
                i += 1
                if i >= len(argv):
                    return None
                val = argv[i]
            opts[_VALUE[key]] = val
        elif seen_lint and a == "--list-rules":
            opts["list_rules"] = True
        elif seen_lint and a == "--all":
            opts["all"] = True
        elif seen_lint and a == "--":
            opts["paths"] += argv[i + 1:]
            break
        elif seen_lint and not a.startswith("-"):
            opts["paths"].append(a)
        else:
            return None
        i += 1
    if not seen_lint:
        return None
    if opts["pg_version"] is not None:
        if not str(opts["pg_version"]).isdigit():
            return None
        opts["pg_version"] = int(opts["pg_version"])
    if opts["jobs"] is not None:
        if not str(opts["jobs"]).isdigit() or int(opts["jobs"]) < 1:
            return None  # Typer says what is wrong with it
        opts["jobs"] = int(opts["jobs"])
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
    req = _request(opts["paths"], opts["env"], opts["catalog"], opts["fmt"], opts["pg_version"],
                   opts["list_rules"], config, opts["jobs"], opts["all"])
    try:
        out, code = _run(req)
    except PgferryError as e:
        return _fail(e, opts["json"], opts["debug"])
    sys.stdout.write(out + "\n")
    sys.stdout.flush()
    return code


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


def entry() -> None:  # pragma: no cover - exercised through the installed script
    """Console-script entry: ``pgferry lint`` on the fast path, everything else via Typer."""
    argv = sys.argv[1:]
    if "lint" in argv:
        rc = fast_main(argv)
        if rc is not None:
            # everything is written: skip the interpreter's teardown of a heap of parse
            # trees and findings (~15 ms over 1,000 files); nothing of ours runs at exit
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except OSError:
                sys.exit(rc)
            import os

            os._exit(rc)
    from pgferry.cli.app import entry as full_entry

    full_entry()

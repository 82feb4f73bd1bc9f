"""The lint gate ``migrate plan`` and ``migrate up`` call before running migrations.

Contract:
- :func:`check_migrations` lints migration files in the order given (the order
  they will run) with the rules ``[lint]`` in the config selects. With a
  ``target`` it snapshots the target's catalog once (catalog mode: fewer false
  positives, impact in messages) and lints for the target's PostgreSQL version;
  the files are pending, so a table one creates that the target lacks is new in
  the later ones. Without a catalog only a table created in the same file is new.
- It returns the findings that remain after ``-- pgferry:ignore`` comments,
  sorted by file order then line; each ``Finding.path`` is ``str(file.path)``.
  A file that does not parse becomes one ``syntax-error`` finding (severity
  error), so the runner can refuse it with everything else.
- :func:`blocking` is what ``migrate up`` refuses on (exit 4 on a protected env
  unless ``--allow-unsafe --reason``): the error-level findings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgferry.errors import BadInput, SqlParseError
from pgferry.lint.engine import Linter, Settings
from pgferry.lint.model import Finding

if TYPE_CHECKING:
    from pgferry.config import Config
    from pgferry.lint.snapshot import Snapshot
    from pgferry.migrate.files import MigrationFile
    from pgferry.pg.connect import Target


def snapshot_target(target: Target) -> Snapshot:
    """Read the target's catalog once (a short read-only connection)."""
    from datetime import UTC, datetime

    from pgferry.lint import snapshot
    from pgferry.pg.connect import connect

    with connect(target.dsn, autocommit=True, application_name="pgferry lint") as conn:
        return snapshot.take(
            conn, source=target.name, now=datetime.now(UTC).isoformat(timespec="seconds")
        )


def check_migrations(
    files: list[MigrationFile],
    cfg: Config,
    target: Target | None = None,
    *,
    catalog: Snapshot | None = None,
) -> list[Finding]:
    """Unsuppressed findings for ``files`` in run order (see the module docstring)."""
    if catalog is None and target is not None:
        catalog = snapshot_target(target)
    linter = Linter(Settings.from_config(cfg.lint), catalog=catalog)
    out: list[Finding] = []
    for mf in files:
        path = str(mf.path)
        try:
            found = linter.lint_text(path, mf.sql)
        except SqlParseError as e:
            line = int(e.details.get("line", 1))
            out.append(
                Finding(
                    "syntax-error",
                    "PF000",
                    "error",
                    path,
                    line,
                    1,
                    e.message,
                    "Fix the statement; the message quotes PostgreSQL's parser.",
                )
            )
            continue
        except BadInput as e:
            out.append(Finding("syntax-error", "PF000", "error", path, 1, 1, e.message))
            continue
        out.extend(f for f in found if f.suppressed is None)
    return out


def blocking(findings: list[Finding]) -> list[Finding]:
    """The findings that make the gate refuse: severity error."""
    return [f for f in findings if f.severity == "error"]


def summary(findings: list[Finding]) -> dict[str, Any]:
    """Counts for plan/up output: errors, warnings, and the files with errors."""
    errors = blocking(findings)
    return {
        "errors": len(errors),
        "warnings": sum(1 for f in findings if f.severity == "warning"),
        "files_with_errors": sorted({f.path for f in errors}),
    }

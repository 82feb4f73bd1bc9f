"""The sync report: Markdown for ``--report FILE``, the same data as JSON for ``--json``.

Contract: :func:`markdown` renders a :class:`~pgferry.sync.result.SyncResult`
(run summary with redacted DSNs, mode, start/finish, outcome and exit code;
one row per table with rows inserted / updated / deleted / unchanged /
dead-lettered, checksums after and duration; verify counts and first
differing keys; masked columns; dead letters; warnings). :func:`as_json` is
the ``--json`` object, :func:`write` writes the Markdown file atomically
(temp file + rename, so a crash never leaves half a report). Every text that
may hold a DSN passes through :func:`~pgferry.pg.connect.redact`; nothing
here reads a database or the clock.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from pgferry.errors import BadInput
from pgferry.pg.connect import redact
from pgferry.sync.result import SyncResult, TableResult

_OUTCOME_WORDS = {
    "ok": "ok — the target matches the source",
    "planned": "dry run — nothing was written",
    "problem": "done, with problems (see below)",
    "failed": "failed",
    "refused": "refused by policy",
}


def as_json(result: SyncResult) -> dict[str, Any]:
    """The ``--json`` object: :meth:`SyncResult.to_dict`, with every DSN redacted again."""
    d = result.to_dict()
    for side in ("source", "target"):
        d[side]["dsn"] = redact(d[side]["dsn"] or "")
    if d.get("error"):
        d["error"] = redact(d["error"])
    for t in d["tables"]:
        if t.get("error"):
            t["error"] = redact(t["error"])
    return d


def _cell(value: Any) -> str:
    """A Markdown table cell: pipes and newlines escaped, passwords redacted."""
    text = redact(str(value)) if value is not None else ""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _when(ts: datetime | None) -> str:
    return ts.isoformat(timespec="seconds") if ts else "-"


def _n(value: int) -> str:
    return f"{value:,}"


def _checksum(t: TableResult) -> str:
    if t.checksum_target is None and t.checksum_source is None:
        return "-"
    short = (t.checksum_target or t.checksum_source or "")[:12]
    match = t.checksums_match
    return f"`{short}` " + ("= source" if match else "≠ source" if match is False else "")


def key_text(item: Any) -> str:
    """A differing key as ``id=5`` (``(kind)`` appended when the verifier says which kind)."""
    if isinstance(item, dict) and isinstance(item.get("key"), dict):
        text = ", ".join(f"{k}={v}" for k, v in item["key"].items())
        kind = str(item.get("kind", "")).replace("_", " ")
        return f"{text} ({kind})" if kind else text
    if isinstance(item, dict):
        return ", ".join(f"{k}={v}" for k, v in item.items())
    return str(item)


#: columns of text (left-aligned); the others hold numbers
_LEFT = (
    "table",
    "strategy",
    "status",
    "checksum after",
    "column",
    "rule",
    "key",
    "error",
    "first differing keys",
    "known",
    "kind",
    "target row",
    "source row",
    "note",
)


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    right = {i for i, h in enumerate(headers) if h not in _LEFT}
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def markdown(result: SyncResult) -> str:
    """The report as Markdown (GitHub flavour)."""
    outcome = result.derive_outcome()
    verify = result.mode == "verify"
    title = "verify" if verify else "sync"
    masked_note = (
        ", masked columns as masked"
        if outcome == "ok" and any(t.masked for t in result.tables)
        else ""
    )
    words = _OUTCOME_WORDS[outcome]
    unchecked = [
        t.table
        for t in result.tables
        if not verify
        and not result.dry_run
        and t.status != "failed"
        and t.checked_after is not True
    ]
    if outcome == "ok" and unchecked:
        # the claim "matches" needs the check that could have failed
        words = (
            "ok — written; not compared again after the sync: "
            + ", ".join(unchecked)
            + " (use --verify-after)"
        )
    out = [f"# pgferry {title}: {result.source} → {result.target}", ""]
    summary = [
        ["source", f"{result.source} (`{redact(result.source_display)}`)"],
        ["target", f"{result.target} (`{redact(result.target_display)}`)"],
        ["mode", result.mode + (" (dry run)" if result.dry_run else "")],
        ["started", _when(result.started_at)],
        ["finished", _when(result.finished_at)],
        ["duration", f"{result.duration_s:.2f} s"],
        ["tables", str(len(result.tables))],
        ["outcome", f"{words}{masked_note} (exit {result.exit_code})"],
    ]
    if result.run_id:
        summary.append(["run id", f"`{result.run_id}`"])
    if any(t.before_images for t in result.tables) and not verify and not result.dry_run:
        summary.append(
            [
                "undo",
                f"`pgferry sync revert {result.run_id} --env {result.target} "
                "--yes` puts back every row this run changed",
            ]
        )
    if result.no_mask_reason:
        summary.append(["unmasked copy", f"--no-mask, reason: {result.no_mask_reason}"])
    out += [f"- **{k}**: {v}" for k, v in summary]
    if result.error:
        out += ["", f"**Error:** {_cell(result.error)}"]

    tot = result.totals()
    out += ["", "## Tables", ""]
    if verify:
        rows = [
            [
                t.table,
                t.status,
                _n(t.matched),
                _n(t.differing),
                _n(t.only_in_source),
                _n(t.only_in_target),
                f"{t.duration_s:.2f} s",
            ]
            for t in result.tables
        ]
        rows.append(
            [
                "**total**",
                "",
                _n(tot["matched"]),
                _n(tot["differing"]),
                _n(tot["only_in_source"]),
                _n(tot["only_in_target"]),
                f"{result.duration_s:.2f} s",
            ]
        )
        out += _table(
            [
                "table",
                "status",
                "matched",
                "differing",
                "only in source",
                "only in target",
                "duration",
            ],
            rows,
        )
    else:
        rows = [
            [
                t.table,
                t.strategy or t.mode,
                t.status,
                _n(t.inserted),
                _n(t.updated),
                _n(t.deleted),
                _n(t.unchanged),
                _n(t.dead_lettered),
                _checksum(t),
                f"{t.duration_s:.2f} s",
            ]
            for t in result.tables
        ]
        rows.append(
            [
                "**total**",
                "",
                "",
                _n(tot["inserted"]),
                _n(tot["updated"]),
                _n(tot["deleted"]),
                _n(tot["unchanged"]),
                _n(tot["dead_lettered"]),
                "",
                f"{result.duration_s:.2f} s",
            ]
        )
        out += _table(
            [
                "table",
                "strategy",
                "status",
                "inserted",
                "updated",
                "deleted",
                "unchanged",
                "dead-lettered",
                "checksum after",
                "duration",
            ],
            rows,
        )

    differing = [t for t in result.tables if t.first_differing_keys]
    if differing:
        out += ["", "## First differing keys", ""]
        out += _table(
            ["table", "first differing keys"],
            [[t.table, "; ".join(map(key_text, t.first_differing_keys[:10]))] for t in differing],
        )

    drift = [f"{t.table}: {f}" for t in result.tables for f in t.findings] + result.findings
    if drift:
        out += [
            "",
            "## Schema drift",
            "",
            "The two sides' schemas differ; the migrations have not run on both:",
            "",
        ]
        out += [f"- {_cell(d)}" for d in drift]
    clash = [t for t in result.tables if t.conflicts or t.conflicts_known is False or t.kept]
    if clash:
        out += [
            "",
            "## Conflicts",
            "",
            "Rows changed on the target since the last sync that this sync would change "
            "(`on_conflict`: stop, source or target).",
            "",
        ]
        out += _table(
            [
                "table",
                "conflicts",
                "only the target changed",
                "kept as the target has them",
                "known",
            ],
            [
                [
                    t.table,
                    _n(t.conflicts),
                    _n(t.target_only),
                    _n(t.kept),
                    "no: first sync" if t.conflicts_known is False else "yes",
                ]
                for t in clash
            ],
        )
        rows = [
            [
                t.table,
                ", ".join(f"{k}={v}" for k, v in c["key"].items()),
                c["kind"],
                c["target_row"],
                c["source_row"],
            ]
            for t in clash
            for c in t.conflict_rows
        ]
        if rows:
            out += [""] + _table(["table", "key", "kind", "target row", "source row"], rows)
    notes = [(t.table, t.note) for t in result.tables if t.note]
    if notes:
        out += ["", "## Notes", ""]
        out += _table(["table", "note"], [list(n) for n in notes])

    failed = [t for t in result.tables if t.error]
    if failed:
        out += ["", "## Errors", ""]
        out += _table(["table", "error"], [[t.table, t.error] for t in failed])

    masked = [(t.table, c, r) for t in result.tables for c, r in sorted(t.masked.items())]
    if masked:
        out += [
            "",
            "## Masked columns",
            "",
            "Masked inside the source SELECT; raw values did not leave the source server.",
            "",
        ]
        out += _table(["table", "column", "rule"], [list(m) for m in masked])

    letters = [(t.table, d) for t in result.tables for d in t.dead_letters]
    if letters or tot["dead_lettered"]:
        out += [
            "",
            "## Dead letters",
            "",
            f"{_n(tot['dead_lettered'])} row(s) could not be written; they are in "
            f"`pgferry.dead_letters` on {result.target}. The first ones:",
            "",
        ]
        out += _table(
            ["table", "key", "error"],
            [
                [tb, ", ".join(f"{k}={v}" for k, v in d.key.items()), d.error]
                for tb, d in letters[:50]
            ],
        )

    warnings = [f"{t.table}: {w}" for t in result.tables for w in t.warnings] + result.warnings
    if warnings:
        out += ["", "## Warnings", ""] + [f"- {_cell(w)}" for w in warnings]
    return "\n".join(out) + "\n"


def write(path: str | Path, result: SyncResult) -> Path:
    """Write the Markdown report to ``path`` atomically; BadInput if it cannot be written."""
    p = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(markdown(result))
        os.replace(tmp, p)
    except OSError as e:
        raise BadInput(f"cannot write the report to {p}: {e.strerror or e}") from None
    return p


def check_writable(path: str | Path) -> None:
    """Fail early (exit 2, before any write to a database) when ``path`` cannot be written."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise BadInput(f"--report {p} is a directory; give a file name")
    if not (parent.is_dir() and os.access(parent, os.W_OK)):
        raise BadInput(f"--report {p}: directory {parent} does not exist or is not writable")

"""Lint output: text (file:line:col, statement, message, safe rewrite), JSON, SARIF 2.1.0.

Contract: pure functions from findings to one string; no rich, no I/O, so the
CLI's fast path stays import-light. JSON is one object; SARIF is a single run
whose rules carry each rule's help and documentation anchor.
"""

from __future__ import annotations

from typing import Any

from pgferry import jsonio
from pgferry.lint.model import Finding, Rule

DOCS = "docs/lint.md"


def counts(findings: list[Finding]) -> dict[str, int]:
    errors = warnings = suppressed = 0
    for f in findings:
        if f.suppressed is not None:
            suppressed += 1
        elif f.severity == "error":
            errors += 1
        elif f.severity == "warning":
            warnings += 1
    return {"errors": errors, "warnings": warnings, "suppressed": suppressed}


def text(findings: list[Finding], files: int, header: str = "", skipped: int = 0) -> str:
    out: list[str] = [header] if header else []
    for f in findings:
        if f.suppressed is not None:
            continue
        out.append(f"{f.path}:{f.line}:{f.column}: {f.severity}[{f.rule}] {f.message}")
        if f.statement:
            out.append(f"    | {f.statement}")
        if f.impact:
            out.append(f"    = impact: {f.impact}")
        if f.help:
            out.append(f"    = safe: {f.help}")
    c = counts(findings)
    tail = f"{c['errors']} error(s), {c['warnings']} warning(s) in {files} file(s)"
    if c["suppressed"]:
        tail += f"; {c['suppressed']} suppressed by pgferry:ignore"
    if skipped:
        tail += f"; {skipped} applied file(s) skipped (--all lints them)"
    out.append(tail)
    return "\n".join(out)


def as_json(findings: list[Finding], files: int, meta: dict[str, Any], skipped: int = 0) -> str:
    live: list[dict[str, Any]] = []
    quiet: list[dict[str, Any]] = []
    for f in findings:
        (live if f.suppressed is None else quiet).append(f.to_dict())
    c = counts(findings)
    obj = {
        "ok": c["errors"] == 0,
        **meta,
        "files": files,
        "skipped": skipped,
        "summary": c,
        "findings": live,
        "suppressed": quiet,
    }
    return jsonio.dumps(obj)


def sarif(findings: list[Finding], rules: list[type[Rule]], version: str) -> str:
    """A SARIF 2.1.0 log (GitHub code scanning reads it)."""
    used = sorted({f.rule for f in findings})
    by_name = {r.name: r for r in rules}
    rule_objs = []
    for name in used:
        r = by_name.get(name)
        rule_objs.append(
            {
                "id": name,
                "name": name,
                "shortDescription": {"text": r.message if r else name},
                "help": {"text": r.help if r else ""},
                # SARIF wants absolute URIs here; the docs live in the repository instead
                "properties": {"code": r.code if r else "", "docs": f"{DOCS}#{name}"},
                "defaultConfiguration": {"level": r.severity if r else "warning"},
            }
        )
    results = []
    for f in findings:
        res: dict[str, Any] = {
            "ruleId": f.rule,
            "level": f.severity,
            "message": {"text": f.message + (f" ({f.impact})" if f.impact else "")},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": f.path},
                        "region": {"startLine": f.line, "startColumn": f.column},
                    }
                }
            ],
        }
        if f.suppressed is not None:
            res["suppressions"] = [{"kind": "inSource", "justification": f.suppressed}]
        results.append(res)
    log = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {"name": "pgferry-lint", "version": version, "rules": rule_objs}
                },
                "results": results,
            }
        ],
    }
    return jsonio.dumps(log, pretty=True)


def rule_list(rules: list[type[Rule]], fmt: str) -> str:
    """``--list-rules``: a table (text), JSON, or the Markdown reference (docs/lint.md)."""
    if fmt == "markdown":
        from pgferry.lint.docs import markdown

        return markdown(rules)
    if fmt in ("json", "sarif"):
        return jsonio.dumps(
            {
                "rules": [
                    {
                        "code": r.code,
                        "name": r.name,
                        "severity": r.severity,
                        "message": r.message,
                        "help": r.help,
                        "pg_versions": r.versions(),
                        "default": not r.opt_in,
                        "squawk": list(r.squawk),
                    }
                    for r in rules
                ]
            }
        )
    width = max(len(r.name) for r in rules)
    lines = [
        f"{r.code}  {r.name:<{width}}  {r.severity:<7}  {'opt-in ' if r.opt_in else ''}{r.message}"
        for r in rules
    ]
    return "\n".join(lines)

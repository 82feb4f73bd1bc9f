"""Suppression comments: ``-- pgferry:ignore <rule>[, <rule>] -- <reason>``.

Contract:
- On its own line, an ignore comment applies to the next statement; after code
  on the same line, to the statement on that line. ``-- pgferry:ignore-file
  <rule>[, ...]`` anywhere applies to the whole file. Rules are named by name or code.
- A suppressed finding stays in the list with ``suppressed`` set to the reason
  (``""`` when none was given), so JSON output and the journal can show it;
  it never counts toward the exit code.
- An ignore that suppresses nothing (or names an unknown rule) is itself a
  finding, ``unused-ignore``, at the comment's line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pgferry.lint.model import FileInfo, Finding, Rule, Stmt

_IGNORE = re.compile(
    r"--\s*pgferry:ignore(?P<file>-file)?\s+(?P<rules>[\w-]+(?:\s*,\s*[\w-]+)*)"
    r"(?:\s*--\s*(?P<reason>.*?))?\s*$"
)
UNUSED = "unused-ignore"
UNUSED_CODE = "PF900"


@dataclass
class Ignore:
    line: int
    column: int
    rules: list[str]
    reason: str
    whole_file: bool
    stmt: int | None = None  # statement index it applies to
    used: set[str] = field(default_factory=set)


def find(info: FileInfo, stmts: list[Stmt]) -> list[Ignore]:
    """Every ignore comment in the file, tied to its statement."""
    if "pgferry:ignore" not in info.text:
        return []
    out: list[Ignore] = []
    offset = 0
    starts = [s.start for s in stmts]
    for lineno, line in enumerate(info.data.split(b"\n"), 1):
        text = line.decode("utf-8", "replace")
        m = _IGNORE.search(text)
        if m:
            rules = [r.strip() for r in m["rules"].split(",")]
            ig = Ignore(lineno, m.start() + 1, rules, (m["reason"] or "").strip(), bool(m["file"]))
            if not ig.whole_file:
                at = offset + len(text[: m.start()].encode("utf-8"))
                trailing = bool(text[: m.start()].strip())
                if trailing:
                    before = [i for i, s in enumerate(starts) if s <= at]
                    ig.stmt = before[-1] if before else None
                else:
                    ig.stmt = next((i for i, s in enumerate(starts) if s > at), None)
            out.append(ig)
        offset += len(line) + 1
    return out


def apply(
    info: FileInfo,
    stmts: list[Stmt],
    findings: list[Finding],
    active: set[str],
    known: dict[str, type[Rule]],
) -> list[Finding]:
    """Mark suppressed findings and add ``unused-ignore`` findings."""
    ignores = find(info, stmts)
    if not ignores:
        return findings
    for f in findings:
        idx = f.stmt_index
        for ig in ignores:
            names = {known[r].name if r in known else r for r in ig.rules}
            if f.rule in names and (ig.whole_file or ig.stmt == idx):
                f.suppressed = ig.reason
                ig.used.add(f.rule)
    extra: list[Finding] = []
    for ig in ignores:
        for r in ig.rules:
            rule = known.get(r)
            if rule is None:
                why = f"pgferry:ignore names unknown rule {r!r}"
            elif rule.name not in active or rule.name in ig.used:
                continue
            else:
                why = f"pgferry:ignore {rule.name} suppresses nothing; remove it"
            extra.append(
                Finding(
                    UNUSED,
                    UNUSED_CODE,
                    "warning",
                    info.path,
                    ig.line,
                    ig.column,
                    why,
                    "Delete the comment, or move it before the statement it is meant for.",
                )
            )
    return findings + extra

"""docs/lint.md's rule reference, generated from the rule classes' docstrings.

Contract: :func:`markdown` is pure; ``pgferry lint --list-rules --format markdown``
prints it and ``python -m pgferry.lint.docs`` rewrites the generated block of
docs/lint.md (between the BEGIN/END markers). A test checks the file is current.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from pgferry.lint.model import Rule

BEGIN = "<!-- BEGIN GENERATED RULES (python -m pgferry.lint.docs) -->"
END = "<!-- END GENERATED RULES -->"


def _doc(rule: type[Rule]) -> str:
    doc = inspect.cleandoc(rule.__doc__ or "")
    out: list[str] = []
    in_code = False
    for line in doc.splitlines():
        if in_code and line and not line.startswith("    "):
            while out and not out[-1].strip():
                out.pop()
            out += ["```", ""]
            in_code = False
        if line.rstrip().endswith("::"):
            out += [f"**{line.rstrip()[:-2].strip()}**", "", "```sql"]
            in_code = True
            continue
        out.append(line[4:] if in_code and line.startswith("    ") else line)
    if in_code:
        while out and not out[-1].strip():
            out.pop()
        out.append("```")
    return "\n".join(out).replace("```sql\n\n", "```sql\n").replace("\n\n\n", "\n\n")


def markdown(rules: list[type[Rule]]) -> str:
    lines = [
        "| code | rule | severity | PostgreSQL | default | squawk |",
        "|---|---|---|---|---|---|",
    ]
    for r in rules:
        lines.append(
            f"| {r.code} | [{r.name}](#{r.name}) | {r.severity} | {r.versions()} | "
            f"{'off (opt-in)' if r.opt_in else 'on'} | "
            f"{', '.join(r.squawk) or '—'} |"
        )
    for r in rules:
        lines += [
            "",
            f"### {r.name}",
            "",
            f"`{r.code}` · {r.severity} · PostgreSQL {r.versions()}"
            + (" · opt-in" if r.opt_in else "")
            + (f" · lock: {r.lock}" if r.lock else ""),
            "",
            f"> {r.message}",
            "",
            _doc(r),
        ]
        if r.help:
            lines += ["", f"Safe way: {r.help}"]
    return "\n".join(lines) + "\n"


def update(path: Path) -> bool:
    """Rewrite the generated block of ``path``; True when it changed."""
    from pgferry.lint.rules import ALL_RULES

    text = path.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    new = f"{head}{BEGIN}\n\n{markdown(ALL_RULES)}\n{END}{tail}"
    if new != text:
        path.write_text(new, encoding="utf-8")
        return True
    return False


if __name__ == "__main__":  # pragma: no cover
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/lint.md")
    print(f"{target}: {'updated' if update(target) else 'up to date'}")

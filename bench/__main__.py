"""``python -m bench [name] [args...]`` (``./run bench``): run one benchmark, or all of them.

Every ``bench/<name>.py`` with a ``main(argv)`` is a benchmark; without a name
they run in alphabetical order with no arguments. Benchmarks print ratios;
they are never tests.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def names() -> list[str]:
    here = Path(__file__).parent
    found = []
    for p in sorted(here.glob("*.py")):
        if p.stem.startswith("_"):
            continue
        if "def main(" in p.read_text(encoding="utf-8"):
            found.append(p.stem)
    return found


def main(argv: list[str]) -> int:
    available = names()
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: python -m bench [{'|'.join(available)}] [args...]")
        return 0
    if argv:
        if argv[0] not in available:
            print(f"unknown benchmark {argv[0]!r}; have: {', '.join(available)}", file=sys.stderr)
            return 2
        return int(importlib.import_module(f"bench.{argv[0]}").main(argv[1:]) or 0)
    rc = 0
    for name in available:
        print(f"== bench {name} ==", flush=True)
        rc = max(rc, int(importlib.import_module(f"bench.{name}").main([]) or 0))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""What the demo's steps share: :class:`Demo` (the project and a way to run pgferry in it)
and :class:`DemoStep`. The steps live in :mod:`pgferry.demo` (migrations),
:mod:`pgferry.demo_sync` and :mod:`pgferry.demo_backup`; :func:`pgferry.demo.run` runs them.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgferry import jsonio
from pgferry.errors import OperationFailed


@dataclass
class Demo:
    """What steps share: the demo project and a way to run pgferry in it."""

    directory: Path
    st: Any  # pgferry.cli.common.State of the `demo` command
    results: dict[str, Any] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.directory / "pgferry.toml"

    def say(self, text: str) -> None:
        """Narration: stdout in text mode, stderr under --json (stdout holds one object)."""
        if self.st.json:
            self.st.note(text)
        else:
            self.st.out.print(text)

    def cli(self, *args: str, expect: tuple[int, ...] = (0,)) -> dict[str, Any] | None:
        """Run ``pgferry --config <demo> ARGS`` in-process, showing its output.

        Under ``--json`` the command runs with ``--json`` too and its object is
        returned (and kept in the demo's result) instead of printed.
        """
        from pgferry.cli.app import main

        argv = ["--config", str(self.config_path), *args]
        shown = "pgferry " + " ".join(args)
        obj: dict[str, Any] | None = None
        if self.st.json:
            buf = io.StringIO()
            with redirect_stdout(buf):
                code = main(["--json", *argv])
            text = buf.getvalue().strip()
            obj = jsonio.loads(text.splitlines()[-1]) if text else None
            self.outputs.append({"command": shown, "exit_code": code, "output": obj})
        else:
            self.st.out.print(f"\n[bold cyan]$ {shown}[/]")
            code = main(argv)
        if code not in expect:
            raise OperationFailed(
                f"demo step `{shown}` exited {code}, expected {' or '.join(map(str, expect))}"
            )
        return obj


@dataclass
class DemoStep:
    title: str
    fn: Callable[[Demo], None]

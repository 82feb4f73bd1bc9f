"""What every command line verb shares: global state, ``--json`` output, asking a person.

Contract: a verb gets :class:`State` from the Typer context with :func:`state`,
calls its command function (:mod:`pgferry.commands`) with the config, its
options, :meth:`State.confirm` (a person at a terminal is asked; None
elsewhere, so the command refuses) and a progress subscriber, renders the
result with :meth:`State.emit` (exactly one JSON object on stdout under
``--json``, rich text otherwise) and exits with the result's code. A
:class:`~pgferry.errors.PgferryError` raised anywhere becomes one line and its
exit code in :func:`pgferry.cli.app.main`.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pgferry import jsonio

if TYPE_CHECKING:  # imported where used: a command loads only what it needs
    from rich.console import Console

    from pgferry.commands.base import Confirm, Question
    from pgferry.config import Config
    from pgferry.events import Event

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
EnvOpt = Annotated[
    str | None,
    typer.Option(
        "--env", "-e", help="Environment from pgferry.toml (default: the only one, else 'dev')."
    ),
]
YesOpt = Annotated[
    bool, typer.Option("--yes", "-y", help="Confirm a write to a protected environment.")
]


@dataclass
class State:
    config_path: Path | None = None
    json: bool = False
    debug: bool = False
    _config: Config | None = field(default=None, repr=False)
    _out: Console | None = field(default=None, repr=False)
    _err: Console | None = field(default=None, repr=False)

    @property
    def out(self) -> Console:
        """The stdout console (made on first use: --json output never needs it)."""
        if self._out is None:
            self._out = console()
        return self._out

    @property
    def err(self) -> Console:
        """The stderr console for progress and notes."""
        if self._err is None:
            self._err = console(stderr=True)
        return self._err

    def config(self, required: bool = True) -> Config:
        if self._config is None:
            from pgferry.config import load_config

            self._config = load_config(self.config_path, required=required)
        return self._config

    @property
    def interactive(self) -> bool:
        """A person at a terminal who can answer a question (not --json, not piped)."""
        return not self.json and sys.stdin.isatty() and sys.stderr.isatty()

    def confirm(self) -> Confirm | None:
        """The callback a command asks before it writes (None: nobody can answer)."""
        if not self.interactive:
            return None

        def ask(q: Question) -> bool:
            return bool(typer.confirm(q.prompt, default=False, err=True))

        return ask

    def notices(self) -> Callable[[Event], None]:
        """A subscriber printing :class:`~pgferry.events.Notice` lines on stderr."""
        from pgferry.cli.progress import Notices

        return Notices(self.err)

    def with_json(self, flag: bool) -> State:
        self.json = self.json or flag
        return self

    def emit(self, obj: dict[str, Any], render: Callable[[Console], None] | None = None) -> None:
        """Print ``obj`` as JSON under --json, else call ``render`` (or print it plainly)."""
        if self.json:
            sys.stdout.write(dumps(obj) + "\n")
            sys.stdout.flush()
        elif render is not None:
            render(self.out)
        else:
            for k, v in obj.items():
                self.out.print(f"{k}: {v}")

    def note(self, text: str) -> None:
        """A progress or warning line: stderr, so --json stdout stays one object."""
        self.err.print(text)


def console(stderr: bool = False) -> Console:
    """A rich console; piped output gets 120 columns so tables keep their names whole."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(
        stderr=stderr, highlight=False, soft_wrap=not stderr, width=120 if piped else None
    )


def _default(o: Any) -> Any:
    if isinstance(o, datetime | date):
        return o.isoformat()
    if isinstance(o, timedelta):
        return o.total_seconds()
    if isinstance(o, Decimal):
        return str(o)
    # a count or a measure from numpy (the comparison's) stays a number, not its text
    if isinstance(o, Integral):
        return int(o)
    if isinstance(o, Real):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, set | frozenset):
        return sorted(o)
    if hasattr(o, "model_dump"):
        return o.model_dump()
    if hasattr(o, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(o)
    return str(o)


def dumps(obj: Any) -> str:
    return jsonio.dumps(obj, default=_default)


def state(ctx: typer.Context, json_flag: bool = False) -> State:
    st = ctx.find_object(State)
    if st is None:  # invoked without the root callback (tests calling a sub-app)
        st = State()
        ctx.obj = st
    return st.with_json(json_flag)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (CI cancel, ``kill``) behaves like Ctrl-C: cancel, roll back, journal, exit 3."""

    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. under a server): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)

"""``pgferry demo``: the whole story, end to end, on the embedded server.

Contract: :func:`run` builds a fresh demo project in ``directory`` from
``examples/legal-platform`` (it wipes what an earlier demo left there and drops
that demo's embedded databases first; it refuses to wipe a directory that is
neither empty nor an earlier demo), then runs :data:`STEPS` in order, printing
what a user would see, and returns a summary for ``--json``. A step that does
not end as expected raises :class:`~pgferry.errors.OperationFailed`.

Each capability adds its steps by appending a :class:`Step` to :data:`STEPS`;
a step gets the :class:`Demo` and calls ``demo.cli(...)`` (the real CLI,
in-process) or service functions, and may put figures in ``demo.results``.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgferry.errors import BadInput, OperationFailed

EXAMPLE = "legal-platform"
MARKER = ".pgferry-demo"


def examples_dir() -> Path:
    """``examples/`` of the repository (source checkout or editable install)."""
    return Path(__file__).resolve().parents[2] / "examples"


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
            obj = json.loads(text.splitlines()[-1]) if text else None
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
class Step:
    title: str
    fn: Callable[[Demo], None]


# -- the migration story ------------------------------------------------------


def step_environments(d: Demo) -> None:
    d.say("Two environments on the embedded server: dev, and prod (protected).")
    d.cli("env", "check")


def step_status_before(d: Demo) -> None:
    d.say("Twelve versioned migrations, an undo file and a repeatable view, none applied yet.")
    d.cli("migrate", "status", "--env", "dev")
    d.cli("migrate", "validate", "--env", "dev")


def step_up_dev(d: Demo) -> None:
    d.say(
        "Apply them to dev. Each file runs in its own transaction with lock_timeout set; "
        "the CREATE INDEX CONCURRENTLY files run statement by statement."
    )
    d.cli("migrate", "up", "--env", "dev")


def step_up_prod(d: Demo) -> None:
    d.say("prod is protected: writes need --yes (a terminal would ask instead).")
    d.cli("migrate", "up", "--env", "prod", "--yes")


def step_status_after(d: Demo) -> None:
    from pgferry.config import load_config
    from pgferry.migrate import status as status_mod
    from pgferry.pg.connect import resolve_env

    d.cli("migrate", "status", "--env", "prod")
    cfg = load_config(d.config_path)
    versions = {}
    for env in ("dev", "prod"):
        s = status_mod.collect(cfg, resolve_env(cfg, env))
        versions[env] = {"current_version": s.current, "counts": s.counts()}
    d.results["migrations"] = versions
    if versions["dev"]["current_version"] != versions["prod"]["current_version"]:
        raise OperationFailed(f"dev and prod ended at different versions: {versions}")


def step_journal(d: Demo) -> None:
    d.say("Every write is in the journal of the database it changed.")
    d.cli("journal", "--env", "prod", "--limit", "5")


STEPS: list[Step] = [
    Step("environments", step_environments),
    Step("migration status", step_status_before),
    Step("migrate dev", step_up_dev),
    Step("migrate prod", step_up_prod),
    Step("status after", step_status_after),
    Step("journal", step_journal),
]


def _sync_steps() -> list[Step]:
    # the sync story (seed dev, verify finds the gap, sync, verify again) lives in demo_sync
    from pgferry.demo_sync import steps

    return steps()


def _backup_steps() -> list[Step]:
    # back up prod after the sync, test-restore it, list it: demo_backup
    from pgferry.demo_backup import steps

    return steps()


def _zdt_steps() -> list[Step]:
    # a rename in prod, expand -> backfill -> contract, then migrate test: demo_zdt
    from pgferry.demo_zdt import steps

    return steps()


STEPS += _sync_steps()
STEPS += _backup_steps()
STEPS += _zdt_steps()


# -- building the demo project --------------------------------------------------


def _databases(config: Path) -> list[str]:
    from pgferry.config import load_config

    cfg = load_config(config)
    return [e.database or f"pgferry_{n}" for n, e in cfg.environments.items() if not e.url]


def prepare(directory: Path) -> Path:
    """A fresh copy of the example in ``directory``; its embedded server data is kept."""
    from pgferry.pg import embedded

    src = examples_dir() / EXAMPLE
    if not (src / "pgferry.toml").is_file():
        raise BadInput(
            f"example project not found at {src}; run the demo from a pgferry "
            "source checkout (./run demo)"
        )
    directory = directory.resolve()
    if directory.exists():
        if not directory.is_dir():
            raise BadInput(f"{directory} is a file, not a directory for the demo")
        if any(directory.iterdir()) and not (directory / MARKER).exists():
            raise BadInput(
                f"{directory} is not empty and was not made by `pgferry demo`; "
                "pick another --dir (nothing was deleted)"
            )
    directory.mkdir(parents=True, exist_ok=True)
    emb = directory / ".pgferry"
    old_config = directory / "pgferry.toml"
    if (emb / "pgdata").is_dir():
        names = _databases(old_config if old_config.is_file() else src / "pgferry.toml")
        for name in names:
            embedded.drop_database(emb, name)
    for child in directory.iterdir():
        if child.name == ".pgferry":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    shutil.copytree(
        src,
        directory,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(".pgferry", ".env", "__pycache__"),
    )
    (directory / MARKER).write_text(
        "made by `pgferry demo`; rebuilt on every run\n", encoding="utf-8"
    )
    return directory


def run(directory: Path, st: Any, steps: list[Step] | None = None) -> dict[str, Any]:
    """Build the demo project and run the steps; the summary for ``--json``."""
    d = Demo(prepare(directory), st)
    d.say(f"demo project: {d.directory} (a copy of examples/{EXAMPLE})")
    done: list[dict[str, Any]] = []
    for step in steps if steps is not None else STEPS:
        d.say(f"\n[bold]== {step.title} ==[/]")
        t0 = time.monotonic()
        step.fn(d)
        done.append({"title": step.title, "seconds": round(time.monotonic() - t0, 3)})
    return {
        "directory": str(d.directory),
        "steps": done,
        "results": d.results,
        **({"outputs": d.outputs} if st.json else {}),
    }

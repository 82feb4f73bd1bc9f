"""``pgferry demo``: the whole story, end to end, on the embedded server.

Contract: :func:`run` builds a fresh demo project in ``directory`` from
``examples/legal-platform`` (it wipes what an earlier demo left there and drops
that demo's embedded databases first; it refuses to wipe a directory that is
neither empty nor an earlier demo), then runs :data:`STEPS` in order, printing
what a user would see, and returns a summary for ``--json``. A step that does
not end as expected raises :class:`~pgferry.errors.OperationFailed`.

:func:`register` adds the ``demo`` command to the root app (the demo drives the
command line, so it sits above it). Each capability adds its steps by appending
a :class:`DemoStep` to :data:`STEPS`;
a step gets the :class:`Demo` and calls ``demo.cli(...)`` (the real CLI,
in-process) or service functions, and may put figures in ``demo.results``.
"""

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

from pgferry.demo_story import Demo as Demo
from pgferry.demo_story import DemoStep as DemoStep
from pgferry.errors import BadInput, OperationFailed

EXAMPLE = "legal-platform"
MARKER = ".pgferry-demo"


def examples_dir() -> Path:
    """``examples/`` of the repository (source checkout or editable install)."""
    return Path(__file__).resolve().parents[2] / "examples"


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


STEPS: list[DemoStep] = [
    DemoStep("environments", step_environments),
    DemoStep("migration status", step_status_before),
    DemoStep("migrate dev", step_up_dev),
    DemoStep("migrate prod", step_up_prod),
    DemoStep("status after", step_status_after),
    DemoStep("journal", step_journal),
]


def _sync_steps() -> list[DemoStep]:
    # the sync story (seed dev, verify finds the gap, sync, verify again) lives in demo_sync
    from pgferry.demo_sync import steps

    return steps()


def _backup_steps() -> list[DemoStep]:
    # back up prod after the sync, test-restore it, list it: demo_backup
    from pgferry.demo_backup import steps

    return steps()


def _zdt_steps() -> list[DemoStep]:
    # a rename in prod, expand -> backfill -> contract, then migrate test: demo_zdt
    from pgferry.demo_zdt import steps

    return steps()


STEPS += _sync_steps()
STEPS += _backup_steps()
STEPS += _zdt_steps()


def step_service(d: Demo) -> None:
    """How to run the same things as a team, over HTTP (docs/service.md); printed, not run."""
    cfg = f"--config {d.config_path}"
    url = "http://127.0.0.1:8765"
    auth = '-H "Authorization: Bearer $TOKEN"'
    d.say(
        "The same capabilities as a service for a team (docs/service.md): an HTTP API on "
        "127.0.0.1, runs as durable jobs, live progress, a second person's approval for prod."
    )
    d.say(f"  export TOKEN=$(pgferry {cfg} token create --name you --role admin)")
    d.say(f"  pgferry {cfg} serve &")
    d.say(f"  curl -s {auth} {url}/api/admin/production-health")
    d.say(
        f"  curl -s {auth} -H 'Content-Type: application/json' -d "
        '\'{"mode": "verify", "source": "dev", "target": "prod"}\' '
        f"{url}/api/admin/environment-sync"
    )
    d.say(
        f"  curl -s {auth} -H 'Content-Type: application/json' -d '{{}}' "
        f"{url}/api/admin/professional-migration"
    )
    d.say(
        "prod is protected: the migration waits for a second token holder (role approver): "
        f'curl -s -X POST -H "Authorization: Bearer $OTHER" {url}/api/runs/RUN_ID/approve'
    )


STEPS.append(DemoStep("the admin service", step_service))


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


def run(directory: Path, st: Any, steps: list[DemoStep] | None = None) -> dict[str, Any]:
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


def register(app: "typer.Typer") -> None:
    """Add ``pgferry demo`` to the root Typer ``app`` (this module has no ``from __future__
    import annotations``: Typer reads the command's annotations as objects)."""
    from typing import Annotated

    import typer

    from pgferry.cli.common import JsonOpt, state

    @app.command("demo")
    def demo(
        ctx: typer.Context,
        directory: Annotated[
            Path, typer.Option("--dir", help="Where to build the demo project.")
        ] = Path(".pgferry/demo"),
        json_: JsonOpt = False,
    ) -> None:
        """Run the whole story end to end on the embedded server."""
        st = state(ctx, json_)
        result = run(directory, st)
        st.emit({"ok": True, **result}, lambda out: out.print("[bold green]demo finished[/]"))

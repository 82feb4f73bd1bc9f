"""``init`` and ``embedded status|stop|url``: the project and the embedded server.

Contract: :func:`init` scaffolds a project directory; the ``embedded`` verbs
report on, stop, or name the URL of the embedded server under ``[embedded]
dir``. (``embedded psql`` hands the terminal to psql and ``demo`` tells the
story through the command line itself: both are the CLI's own.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgferry.commands import base
from pgferry.config import Config
from pgferry.errors import BadInput

if TYPE_CHECKING:
    from pgferry.pg.connect import Target


@dataclass
class InitResult:
    directory: Path
    written: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "directory": str(self.directory), "written": self.written}


def init(directory: Path, *, force: bool = False) -> InitResult:
    """``init``: pgferry.toml, migrations/, .env.template and .gitignore entries."""
    from pgferry import scaffold

    written = scaffold.init(directory, force=force)
    return InitResult(directory.resolve(), written)


@dataclass
class EmbeddedStatus:
    running: bool
    dir: Path
    idle_stop: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "running": self.running,
            "dir": str(self.dir),
            "idle_stop": self.idle_stop,
        }


def embedded_status(cfg: Config) -> EmbeddedStatus:
    """``embedded status``: is the embedded server running, and where is its data?"""
    from pgferry.pg import embedded

    return EmbeddedStatus(
        embedded.is_running(cfg.embedded_dir), cfg.embedded_dir, str(cfg.embedded.idle_stop)
    )


@dataclass
class EmbeddedStopped:
    stopped: bool

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "stopped": self.stopped}


def embedded_stop(cfg: Config) -> EmbeddedStopped:
    """``embedded stop``: stop the server (the next command that needs it starts it)."""
    from pgferry.pg import embedded

    return EmbeddedStopped(embedded.stop(cfg.embedded_dir))


def embedded_target(cfg: Config, env: str | None) -> Target:
    """An environment on the embedded server (started if needed), else BadInput."""
    t = base.target(cfg, env)
    if not t.embedded:
        raise BadInput(
            f"environment {t.name!r} has a url, it is not on the embedded server; "
            "use your own psql with that URL"
        )
    return t


@dataclass
class EmbeddedUrl:
    env: str
    url: str

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "env": self.env, "url": self.url}


def embedded_url(cfg: Config, env: str | None = None) -> EmbeddedUrl:
    """``embedded url``: the URL of an environment on the embedded server."""
    from pgferry.pg import embedded

    t = embedded_target(cfg, env)
    return EmbeddedUrl(t.name, embedded.url(t.dsn))

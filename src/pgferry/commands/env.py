"""``env check`` and ``env template``.

Contract: :func:`check` reports every environment (or one): variables set, no
placeholders, URLs parse, TLS for protected ones, the server answers; problems
are in the result (:attr:`EnvCheckResult.exit_code` 1), never raised.
:func:`template` writes ``.env.template`` with every variable the config uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgferry import envcheck
from pgferry.config import Config


@dataclass
class EnvCheckResult:
    reports: list[envcheck.EnvReport]

    @property
    def problems(self) -> list[str]:
        return [p for r in self.reports for p in r.problems]

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.problems,
            "environments": [envcheck.report_dict(r) for r in self.reports],
        }


def check(cfg: Config, env: str | None = None) -> EnvCheckResult:
    """``env check``: is every environment (or ``env``) usable and safe?"""
    return EnvCheckResult(envcheck.check(cfg, env))


@dataclass
class TemplateResult:
    path: Path
    variables: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "path": str(self.path), "variables": self.variables}


def template(cfg: Config, output: str = ".env.template") -> TemplateResult:
    """``env template``: write ``output`` (relative to the project) listing every variable."""
    path = cfg.root / output
    path.write_text(envcheck.template(cfg), encoding="utf-8")
    return TemplateResult(path, sorted({v for v, _, _ in cfg.variables()}))

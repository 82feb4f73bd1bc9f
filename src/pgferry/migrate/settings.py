"""What the runner is told and what it reports: :class:`RunSettings` and :class:`FileResult`.

Contract: :meth:`RunSettings.from_config` is the ``[migrate]`` table as the runner uses it
(PostgreSQL setting values, seconds); :class:`FileResult` is one applied (or undone)
file, as ``--json``, the progress lines and the journal show it. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pgferry.config import Config, parse_duration, pg_duration
from pgferry.migrate.files import MigrationKind

#: a file runs in one transaction, or statement by statement in autocommit
TxMode = Literal["transaction", "autocommit"]


@dataclass(frozen=True)
class RunSettings:
    schema: str
    table: str
    lock_timeout: str  # PostgreSQL setting value, e.g. '250ms'
    statement_timeout: str | None
    lock_retries: int
    lock_wait: float  # seconds
    undo_history: str = "flyway"  # [migrate] undo_history

    @classmethod
    def from_config(cls, cfg: Config) -> RunSettings:
        m = cfg.migrate
        return cls(
            m.schema_,
            m.history_table,
            pg_duration(m.lock_timeout),
            pg_duration(m.statement_timeout) if m.statement_timeout else None,
            m.lock_retries,
            m.lock_wait.total_seconds(),
            m.undo_history,
        )

    @property
    def lock_timeout_s(self) -> float:
        return parse_duration(self.lock_timeout).total_seconds()

    def session_sql(self, local: bool) -> list[str]:
        """The settings as SQL, for ``migrate plan``."""
        verb = "SET LOCAL" if local else "SET"
        out = [f"{verb} lock_timeout = '{self.lock_timeout}'"]
        if self.statement_timeout:
            out.append(f"{verb} statement_timeout = '{self.statement_timeout}'")
        return out


@dataclass
class FileResult:
    script: str
    version: str | None
    kind: MigrationKind
    mode: TxMode
    duration_ms: int
    attempts: int = 1
    statements: int = 0
    resumed_after: int = 0
    installed_rank: int | None = None
    dropped_invalid_indexes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

"""``manifest.json`` and ``verification.json``: the catalog contract the health check reads.

Contract (keep it exactly; docs/backups.md documents it): a complete backup
``<[backup] dir>/<env>/<id>/`` has ``manifest.json``, a JSON object with at
least ``id``, ``env``, ``database``, ``started_at`` and ``finished_at``
(ISO-8601 UTC), ``size_bytes``, ``tables`` ({"schema.table": rows}),
``files`` ({path: {"sha256", "size"}}), ``server_version``,
``pg_dump_version``, ``tool_version``, ``tag`` and ``keep``. The verify
sidecar ``verification.json`` beside it is ``{"verified_at": ISO | null,
"verify_ok": bool, "restore_tested_at": ISO | null, "restore_test_ok": bool,
"problems": [...]}``. The manifest is written once, last; it is never
rewritten (verification results go into the sidecar).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

FORMAT_VERSION = 1


def iso(at: datetime) -> str:
    """An aware datetime as ISO-8601 UTC with a ``Z``, to the millisecond."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    at = datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@dataclass
class Manifest:
    id: str
    env: str
    database: str
    started_at: str
    finished_at: str
    size_bytes: int
    tables: dict[str, int]
    files: dict[str, dict[str, Any]]
    server_version: str
    pg_dump_version: str
    tool_version: str
    tag: str | None = None
    keep: bool = False
    format: str = "directory"
    compression: str = "gzip"
    #: None, or the key derivation parameters (never the key): see backup/crypto.py
    encryption: dict[str, Any] | None = None
    manifest_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Manifest:
        known = {k: obj[k] for k in cls.__dataclass_fields__ if k in obj}
        return cls(**known)


@dataclass
class Verification:
    verified_at: str | None = None
    verify_ok: bool = False
    restore_tested_at: str | None = None
    restore_test_ok: bool = False
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any] | None) -> Verification:
        if not obj:
            return cls()
        return cls(**{k: obj[k] for k in cls.__dataclass_fields__ if k in obj})

"""The backup catalog on disk, as health needs it: the newest complete and restore-tested.

This mirrors the contract of ``pgferry.backup.catalog`` (being built on another
branch; switch this module to its API when they meet): backups of an environment
live in ``<[backup] dir>/<env>/<backup id>/`` (``[backup] dir`` defaults to
``backups/`` beside pgferry.toml). A backup is complete when it has a
``manifest.json`` with at least ``id``, ``env``, ``started_at``, ``finished_at``
(ISO-8601 UTC) and ``size_bytes``; a sidecar ``verification.json`` beside it holds
``verified_at``, ``verify_ok``, ``restore_tested_at`` and ``restore_test_ok``.

Contract: :func:`read` never raises for a broken backup (an unreadable or partial
manifest is simply not complete); it returns :class:`~pgferry.health.facts.Backups`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgferry.config import Config
from pgferry.health.facts import Backups

DEFAULT_DIR = "backups"
MANIFEST_KEYS = ("id", "env", "started_at", "finished_at", "size_bytes")


def backup_root(cfg: Config) -> Path:
    """``[backup] dir`` when the config has that section, else ``backups/`` beside it."""
    section = getattr(cfg, "backup", None)
    return (cfg.root / str(getattr(section, "dir", None) or DEFAULT_DIR)).resolve()


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read(cfg: Config, env: str) -> Backups:
    """What the catalog says about ``env``'s backups."""
    root = backup_root(cfg) / env
    shown = str(root.relative_to(cfg.root)) if root.is_relative_to(cfg.root) else str(root)
    out = Backups(directory=shown, exists=root.is_dir())
    if not out.exists:
        return out
    newest_verified: tuple[datetime, str, bool] | None = None
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        m = _json(d / "manifest.json")
        finished = _when(m.get("finished_at")) if m else None
        if m is None or finished is None or any(k not in m for k in MANIFEST_KEYS) \
                or m.get("env") not in (None, env):
            continue
        out.complete += 1
        if out.last_complete is None or finished > out.last_complete:
            out.last_complete = finished
        v = _json(d / "verification.json") or {}
        verified = _when(v.get("verified_at"))
        if verified and (newest_verified is None or verified > newest_verified[0]):
            newest_verified = (verified, str(m["id"]), v.get("verify_ok") is True)
        tested = _when(v.get("restore_tested_at"))
        if tested and v.get("restore_test_ok") is True and (
                out.last_restore_test is None or tested > out.last_restore_test):
            out.last_restore_test = tested
    if newest_verified is not None and not newest_verified[2]:
        out.last_verify_failed = newest_verified[1]
    return out

"""The backup catalog as health needs it: the newest complete and restore-tested backups.

Contract: :func:`read` reads :func:`pgferry.backup.catalog.list_backups` under
``[backup] dir`` (a backup is complete when its manifest, written last, is readable)
and never raises for a broken backup (it is simply not complete); it returns
:class:`~pgferry.health.facts.Backups`. ``last_verify_failed`` is the newest verified
backup when its verification failed; ``too_small`` is the newest complete backup when
it is below ``[backup] min_size``.
"""

from __future__ import annotations

from datetime import datetime

from pgferry.backup.catalog import BackupInfo, list_backups
from pgferry.backup.manifest import parse_iso
from pgferry.config import Config
from pgferry.health.facts import Backups


def _when(text: str | None) -> datetime | None:
    try:
        return parse_iso(text)
    except (TypeError, ValueError):  # a hand-edited or damaged file: as if absent
        return None


def _finished(i: BackupInfo) -> datetime | None:
    return _when(i.manifest.finished_at) if i.manifest else None


def read(cfg: Config, env: str) -> Backups:
    """What the catalog says about ``env``'s backups."""
    root = cfg.backup_dir / env
    shown = str(root.relative_to(cfg.root)) if root.is_relative_to(cfg.root) else str(root)
    out = Backups(directory=shown, exists=root.is_dir())
    if not out.exists:
        return out
    done = [(at, i) for i in list_backups(cfg.backup_dir, env) if (at := _finished(i))]
    out.complete = len(done)
    if not done:
        return out
    out.last_complete, newest = max(done, key=lambda x: x[0])
    if newest.size_bytes < cfg.backup.min_size_bytes:
        out.too_small = (newest.id, newest.size_bytes)
    checked = [(at, i) for _, i in done if (at := _when(i.verification.verified_at))]
    if checked:
        last = max(checked, key=lambda x: x[0])[1]
        if not last.verification.verify_ok:
            out.last_verify_failed = last.id
    tested = [
        at
        for _, i in done
        if i.verification.restore_test_ok
        and i.verification.verify_ok  # a restore test proves it while its files check out
        and (at := _when(i.verification.restore_tested_at))
    ]
    out.last_restore_test = max(tested, default=None)
    return out

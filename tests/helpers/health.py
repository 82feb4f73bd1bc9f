"""What the health tests share: a schema, the command, and readers of its output."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Cli, Project, Result

SCHEMA = """
CREATE TABLE cases (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title text NOT NULL
);
"""


def health(cli: Cli, p: Project, env: str = "prod", *args: str) -> Result:
    return cli("--config", str(p.config), "health", "--env", env, *args)


def checks(r: Result) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in r.json["checks"]}


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        name = fam.name + ("_total" if fam.type == "counter" else "")  # as exposed
        out[name] = out.get(name, []) + [(s.labels, s.value) for s in fam.samples]
    return out


def failed_syncs(target: Any, n: int = 4) -> None:
    """Journal ``n`` syncs from dev into ``target`` that failed ("cannot connect")."""
    from pgferry import journal

    for _ in range(n):
        journal.append(
            target,
            "sync",
            outcome="failed",
            exit_code=3,
            arguments={"source": "dev", "target": "prod"},
            details={"error": "cannot connect"},
        )


def fake_backup(
    root: Path,
    env: str,
    bid: str,
    finished: datetime,
    tested: datetime | None = None,
    manifest: bool = True,
) -> None:
    """A backup directory as health reads it: a manifest finished at ``finished`` (none:
    still running) and, when ``tested``, a verification then that restored fine."""
    from pgferry.backup.manifest import Manifest

    d = root / "backups" / env / bid
    d.mkdir(parents=True)
    if manifest:
        m = Manifest(
            id=bid,
            env=env,
            database="prod",
            started_at=(finished - timedelta(minutes=2)).isoformat(),
            finished_at=finished.isoformat(),
            size_bytes=1234,
            tables={},
            files={},
            server_version="18",
            pg_dump_version="18",
            tool_version="test",
        )
        (d / "manifest.json").write_text(json.dumps(m.to_dict()))
    if tested is not None:
        (d / "verification.json").write_text(
            json.dumps(
                {
                    "verified_at": tested.isoformat(),
                    "verify_ok": True,
                    "restore_tested_at": tested.isoformat(),
                    "restore_test_ok": True,
                }
            )
        )

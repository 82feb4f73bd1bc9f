"""``pgferry init``: the files a new project starts with."""

from __future__ import annotations

from pathlib import Path

from pgferry.errors import BadInput

CONFIG_TEMPLATE = """\
# pgferry configuration: see docs/configuration.md in the pgferry repository.

# An environment without `url` is a database on the embedded server (.pgferry/).
[environments.dev]

[environments.prod]
url = "${PROD_DATABASE_URL}"
protected = true

[migrate]
dir = "migrations"
schema = "public"
history_table = "flyway_schema_history"
lock_timeout = "250ms"
lock_retries = 8
# statement_timeout = "15min"
# strict_sum = true

# [[blackout]]
# from = "2026-12-20"
# to = "2027-01-03"
# envs = ["prod"]
# reason = "holiday season: nobody on call"
"""

GITIGNORE_LINES = [".env", ".pgferry/"]


def init(directory: Path, force: bool = False) -> list[str]:
    """Write the scaffold into ``directory``; returns the paths written or changed."""
    directory.mkdir(parents=True, exist_ok=True)
    cfg = directory / "pgferry.toml"
    if cfg.exists() and not force:
        raise BadInput(f"{cfg} already exists; use --force to overwrite it")
    written: list[str] = []
    cfg.write_text(CONFIG_TEMPLATE, encoding="utf-8")
    written.append(str(cfg))
    mig = directory / "migrations"
    mig.mkdir(exist_ok=True)
    written.append(str(mig) + "/")
    from pgferry import envcheck
    from pgferry.config import load_config

    tpl = directory / ".env.template"
    tpl.write_text(envcheck.template(load_config(cfg)), encoding="utf-8")
    written.append(str(tpl))
    gi = directory / ".gitignore"
    have = gi.read_text(encoding="utf-8").splitlines() if gi.exists() else []
    missing = [line for line in GITIGNORE_LINES if line not in have]
    if missing:
        with gi.open("a", encoding="utf-8") as f:
            if have and have[-1] != "":
                f.write("\n")
            f.write("\n".join(missing) + "\n")
        written.append(str(gi))
    return written

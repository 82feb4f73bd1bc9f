"""``pgferry env check`` and ``env template``: is every environment usable and safe?

Contract: :func:`check` returns one :class:`EnvReport` per environment with a
list of problems (one sentence each) and what the server said (version, role,
privileges); it never raises for a problem it can describe. :func:`template`
renders ``.env.template`` from the variables the config uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgferry.config import Config
from pgferry.errors import PgferryError
from pgferry.pg.connect import Target, connect, is_local_dsn, parse_dsn, redact, resolve_env

PLACEHOLDER = re.compile(
    r"^(change[-_ ]?me|xxx+|todo|tbd|fixme|placeholder|your[-_].*[-_]here|<[^>]*>|\.\.\.)$",
    re.IGNORECASE,
)
STRICT_SSL = ("require", "verify-ca", "verify-full")


@dataclass
class EnvReport:
    env: str
    protected: bool
    embedded: bool = False
    dsn: str = ""
    server_version: str | None = None
    role: str | None = None
    privileges: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def is_placeholder(value: str) -> bool:
    return not value.strip() or bool(PLACEHOLDER.match(value.strip()))


def check(cfg: Config, only: str | None = None, connect_db: bool = True) -> list[EnvReport]:
    names = [only] if only else sorted(cfg.environments)
    if only:
        cfg.env(only)  # unknown env is bad input, not a "problem"
    reports: list[EnvReport] = []
    values = cfg.dotenv()
    for name in names:
        env = cfg.environments[name]
        rep = EnvReport(name, env.protected, embedded=env.url is None)
        reports.append(rep)
        if env.url is not None:
            found = _check_url(cfg, name, values, rep)
            if found is None:
                continue
            target = found
        else:
            target = resolve_env(cfg, name) if connect_db else Target(name, "", env.protected, True)
            rep.dsn = target.display
        if connect_db:
            _probe(target, rep)
    return reports


def _check_url(cfg: Config, name: str, values: dict[str, str], rep: EnvReport) -> Target | None:
    """The environment's url checked (variables, placeholders, TLS): its target, or None
    with the problems in ``rep``."""
    import os

    # variables first: each missing or placeholder one is its own line
    for var, key, line in cfg.variables():
        if key != f"environments.{name}.url":
            continue
        val = os.environ.get(var, values.get(var))
        if val is None:
            rep.problems.append(f"{name}: variable {var} (line {line}) is not set")
        elif is_placeholder(val):
            rep.problems.append(
                f"{name}: variable {var} (line {line}) holds a placeholder value, not a real one"
            )
    if rep.problems:
        return None
    try:
        target = resolve_env(cfg, name)
    except PgferryError as e:
        rep.problems.append(f"{name}: {e.message}")
        return None
    rep.dsn = target.display
    params = parse_dsn(target.dsn)
    for part in ("user", "password", "host", "dbname"):
        if part in params and is_placeholder(str(params[part])):
            rep.problems.append(f"{name}: the URL's {part} is a placeholder value")
    if cfg.environments[name].protected and not is_local_dsn(target.dsn):
        mode = params.get("sslmode", "prefer")
        if mode not in STRICT_SSL:
            rep.problems.append(
                f"{name}: protected and not on localhost, but sslmode={mode}; "
                f"add ?sslmode=require (or verify-full) to the URL"
            )
    return None if rep.problems else target


def _probe(target: Target, rep: EnvReport) -> None:
    try:
        with connect(target.dsn, autocommit=True, retry_for=3) as c:
            row = c.execute(
                "SELECT current_setting('server_version'), current_user, r.rolsuper,"
                " r.rolcreatedb, r.rolcreaterole,"
                " has_database_privilege(current_database(), 'CREATE'),"
                " has_database_privilege(current_database(), 'TEMP'),"
                " pg_catalog.pg_get_userbyid(d.datdba) = current_user"
                " FROM pg_roles r, pg_database d"
                " WHERE r.rolname = current_user AND d.datname = current_database()"
            ).fetchone()
            assert row is not None
            rep.server_version, rep.role = row[0], row[1]
            rep.privileges = {
                "superuser": row[2],
                "createdb": row[3],
                "createrole": row[4],
                "create_schema": row[5],
                "temp_tables": row[6],
                "owns_database": row[7],
            }
    except PgferryError as e:
        rep.problems.append(f"{target.name}: {e.message}")
    except psycopg.Error as e:
        rep.problems.append(f"{target.name}: {redact(str(e)).splitlines()[0]}")


def template(cfg: Config) -> str:
    """The text of ``.env.template``: every variable the config uses, where, and empty."""
    lines = [
        "# Variables that pgferry.toml uses. Copy this file to .env and fill it in;",
        "# .env is git-ignored: never commit real values.",
    ]
    seen: dict[str, list[str]] = {}
    for var, key, line in cfg.variables():
        seen.setdefault(var, []).append(f"{key} (line {line})")
    for var, uses in seen.items():
        lines.append(f"# used by: {', '.join(uses)}")
        lines.append(f"{var}=")
    return "\n".join(lines) + "\n"


def report_dict(rep: EnvReport) -> dict[str, Any]:
    return {
        "env": rep.env,
        "ok": rep.ok,
        "protected": rep.protected,
        "embedded": rep.embedded,
        "dsn": rep.dsn,
        "server_version": rep.server_version,
        "role": rep.role,
        "privileges": rep.privileges,
        "problems": rep.problems,
    }

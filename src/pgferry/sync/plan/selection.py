"""Which tables a sync takes: :func:`select_tables`.

Contract: the selected ``schema.table`` names, the selection's warnings and the source
tables the target lacks, from the catalogs of both sides, the ``[sync]`` config and the
command line; an unknown name raises :class:`~pgferry.errors.BadInput` (exit 2).

Selection rules: every table of ``schemas`` present on both sides, or the
tables named by ``--tables`` (which wins over ``exclude``), else ``[sync]
tables``; names are ``schema.table`` and may hold ``*`` wildcards.
"""

from __future__ import annotations

import fnmatch

from pgferry.config import SyncConfig
from pgferry.errors import BadInput
from pgferry.pg.catalog_types import Table


def check_schemas(schemas: list[str], elsewhere: list[str], env: str) -> None:
    """BadInput when the configured ``schemas`` hold no table on ``env`` (the source) while
    other schemas (``elsewhere``) do: a sync or verify would compare nothing and say ok."""
    others = [s for s in elsewhere if s not in schemas]
    if others:
        raise BadInput(
            f"nothing to compare: no table of {env} is in [sync] schemas ({', '.join(schemas)});"
            f" its tables are in {', '.join(others)}: set [sync] schemas = "
            f"{_toml_list(schemas + others)} in pgferry.toml"
        )


def _toml_list(names: list[str]) -> str:
    return "[" + ", ".join(f'"{n}"' for n in names) + "]"


def _match(
    patterns: list[str], names: list[str], schemas: list[str], what: str, strict: bool
) -> list[str]:
    """Names matching ``patterns`` (``schema.table``, ``*`` allowed; bare names search schemas)."""
    out: list[str] = []
    for p in patterns:
        p = p.strip()
        if not p:
            continue
        cands = [p] if "." in p else [f"{s}.{p}" for s in schemas]
        hits = [n for n in names if any(fnmatch.fnmatchcase(n, c) for c in cands)]
        if not hits and strict and "." in p and p.split(".")[0] not in schemas:
            raise BadInput(
                f"{what} names table {p!r}, whose schema {p.split('.')[0]} is not synced: "
                f"[sync] schemas = {_toml_list(schemas)} in pgferry.toml; add it there"
            )
        if not hits and strict:
            raise BadInput(
                f"{what} names table {p!r}, which is not in "
                f"{'schema ' + p.split('.')[0] if '.' in p else ', '.join(schemas)}"
                " on both source and target; name tables as schema.table"
            )
        out.extend(h for h in hits if h not in out)
    return out


def select_tables(
    source: dict[str, Table],
    target: dict[str, Table],
    cfg: SyncConfig,
    tables: list[str] | None = None,
    exclude: list[str] | None = None,
    history: str | None = None,
) -> tuple[list[str], list[str], list[str]]:
    """The selected ``schema.table`` names, selection warnings and source tables the target lacks.

    BadInput on unknown names. ``history`` (the migration history table) is never
    selected implicitly: each environment's history records what ran *there*; it is
    synced only when named. A source table missing on the target (among those the
    selection would take) is schema drift: the caller reports it as a problem.
    """
    both = sorted(set(source) & set(target))
    warnings: list[str] = []
    missing: list[str] = []
    if (
        history in both
        and not tables
        and not (cfg.tables and _match(cfg.tables, [history], cfg.schemas, "", strict=False))
    ):
        both.remove(history)  # expected, so no warning on every run (docs/sync.md says it)
    if tables:
        chosen = _match(tables, both, cfg.schemas, "--tables", strict=True)
        # --tables wins over exclude: nothing is removed
        return chosen, warnings, missing
    only_source = sorted(n for n in set(source) - set(target) if n != history)
    excl_patterns = list(cfg.exclude) + list(exclude or [])
    if cfg.tables:
        chosen = _match(cfg.tables, both, cfg.schemas, "[sync] tables", strict=False)
        wanted = _match(cfg.tables, only_source, cfg.schemas, "", strict=False)
        if not chosen and not wanted:
            _match(cfg.tables, both, cfg.schemas, "[sync] tables", strict=True)
    else:
        chosen = both
        wanted = only_source
        for n in sorted(set(target) - set(source)):
            warnings.append(f"{n} exists only on the target; left untouched")
    excl = _match(excl_patterns, both, cfg.schemas, "exclude", strict=bool(exclude))
    gone = _match(excl_patterns, wanted, cfg.schemas, "exclude", strict=False)
    missing = [n for n in wanted if n not in gone]
    return [n for n in chosen if n not in excl], warnings, missing

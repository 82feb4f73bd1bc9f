"""``backup restore``: verify first, keep an emergency backup, restore all or nothing.

Contract: :func:`prepare` checks a restore of a complete backup into ``target``
and returns the :class:`Restored` it will be; :func:`into_new` and
:func:`replace` do it. The command layer (:func:`pgferry.commands.backup.restore`)
asks the policy first (blackout windows, ``--yes`` for a protected target),
journals the restore and takes the emergency backup. In order, before anything
is written:

1. (the policy: blackout window, protected environment);
2. the backup is verified (files against the manifest, table of contents): a
   damaged backup is refused (exit 1, naming the file), nothing touched;
3. ``into_new``: the dump is restored into a new database of that name on the
   target's server (exit 2 if it exists), which is dropped again if the
   restore fails; the target's own database is not touched;
4. otherwise an emergency backup of the target is taken first (tagged
   ``pre-restore``, kept; the command layer's), then ``pg_restore --clean --if-exists
   --single-transaction`` replaces what the dump holds (pgferry's own schema,
   with the target's journal, is left as it is); with ``tables``, those
   tables' rows (and their sequences) replace the target's in one
   transaction (TRUNCATE, then the data). A failure rolls the transaction
   back: the target is as it was (exit 3, naming the emergency backup).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgferry.backup import clean, loading, scratch
from pgferry.backup.catalog import BackupInfo
from pgferry.backup.verify import check, pg_restore_for, plain_dump
from pgferry.config import Config
from pgferry.errors import BadInput, OperationFailed, ProblemFound
from pgferry.pg import binaries
from pgferry.pg.connect import Target, connect, redact


@dataclass
class Restored:
    backup: BackupInfo
    env: str
    database: str
    tables: list[str] = field(default_factory=list)
    emergency_id: str | None = None
    emergency_path: Path | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "id": self.backup.id,
            "from_env": self.backup.env,
            "env": self.env,
            "database": self.database,
            "tables": self.tables or "all",
            "emergency_backup": self.emergency_id,
            "emergency_path": str(self.emergency_path) if self.emergency_path else None,
            "seconds": round(self.seconds, 3),
            "warnings": self.warnings,
        }


_PREFIX = re.compile(
    r"^(psql:\S*?:\d+: )?(pg_restore: )?(error: )?(could not execute query: )?"
    r"(ERROR:\s+)?"
)


def _error(stderr: str, rc: int) -> str:
    """The first error pg_restore or psql printed, without their prefixes."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errs = [ln for ln in lines if "error" in ln.lower()] or lines
    text = _PREFIX.sub("", redact(errs[0]).strip()) if errs else f"exit code {rc}"
    if "cannot truncate a table referenced in a foreign key constraint" in text:
        text += " (list the tables that refer to it in --tables too, or use --into-new)"
    return text


def _database(target: Target) -> str:
    with connect(target.dsn, autocommit=True) as c:
        row = c.execute("SELECT current_database()").fetchone()
    return str(row[0]) if row else "?"


def _owned_sequences(conn: psycopg.Connection[Any], tables: list[str]) -> dict[str, list[str]]:
    """schema -> sequences owned by columns of ``tables`` (serial and identity)."""
    out: dict[str, list[str]] = {}
    for t in tables:
        schema, name = t.split(".", 1)
        rows = conn.execute(
            "SELECT s.relname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid"
            " JOIN pg_class c ON c.oid = d.refobjid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE s.relkind = 'S' AND d.deptype IN ('a', 'i') AND n.nspname = %s"
            " AND c.relname = %s",
            [schema, name],
        ).fetchall()
        out.setdefault(schema, []).extend(r[0] for r in rows)
    return out


def _restore_tables(
    target: Target, dump: Path, pg_restore: binaries.Binary, tables: list[str]
) -> None:
    """TRUNCATE the tables and load their rows (and sequences) in one psql transaction."""
    psql = binaries.find("psql", pg_restore.major)
    with connect(target.dsn, autocommit=True) as c:
        older = c.info.server_version // 10000 < loading.TRANSACTION_TIMEOUT
        seqs = _owned_sequences(c, tables)
        idents = [sql.Identifier(*t.split(".", 1)) for t in tables]
        # the rows go back as they were: user triggers that fire now (an updated_at
        # stamp, an audit row) are off while they load and on again after, in the same
        # transaction; disabled ones stay as they are
        toggles = [
            (ident, sql.Identifier(name), sql.SQL("ALWAYS " if mode == "A" else ""))
            for ident in idents
            for name, mode in c.execute(
                "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid ="
                " to_regclass(%s) AND NOT tgisinternal AND tgenabled IN ('O', 'A')",
                [ident.as_string(c)],
            ).fetchall()
        ]
        # BEGIN and COMMIT are the script's own, not psql's --single-transaction: that
        # commits at the end of its input, and a pgferry killed half-way is an end of input
        prelude = sql.SQL("BEGIN;\nTRUNCATE {};\n").format(sql.SQL(", ").join(idents)).as_string(c)
        prelude += "".join(
            sql.SQL("ALTER TABLE {} DISABLE TRIGGER {};\n").format(t, g).as_string(c)
            for t, g, _ in toggles
        )
        coda = (
            "".join(
                sql.SQL("ALTER TABLE {} ENABLE {}TRIGGER {};\n").format(t, a, g).as_string(c)
                for t, g, a in toggles
            )
            + "COMMIT;\n"
        )
    script = [prelude.encode()]
    by_schema: dict[str, list[str]] = {}
    for t in tables:
        schema, name = t.split(".", 1)
        by_schema.setdefault(schema, []).append(name)
    for schema, names in by_schema.items():
        args = [str(pg_restore.path), "--data-only", "-f", "-", "-n", schema]
        for n in names + seqs.get(schema, []):
            args += ["-t", n]
        p = subprocess.run([*args, str(dump)], capture_output=True, check=False)
        if p.returncode != 0:
            raise OperationFailed(
                f"pg_restore could not read the tables of schema {schema}: "
                f"{_error(p.stderr.decode(errors='replace'), p.returncode)}"
            )
        rows = p.stdout
        if older:
            rows = b"".join(loading.strip_newer_settings(rows.splitlines(keepends=True)))
        script.append(rows)
    script.append(coda.encode())
    conninfo, env = binaries.libpq_args(target.dsn)
    p = subprocess.run(
        [
            str(psql.path),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            conninfo,
            "-f",
            "-",
        ],
        input=b"".join(script),
        capture_output=True,
        env=env,
        check=False,
    )
    if p.returncode != 0:
        raise _Failed(_error(p.stderr.decode(errors="replace"), p.returncode))


class _Failed(Exception):
    """pg_restore/psql failed; the transaction rolled back."""


def _restore_all(target: Target, dump: Path, pg_restore: binaries.Binary) -> list[str]:
    """Replace every object of the dump in one transaction, through pg_restore's script
    (:mod:`pgferry.backup.clean`); returns the statements left out for roles the target's
    server does not have."""
    # pgferry's own schema (the target's journal and sync state) stays as it is: -N leaves
    # out what is in it, the list leaves out the schema itself
    toc = subprocess.run(
        [str(pg_restore.path), "-l", str(dump)], capture_output=True, text=True, check=False
    )
    if toc.returncode != 0:
        raise _Failed(_error(toc.stderr, toc.returncode))
    keep = [ln if not _OWN_SCHEMA.match(ln) else ";" + ln for ln in toc.stdout.splitlines()]
    script = clean.Script.of(target.dsn)
    with tempfile.NamedTemporaryFile("w", suffix=".list", delete=False) as f:
        f.write("\n".join(keep) + "\n")
    listing = Path(f.name)
    try:
        rc, err = loading.run(
            pg_restore,
            [
                "--clean",
                "--if-exists",
                "--single-transaction",
                "--exit-on-error",
                "--no-owner",
                "-N",
                "pgferry",
                "-L",
                str(listing),
            ],
            target.dsn,
            dump,
            script.skip,
        )
    finally:
        listing.unlink(missing_ok=True)
    if rc != 0:
        raise _Failed(_error(err, rc))
    return script.left_out


_OWN_SCHEMA = re.compile(r"^\d+; \d+ \d+ SCHEMA - pgferry ")


def _into_new(
    cfg: Config, target: Target, dump: Path, pg_restore: binaries.Binary, name: str, jobs: int
) -> list[str]:
    """Restore ``dump`` into the new database ``name``; the grants left out (see
    :mod:`pgferry.backup.clean`)."""
    if scratch.exists(target, name):
        raise BadInput(
            f"database {name} already exists on {target.name}'s server; name a new "
            "one with --into-new (nothing was changed)"
        )
    script = clean.Script.of(target.dsn)
    # (a grant to a role this server lacks: through the script, one session, without it)
    left = script.grants_left_out(pg_restore, dump)
    dsn = scratch.create_database(cfg, target, name)
    rc, err = loading.run(
        pg_restore,
        ["-j", str(jobs), "--exit-on-error", "--no-owner"],
        dsn,
        dump,
        script.skip if left else None,
    )
    if rc != 0:
        scratch.drop_database(cfg, target, name)
        raise OperationFailed(
            f"the restore into new database {name} failed and it was dropped "
            f"again: {_error(err, rc)}; {target.name} was not touched"
        )
    return script.left_out


_LEAVES = """
SELECT n.nspname || '.' || c.relname
FROM pg_partition_tree(to_regclass(format('%%I.%%I', %(schema)s::text, %(name)s::text))) AS t
JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE t.isleaf AND t.level > 0 ORDER BY 1
"""


def _partitioned(target: Target, table: str, backed_up: Any) -> str:
    """What to name instead of a partitioned table (whose rows are in its partitions, the
    tables a dump holds), from the target's catalog; "" when it is not one there."""
    schema, _, name = table.rpartition(".")
    try:
        with connect(target.dsn, autocommit=True) as c:
            leaves = [r[0] for r in c.execute(_LEAVES, {"schema": schema, "name": name})]
    except psycopg.Error:
        return ""  # the refusal stands as it is
    held = [t for t in leaves if t in backed_up]
    if not held:
        return ""
    return (
        f" ({table} is partitioned on {target.name}: its rows are in its partitions; name "
        f"those the backup holds: --tables {','.join(held)})"
    )


def prepare(
    cfg: Config,
    target: Target,
    info: BackupInfo,
    *,
    tables: list[str] | None = None,
    into_new: str | None = None,
    jobs: int | None = None,
) -> tuple[Restored, binaries.Binary]:
    """Check a restore of ``info`` into ``target`` (nothing is written): the tables named
    are in the backup, and the backup's files and table of contents are intact."""
    m = info.manifest
    assert m is not None
    tables = list(tables or [])
    unknown = [t for t in tables if t not in m.tables]
    if unknown:
        raise BadInput(
            f"backup {info.id} has no table {', '.join(unknown)}"
            + "".join(_partitioned(target, t, m.tables) for t in unknown)
            + f"; its tables: {', '.join(sorted(m.tables)) or 'none'}"
        )
    if tables and into_new:
        raise BadInput("--tables and --into-new go separately: --into-new restores everything")
    problems = check(info, cfg.backup_dir, jobs or cfg.backup.jobs)
    if problems:
        raise ProblemFound(
            f"backup {info.id} is damaged: {problems[0]}; nothing was "
            "restored, pick another with `pgferry backup list`",
            problems=problems,
        )
    pg_restore = pg_restore_for(m)
    return Restored(info, target.name, into_new or _database(target), tables), pg_restore


def into_new(
    cfg: Config, target: Target, res: Restored, pg_restore: binaries.Binary, jobs: int | None = None
) -> None:
    """Restore ``res.backup`` into the new database ``res.database`` on ``target``'s server."""
    with plain_dump(res.backup, cfg.backup_dir) as dump:
        left = _into_new(cfg, target, dump, pg_restore, res.database, jobs or cfg.backup.jobs)
    _say_left_out(res, target, left)


def _say_left_out(res: Restored, target: Target, left: list[str]) -> None:
    if left:
        res.warnings.append(
            f"{len(left)} grant(s) to roles {target.name}'s server does not have were left "
            f"out: {'; '.join(left[:5])}"
            + (f" and {len(left) - 5} more" if len(left) > 5 else "")
            + "; create those roles and grant again where they are needed"
        )


def replace(cfg: Config, target: Target, res: Restored, pg_restore: binaries.Binary) -> None:
    """Replace what the dump holds (or ``res.tables``' rows) in ``target``, all or nothing."""
    try:
        with plain_dump(res.backup, cfg.backup_dir) as dump:
            if res.tables:
                _restore_tables(target, dump, pg_restore, res.tables)
            else:
                _say_left_out(res, target, _restore_all(target, dump, pg_restore))
    except _Failed as e:
        raise OperationFailed(
            f"the restore into {target.name} failed and was rolled back, so "
            f"{target.name} is as it was: {e}; the emergency backup is "
            f"{res.emergency_id} at {res.emergency_path}",
            emergency_backup=res.emergency_id,
        ) from None

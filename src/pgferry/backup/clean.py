"""What a restore leaves out of the script pg_restore writes (in place: its ``--clean`` one).

Contract: :meth:`Script.of` reads, from the target, what its :meth:`Script.skip` (a line
filter for :func:`pgferry.backup.loading.run`) leaves out:

- the drop of a partition's constraint that its partitioned table's stands for (a primary
  key, a unique or foreign key). pg_restore drops it before the partitioned table's, and
  the server refuses ("cannot drop inherited constraint"): every in-place restore of a
  database with a partitioned table that has a primary key failed. The partition itself is
  dropped a few statements later, with its constraints;
- a ``GRANT`` or ``REVOKE`` (of default privileges too) naming a role the target's server
  does not have (prod's backup restored into staging, whose roles are others): the whole
  restore failed on "role ... does not exist". Those statements are kept in
  :attr:`Script.left_out`, for the restore to say so. A policy ``TO`` such a role is not
  left out: it still fails the restore (a policy restored without its role would mean
  something else).

:meth:`Script.grants_left_out` reads the dump's schema alone first, so that a restore into
a new database that needs no filter keeps pg_restore's own ``-j``.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pgferry.pg import binaries
from pgferry.pg.connect import connect

#: the constraints of partitions that their partitioned table's own stands for: the server
#: refuses to drop them but with their table
_INHERITED = """
SELECT n.nspname, con.conname FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.conparentid <> 0
"""
_IDENT = r'(?:"(?:[^"]|"")*"|[^".\s;]+)'
_DROP_CONSTRAINT = re.compile(
    rf"^ALTER TABLE IF EXISTS ONLY (?P<schema>{_IDENT})\.{_IDENT} "
    rf"DROP CONSTRAINT IF EXISTS (?P<name>{_IDENT});$"
)
#: pg_dump's privileges: one grantee a statement, the last identifier (PUBLIC is none);
#: default privileges name their owner role too
_ACL = re.compile(
    rf"^(?:ALTER DEFAULT PRIVILEGES FOR ROLE (?P<owner>{_IDENT}) .+ )?"
    rf"(?:GRANT .+ TO|REVOKE .+ FROM) (?P<role>{_IDENT})(?: WITH GRANT OPTION)?"
    rf"(?: GRANTED BY {_IDENT})?;$"
)


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


@dataclass
class Script:
    """The line filter of one in-place restore, and what it left out."""

    inherited: set[tuple[str, str]]
    roles: set[str]
    left_out: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, dsn: str) -> Script:
        """What the target (``dsn``) has: partitions' inherited constraints, and its
        server's roles."""
        with connect(dsn, autocommit=True) as conn:
            inherited = {(str(r[0]), str(r[1])) for r in conn.execute(_INHERITED)}
            roles = {str(r[0]) for r in conn.execute("SELECT rolname FROM pg_roles")}
        return cls(inherited, roles)

    def grants_left_out(self, pg_restore: binaries.Binary, dump: Path) -> list[str]:
        """The privileges :meth:`skip` would leave out of ``dump``, read from its schema alone
        (no database, no rows): a restore that needs none keeps pg_restore's own ``-j``."""
        p = subprocess.run(
            [str(pg_restore.path), "--schema-only", "--no-owner", "-f", "-", str(dump)],
            capture_output=True,
            check=False,
        )
        probe = Script(self.inherited, self.roles)
        for line in p.stdout.splitlines():
            probe.skip(line)
        return probe.left_out

    def skip(self, line: bytes) -> bool:
        """Whether to leave ``line`` (a statement of the script, outside the rows) out."""
        if line.startswith(b"ALTER TABLE IF EXISTS ONLY "):
            m = _DROP_CONSTRAINT.match(line.decode(errors="replace").rstrip("\r\n"))
            return m is not None and (_unquote(m["schema"]), _unquote(m["name"])) in (
                self.inherited
            )
        if line.startswith((b"GRANT ", b"REVOKE ", b"ALTER DEFAULT PRIVILEGES ")):
            text = line.decode(errors="replace").rstrip("\r\n")
            m = _ACL.match(text)
            if m is None:
                return False
            named = [m["role"]] + ([m["owner"]] if m["owner"] else [])
            if any(r != "PUBLIC" and _unquote(r) not in self.roles for r in named):
                self.left_out.append(text.rstrip(";"))
                return True
        return False

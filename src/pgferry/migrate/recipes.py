"""``pgferry migrate new --expand-contract "..."``: the four zero-downtime recipes.

Contract:

- :func:`parse` reads the description (pure) into a :class:`Spec`, one of:

  ==================  ==========================================================
  ``rename``          ``rename users.email to email_address`` (also ``rename email to
                      email_address`` with ``--table users``)
  ``change_type``     ``change type of orders.amount to bigint`` (``change orders.amount
                      to bigint``)
  ``not_null``        ``add not null to users.email default 'unknown'`` (``set
                      users.email not null default ...``); the default is what NULLs become
  ``split``           ``split users into user_profiles (bio, avatar_url)``
  ==================  ==========================================================

  Anything else is :class:`~pgferry.errors.BadInput` (exit 2) listing the four forms.
- :func:`read_facts` reads from the environment's catalog what the SQL depends on: the
  column's type, ``NOT NULL``, default, identity, the table's primary key, and the
  indexes and constraints on the column (which the recipe cannot move for you; they are
  listed in the expand file). A missing table or column is BadInput.
- :func:`files_for` (pure, in :mod:`pgferry.migrate.recipe_sql`) renders five files:
  ``VXXX__<slug>_1_expand.sql`` (``-- pgferry:phase expand``: the new column or table and
  a trigger that keeps old and new in step while both versions of the application run),
  ``backfills/<slug>.sql`` (copies the existing rows in ``:lo``..``:hi`` batches),
  ``VXXX__<slug>_2_contract.sql`` (``-- pgferry:phase contract`` with ``after backfill``
  and a ``require`` query that finds any row still out of step; it drops the trigger and
  the old column), and the ``UXXX`` undo of both. :func:`write` refuses to overwrite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psycopg

from pgferry.errors import BadInput

Kind = Literal["rename", "change_type", "not_null", "split"]

_ID = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"[^"]+")'
_QUAL = rf"(?:{_ID}\.)?{_ID}"
FORMS = (
    "rename TABLE.COLUMN to NEW_NAME",
    "change type of TABLE.COLUMN to TYPE",
    "add not null to TABLE.COLUMN default VALUE",
    "split TABLE into NEW_TABLE (COL, ...)",
)


@dataclass
class Spec:
    kind: Kind
    schema: str | None
    table: str
    column: str = ""  # rename/change_type/not_null
    new: str = ""  # rename: the new name; change_type: the new type; split: the new table
    default: str = ""  # not_null: the value NULLs become
    columns: list[str] = field(default_factory=list)  # split: the columns that move
    description: str = ""


def _unquote(name: str) -> str:
    return name[1:-1] if name.startswith('"') else name.lower()


def _split_qual(text: str) -> list[str]:
    parts = re.findall(_ID, text)
    return [_unquote(p) for p in parts]


def _table_col(text: str, table: str | None) -> tuple[str | None, str, str]:
    parts = _split_qual(text)
    if len(parts) == 1:
        if not table:
            raise BadInput(
                f"name the table of column {parts[0]!r}: write TABLE.{parts[0]}, "
                "or pass --table TABLE"
            )
        tparts = _split_qual(table)
        return (tparts[0] if len(tparts) == 2 else None), tparts[-1], parts[0]
    if len(parts) == 2:
        return None, parts[0], parts[1]
    return parts[0], parts[1], parts[2]


def _type_ok(text: str) -> str:
    import pglast
    from pglast.parser import ParseError

    try:
        n = len(pglast.parse_sql(f"SELECT NULL::{text}"))
    except ParseError:
        n = 0
    if n != 1:
        raise BadInput(f"{text!r} is not a PostgreSQL type (e.g. bigint, numeric(12,2), text)")
    return text.strip()


def _expr_ok(text: str) -> str:
    import pglast
    from pglast.parser import ParseError

    try:
        n = len(pglast.parse_sql(f"SELECT {text}"))
    except ParseError:
        n = 0
    if n != 1:
        raise BadInput(f"default {text!r} is not one SQL value (e.g. 'unknown', 0, now())")
    return text.strip()


def parse(description: str, table: str | None = None) -> Spec:
    """The recipe a description asks for (see the module docstring); BadInput otherwise."""
    d = " ".join(description.split())
    m = re.fullmatch(
        rf"rename(?: column)? ({_QUAL}(?:\.{_ID})?) to ({_ID})"
        rf"(?: (?:on|in) ({_QUAL}))?",
        d,
        re.IGNORECASE,
    )
    if m:
        schema, t, col = _table_col(m[1], m[3] or table)
        return Spec("rename", schema, t, col, _unquote(m[2]), description=d)
    m = re.fullmatch(
        rf"change(?: (?:the )?type of)? ({_QUAL}(?:\.{_ID})?)(?: type)? to (.+)", d, re.IGNORECASE
    )
    if m:
        schema, t, col = _table_col(m[1], table)
        return Spec("change_type", schema, t, col, _type_ok(m[2]), description=d)
    m = re.fullmatch(
        rf"(?:add not null to|set|make) ({_QUAL}(?:\.{_ID})?)(?: not null)?"
        r"(?: default (.+))?",
        d,
        re.IGNORECASE,
    )
    if m and ("not null" in d.lower()):
        schema, t, col = _table_col(m[1], table)
        if not m[2]:
            raise BadInput(f"say what NULLs become: {d} default VALUE (e.g. default 'unknown')")
        return Spec("not_null", schema, t, col, default=_expr_ok(m[2]), description=d)
    m = re.fullmatch(rf"split ({_QUAL}) into ({_ID}) \((.+)\)", d, re.IGNORECASE)
    if m:
        parts = _split_qual(m[1])
        cols = [_unquote(c.strip()) for c in m[3].split(",") if c.strip()]
        if not cols or not all(re.fullmatch(_ID, c.strip()) for c in m[3].split(",")):
            raise BadInput(f"list the columns that move: split {m[1]} into {m[2]} (col, ...)")
        return Spec(
            "split",
            parts[0] if len(parts) == 2 else None,
            parts[-1],
            new=_unquote(m[2]),
            columns=cols,
            description=d,
        )
    raise BadInput(
        f"--expand-contract knows four recipes: {'; '.join(FORMS)} (got {description!r})"
    )


@dataclass
class RecipeColumn:
    name: str
    type: str
    not_null: bool
    default: str | None
    identity: str
    generated: str
    used_by: list[str] = field(default_factory=list)  # indexes/constraints on it


@dataclass
class RecipeFacts:
    schema: str
    table: str
    pk: list[tuple[str, str]]  # (column, type)
    columns: dict[str, RecipeColumn]


_FACTS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text,
       ARRAY(SELECT 'index ' || i.indexrelid::regclass::text FROM pg_index i
             WHERE i.indrelid = a.attrelid AND a.attnum = ANY(i.indkey) AND NOT i.indisprimary
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
             UNION ALL
             SELECT 'constraint ' || c.conname || ' (' || pg_get_constraintdef(c.oid) || ')'
             FROM pg_constraint c WHERE c.conrelid = a.attrelid AND a.attnum = ANY(c.conkey)
               AND c.contype <> 'p' AND c.contype <> 'n'
             UNION ALL
             SELECT 'foreign key ' || c.conname || ' of ' || c.conrelid::regclass::text
             FROM pg_constraint c WHERE c.confrelid = a.attrelid AND a.attnum = ANY(c.confkey))
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""


def read_facts(conn: psycopg.Connection[Any], spec: Spec) -> RecipeFacts:
    """What the recipe's SQL depends on, from the catalog (BadInput for what is missing)."""
    from psycopg import sql

    name = sql.Identifier(*[p for p in (spec.schema, spec.table) if p]).as_string(conn)
    row = conn.execute(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON "
        "n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
        [name],
    ).fetchone()
    if row is None:
        raise BadInput(
            f"table {name} does not exist in this environment; migrate it first, "
            "or name the table with its schema"
        )
    cols = {
        r[0]: RecipeColumn(r[0], r[1], r[2], r[3], r[4], r[5], list(r[6]))
        for r in conn.execute(_FACTS, [name]).fetchall()
    }
    pk = [
        (str(r[0]), str(r[1]))
        for r in conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_index i"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = %s::regclass AND i.indisprimary"
            " ORDER BY array_position(i.indkey, a.attnum)",
            [name],
        ).fetchall()
    ]
    f = RecipeFacts(str(row[0]), spec.table, pk, cols)
    wanted = spec.columns if spec.kind == "split" else [spec.column]
    for c in wanted:
        if c not in cols:
            raise BadInput(f"{name} has no column {c!r} (it has: {', '.join(cols)})")
        if cols[c].identity or cols[c].generated:
            raise BadInput(
                f"{name}.{c} is an identity or generated column; the recipes move "
                "plain columns only"
            )
    if len(pk) != 1:
        raise BadInput(
            f"{name} needs a single-column primary key for the backfill's key "
            f"ranges (it has {len(pk) or 'no'} primary key column(s))"
        )
    if spec.kind == "rename" and spec.new in cols:
        raise BadInput(f"{name} has a column {spec.new!r} already")
    if spec.kind == "split" and spec.column in [p for p, _ in pk]:
        raise BadInput("the primary key cannot move to the new table")
    if spec.kind == "split" and any(c in [p for p, _ in pk] for c in spec.columns):
        raise BadInput("the primary key stays: list only the columns that move")
    return f


def slug_of(spec: Spec) -> str:
    from pgferry.migrate.templates import slug

    return slug(spec.description)[:80].rstrip("_")


def write(directory: Path, backfills: Path, rendered: dict[str, str]) -> list[Path]:
    """Write the rendered files (names relative to the migrations dir, or ``backfills/...``);
    nothing is written when one exists already."""
    paths = {
        name: (backfills / name.split("/", 1)[1])
        if name.startswith("backfills/")
        else directory / name
        for name in rendered
    }
    clash = [str(p) for p in paths.values() if p.exists()]
    if clash:
        raise BadInput(f"{', '.join(clash)} exists already; pick another description")
    backfills.mkdir(parents=True, exist_ok=True)
    for name, p in paths.items():
        p.write_text(rendered[name], encoding="utf-8")
    return list(paths.values())

"""The SQL of the expand-contract recipes (pure: a spec and catalog facts in, file texts out).

Contract: :func:`files_for` returns ``{file name: text}`` for the five files of a recipe
(see :mod:`pgferry.migrate.recipes`). Identifiers are quoted by :mod:`psycopg.sql` where
they need it (plain lower-case names that are not keywords stay bare, so the files read
as a person would write them); types and defaults come from the catalog as the server
prints them. Every trigger function is named ``<table>_<column>_zdt_sync`` (cut to 63
bytes with a hash), so the contract and the undo files can drop exactly what the expand
made.
"""

from __future__ import annotations

import hashlib
import re

from psycopg import sql

from pgferry.errors import BadInput
from pgferry.migrate.recipes import RecipeFacts, Spec


def q(name: str) -> str:
    """An identifier as SQL: bare when that is the same name, else double-quoted."""
    from pglast.keywords import RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS

    if (
        re.fullmatch(r"[a-z_][a-z0-9_]*", name)
        and name not in RESERVED_KEYWORDS
        and name not in TYPE_FUNC_NAME_KEYWORDS
    ):
        return name
    return sql.Identifier(name).as_string(None)


def _name(*parts: str) -> str:
    n = "_".join(parts)
    if len(n.encode()) <= 63:
        return n
    return n[:54] + "_" + hashlib.sha256(n.encode()).hexdigest()[:8]


class _Ctx:
    def __init__(self, spec: Spec, f: RecipeFacts, slug: str, today: str) -> None:
        self.spec, self.facts, self.slug, self.today = spec, f, slug, today
        self.table = (q(f.schema) + "." if f.schema != "public" else "") + q(f.table)
        self.pk, self.pk_type = f.pk[0]
        self.PK = q(self.pk)

    def fn(self, *parts: str) -> str:
        n = _name(self.facts.table, *parts, "zdt_sync")
        return (q(self.facts.schema) + "." if self.facts.schema != "public" else "") + q(n)

    def trg(self, *parts: str) -> str:
        return q(_name(self.facts.table, *parts, "zdt_sync"))

    def head(self, step: str, what: list[str]) -> str:
        lines = [
            f"-- Expand-contract, {step}: {self.spec.description}",
            f"-- Created by `pgferry migrate new --expand-contract` on {self.today}; see "
            "docs/zero-downtime.md.",
        ]
        lines += [f"-- {w}" if w else "--" for w in what]
        return "\n".join(lines) + "\n"


def _uses(f: RecipeFacts, cols: list[str]) -> list[str]:
    found = [f"{c}: {u}" for c in cols for u in f.columns[c].used_by]
    if not found:
        return []
    return [
        "",
        "Found on the old column(s); the recipe does not move them, do it before the",
        "contract (a new index in a file of its own, CREATE INDEX CONCURRENTLY):",
        *[f"  {x}" for x in found],
    ]


def _next(c: _Ctx, contract_extra: list[str]) -> list[str]:
    return [
        "",
        f"Next: deploy; `pgferry backfill run {c.slug} --env ENV` copies the existing rows;",
        *contract_extra,
        "then `pgferry migrate up --contract --env ENV` applies step 3 once its guards pass.",
    ]


def _contract_head(c: _Ctx, require: str, ignores: str, why: str) -> str:
    return c.head(
        "step 3 of 3 (contract)",
        [
            "`pgferry migrate up` holds this file until the guards below pass and --contract is",
            "given. Every version of the application that still uses what this file drops must",
            "be gone first: name it in a guard, e.g. (delete the first `-- ` to enable it):",
            "-- pgferry:require-no-clients application_name LIKE 'myapp-v1%'",
        ],
    ) + (
        f"-- pgferry:phase contract\n-- pgferry:after backfill {c.slug}\n"
        f"-- pgferry:require {require}\n-- pgferry:ignore-file {ignores} -- {why}\n\n"
    )


def _backfill_head(c: _Ctx) -> str:
    """The first lines of every recipe's backfill file: what it is and how it runs."""
    return (
        f"-- Expand-contract, step 2 of 3 (backfill): {c.spec.description}\n"
        f"-- Run by `pgferry backfill run {c.slug} --env ENV` in batches of keys "
        ":lo..:hi.\n"
    )


def _undo_added_column(c: _Ctx, tbl: str, col: str, trg: str, fn: str, chk: str | None) -> str:
    """Undo of an expand that added ``col`` with a copying trigger (and a NOT NULL check)."""
    return (
        f"-- Undo of step 1: {c.spec.description}\n\n"
        f"DROP TRIGGER {trg} ON {tbl};\nDROP FUNCTION {fn}();\n"
        + (f"ALTER TABLE {tbl} DROP CONSTRAINT {chk};\n" if chk is not None else "")
        + f"ALTER TABLE {tbl} DROP COLUMN {col};\n"
    )


def _not_null_steps(c: _Ctx, col: str, chk: str) -> str:
    return (
        f"ALTER TABLE {c.table} VALIDATE CONSTRAINT {chk};\n"
        f"ALTER TABLE {c.table} ALTER COLUMN {q(col)} SET NOT NULL;\n"
        f"ALTER TABLE {c.table} DROP CONSTRAINT {chk};\n"
    )


def _rename(c: _Ctx) -> dict[str, str]:
    tbl, fx = c.table, c.facts
    old, new = c.spec.column, c.spec.new
    o, n = q(old), q(new)
    col = fx.columns[old]
    fn, trg = c.fn(old), c.trg(old)
    chk = q(_name(fx.table, new, "not_null"))
    body = (
        f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
        f"    IF TG_OP = 'INSERT' THEN\n"
        f"        IF NEW.{n} IS NULL THEN\n            NEW.{n} := NEW.{o};\n"
        f"        ELSIF NEW.{o} IS NULL THEN\n            NEW.{o} := NEW.{n};\n"
        f"        END IF;\n"
        f"    ELSIF NEW.{o} IS DISTINCT FROM OLD.{o} THEN\n        NEW.{n} := NEW.{o};\n"
        f"    ELSIF NEW.{n} IS DISTINCT FROM OLD.{n} THEN\n        NEW.{o} := NEW.{n};\n"
        f"    END IF;\n    RETURN NEW;\nEND $$;\n\n"
        f"CREATE TRIGGER {trg} BEFORE INSERT OR UPDATE ON {tbl}\n"
        f"    FOR EACH ROW EXECUTE FUNCTION {fn}();\n"
    )
    check = (
        f"ALTER TABLE {tbl} ADD CONSTRAINT {chk} CHECK ({n} IS NOT NULL) NOT VALID;\n"
        if col.not_null
        else ""
    )
    expand = (
        c.head(
            "step 1 of 3 (expand)",
            [
                f"Adds {new} beside {old}; a trigger keeps them equal while both versions of the",
                "application run: a write to either column is copied to the other.",
                *_uses(fx, [old]),
                *_next(c, [f"move every reader and writer of {fx.table}.{old} to {new};"]),
            ],
        )
        + f"-- pgferry:phase expand\n\nALTER TABLE {tbl} ADD COLUMN {n} {col.type};\n"
        + check
        + "\n"
        + body
    )
    u_expand = _undo_added_column(c, tbl, n, trg, fn, chk if col.not_null else None)
    backfill = (
        _backfill_head(c)
        + f"UPDATE {tbl} SET {n} = {o}\nWHERE {c.PK} BETWEEN :lo AND :hi AND {n} IS DISTINCT "
        f"FROM {o}\n"
    )
    contract = (
        _contract_head(
            c,
            f"SELECT {c.PK} FROM {tbl} WHERE {n} IS DISTINCT FROM {o} LIMIT 10",
            "ban-drop-column" + (", adding-not-nullable-field" if col.not_null else ""),
            f"nothing uses {old} any more: the guards above make sure"
            + (
                "; the CHECK validated first lets SET NOT NULL skip its scan"
                if col.not_null
                else ""
            ),
        )
        + (_not_null_steps(c, new, chk) if col.not_null else "")
        + (
            f"ALTER TABLE {tbl} ALTER COLUMN {n} SET DEFAULT {col.default};\n"
            if col.default
            else ""
        )
        + f"DROP TRIGGER {trg} ON {tbl};\nDROP FUNCTION {fn}();\n"
        + f"ALTER TABLE {tbl} DROP COLUMN {o};\n"
    )
    u_contract = (
        f"-- Undo of step 3: {c.spec.description}\n"
        "-- pgferry:ignore-file ban-drop-column, adding-required-field, "
        "update-without-where -- an emergency undo\n\n"
        f"ALTER TABLE {tbl} ADD COLUMN {o} {col.type};\n"
        f"UPDATE {tbl} SET {o} = {n};\n"
        + (
            f"ALTER TABLE {tbl} ALTER COLUMN {n} DROP DEFAULT;\n"
            f"ALTER TABLE {tbl} ALTER COLUMN {o} SET DEFAULT {col.default};\n"
            if col.default
            else ""
        )
        + (
            f"ALTER TABLE {tbl} ALTER COLUMN {o} SET NOT NULL;\n"
            f"ALTER TABLE {tbl} ALTER COLUMN {n} DROP NOT NULL;\n" + check
            if col.not_null
            else ""
        )
        + "\n"
        + body
    )
    return _files(c, expand, u_expand, backfill, contract, u_contract)


def _change_type(c: _Ctx) -> dict[str, str]:
    tbl, fx = c.table, c.facts
    old = c.spec.column
    col = fx.columns[old]
    if col.default and "nextval(" in col.default:
        raise BadInput(
            f"{fx.table}.{old} takes its default from a sequence (serial): the "
            "recipe would drop the sequence with the column; change it by hand"
        )
    tmp = next(x for x in (f"{old}_new", f"{old}_new2", f"{old}_zdt") if x not in fx.columns)
    o, n, to = q(old), q(tmp), c.spec.new
    fn, trg = c.fn(old), c.trg(old)
    chk = q(_name(fx.table, tmp, "not_null"))
    body = (
        f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
        f"    IF TG_OP = 'INSERT' OR NEW.{o} IS DISTINCT FROM OLD.{o} THEN\n"
        f"        NEW.{n} := NEW.{o}::{to};\n    END IF;\n    RETURN NEW;\nEND $$;\n\n"
        f"CREATE TRIGGER {trg} BEFORE INSERT OR UPDATE ON {tbl}\n"
        f"    FOR EACH ROW EXECUTE FUNCTION {fn}();\n"
    )
    check = (
        f"ALTER TABLE {tbl} ADD CONSTRAINT {chk} CHECK ({n} IS NOT NULL) NOT VALID;\n"
        if col.not_null
        else ""
    )
    expand = (
        c.head(
            "step 1 of 3 (expand)",
            [
                f"Adds {tmp} ({to}) beside {old} ({col.type}); a trigger writes every new value of",
                f"{old} into it, cast. The application keeps using {old}; step 3 swaps the columns",
                f"in one transaction, so {old} then has the type {to}.",
                *_uses(fx, [old]),
                *_next(c, []),
            ],
        )
        + f"-- pgferry:phase expand\n\nALTER TABLE {tbl} ADD COLUMN {n} {to};\n"
        + check
        + "\n"
        + body
    )
    u_expand = _undo_added_column(c, tbl, n, trg, fn, chk if col.not_null else None)
    backfill = (
        _backfill_head(c)
        + f"UPDATE {tbl} SET {n} = {o}::{to}\nWHERE {c.PK} BETWEEN :lo AND :hi AND {n} "
        f"IS DISTINCT FROM {o}::{to}\n"
    )
    contract = (
        _contract_head(
            c,
            f"SELECT {c.PK} FROM {tbl} WHERE {n} IS DISTINCT FROM {o}::{to} LIMIT 10",
            "ban-drop-column, renaming-column"
            + (", adding-not-nullable-field" if col.not_null else ""),
            f"{tmp} takes the name {old} in the transaction that drops the old {old}"
            + (
                "; the CHECK validated first lets SET NOT NULL skip its scan"
                if col.not_null
                else ""
            ),
        )
        + (_not_null_steps(c, tmp, chk) if col.not_null else "")
        + f"DROP TRIGGER {trg} ON {tbl};\nDROP FUNCTION {fn}();\n"
        + f"ALTER TABLE {tbl} DROP COLUMN {o};\nALTER TABLE {tbl} RENAME COLUMN {n} TO {o};\n"
        + (
            f"ALTER TABLE {tbl} ALTER COLUMN {o} SET DEFAULT {col.default};\n"
            if col.default
            else ""
        )
    )
    u_contract = (
        f"-- Undo of step 3: {c.spec.description}\n"
        "-- pgferry:ignore-file renaming-column, adding-required-field, "
        "update-without-where -- an emergency undo\n\n"
        f"ALTER TABLE {tbl} RENAME COLUMN {o} TO {n};\n"
        + (f"ALTER TABLE {tbl} ALTER COLUMN {n} DROP DEFAULT;\n" if col.default else "")
        + (f"ALTER TABLE {tbl} ALTER COLUMN {n} DROP NOT NULL;\n" + check if col.not_null else "")
        + f"ALTER TABLE {tbl} ADD COLUMN {o} {col.type};\n"
        f"UPDATE {tbl} SET {o} = {n}::{col.type};\n"
        + (
            f"ALTER TABLE {tbl} ALTER COLUMN {o} SET DEFAULT {col.default};\n"
            if col.default
            else ""
        )
        + (f"ALTER TABLE {tbl} ALTER COLUMN {o} SET NOT NULL;\n" if col.not_null else "")
        + "\n"
        + body
    )
    return _files(c, expand, u_expand, backfill, contract, u_contract)


def _not_null(c: _Ctx) -> dict[str, str]:
    tbl, fx = c.table, c.facts
    name = c.spec.column
    a, d = q(name), c.spec.default
    col = fx.columns[name]
    if col.not_null:
        raise BadInput(f"{fx.table}.{name} is NOT NULL already")
    fn, trg = c.fn(name), c.trg(name)
    chk = q(_name(fx.table, name, "not_null"))
    body = (
        f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
        f"    IF NEW.{a} IS NULL THEN\n        NEW.{a} := {d};\n    END IF;\n"
        f"    RETURN NEW;\nEND $$;\n\n"
        f"CREATE TRIGGER {trg} BEFORE INSERT OR UPDATE ON {tbl}\n"
        f"    FOR EACH ROW EXECUTE FUNCTION {fn}();\n"
    )
    check = f"ALTER TABLE {tbl} ADD CONSTRAINT {chk} CHECK ({a} IS NOT NULL) NOT VALID;\n"
    default = "" if col.default else f"ALTER TABLE {tbl} ALTER COLUMN {a} SET DEFAULT {d};\n"
    expand = (
        c.head(
            "step 1 of 3 (expand)",
            [
                f"From now on a NULL written to {name} "
                f"becomes {d} (a default and a trigger), and a",
                "CHECK constraint, NOT VALID so it takes no scan, holds every new row to it.",
                *_next(c, []),
            ],
        )
        + "-- pgferry:phase expand\n\n"
        + default
        + body
        + "\n"
        + check
    )
    u_expand = (
        f"-- Undo of step 1: {c.spec.description}\n\n"
        f"ALTER TABLE {tbl} DROP CONSTRAINT {chk};\n"
        f"DROP TRIGGER {trg} ON {tbl};\nDROP FUNCTION {fn}();\n"
        + ("" if col.default else f"ALTER TABLE {tbl} ALTER COLUMN {a} DROP DEFAULT;\n")
    )
    backfill = (
        _backfill_head(c)
        + f"UPDATE {tbl} SET {a} = {d}\nWHERE {c.PK} BETWEEN :lo AND :hi AND {a} IS NULL\n"
    )
    contract = (
        _contract_head(
            c,
            f"SELECT {c.PK} FROM {tbl} WHERE {a} IS NULL LIMIT 10",
            "adding-not-nullable-field",
            "the CHECK constraint validated first makes SET NOT NULL skip its scan",
        )
        + _not_null_steps(c, name, chk)
        + f"DROP TRIGGER {trg} ON {tbl};\nDROP FUNCTION {fn}();\n"
    )
    u_contract = (
        f"-- Undo of step 3: {c.spec.description}\n\n"
        f"ALTER TABLE {tbl} ALTER COLUMN {a} DROP NOT NULL;\n" + check + "\n" + body
    )
    return _files(c, expand, u_expand, backfill, contract, u_contract)


def _split(c: _Ctx) -> dict[str, str]:
    tbl, fx = c.table, c.facts
    cols = c.spec.columns
    N = (q(fx.schema) + "." if fx.schema != "public" else "") + q(c.spec.new)
    qc = [q(x) for x in cols]
    fwd, back = c.fn(c.spec.new), _name(c.spec.new, fx.table, "zdt_sync")
    back_fn = (q(fx.schema) + "." if fx.schema != "public" else "") + q(back)
    ftrg = c.trg(c.spec.new)
    defs = ",\n".join(
        f"    {q(x)} {fx.columns[x].type}" + (" NOT NULL" if fx.columns[x].not_null else "")
        for x in cols
    )
    create = (
        f"CREATE TABLE {N} (\n    {c.PK} {c.pk_type} PRIMARY KEY REFERENCES {tbl} "
        f"({c.PK}) ON DELETE CASCADE,\n{defs}\n);\n"
    )
    tup = ", ".join(qc)
    new_tup = ", ".join(f"NEW.{x}" for x in qc)
    all_null = " AND ".join(f"NEW.{x} IS NULL" for x in qc)
    body = (
        f"CREATE FUNCTION {fwd}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
        f"    IF pg_trigger_depth() > 1 OR (TG_OP = 'INSERT' AND {all_null}) THEN\n"
        f"        RETURN NULL;\n    END IF;\n"
        f"    INSERT INTO {N} ({c.PK}, {tup}) VALUES (NEW.{c.PK}, {new_tup})\n"
        f"    ON CONFLICT ({c.PK}) DO UPDATE SET "
        + ", ".join(f"{x} = excluded.{x}" for x in qc)
        + ";\n"
        f"    RETURN NULL;\nEND $$;\n\n"
        f"CREATE TRIGGER {ftrg} AFTER INSERT OR UPDATE OF {tup} ON {tbl}\n"
        f"    FOR EACH ROW EXECUTE FUNCTION {fwd}();\n\n"
        f"CREATE FUNCTION {back_fn}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
        f"    IF pg_trigger_depth() > 1 THEN\n        RETURN NULL;\n    END IF;\n"
        f"    UPDATE {tbl} SET "
        + ", ".join(f"{x} = NEW.{x}" for x in qc)
        + f"\n    WHERE {c.PK} = NEW.{c.PK} AND ({tup}) IS DISTINCT FROM ({new_tup});\n"
        f"    RETURN NULL;\nEND $$;\n\n"
        f"CREATE TRIGGER {q(back)} AFTER INSERT OR UPDATE ON {N}\n"
        f"    FOR EACH ROW EXECUTE FUNCTION {back_fn}();\n"
    )
    nn = [x for x in cols if fx.columns[x].not_null]
    drop_nn = "".join(f"ALTER TABLE {tbl} ALTER COLUMN {q(x)} DROP NOT NULL;\n" for x in nn)
    expand = (
        c.head(
            "step 1 of 3 (expand)",
            [
                f"Creates {c.spec.new} ({c.pk} and {', '.join(cols)}, one row per {fx.table} row);",
                "triggers copy every write of those columns "
                f"from {fx.table} to {c.spec.new} and back,",
                f"so the old application (writing {fx.table}) "
                f"and the new one (writing {c.spec.new})",
                f"see the same values. The new one inserts its {fx.table} row first, then its "
                f"{c.spec.new} row.",
                *_uses(fx, cols),
                *_next(c, [f"move every reader and writer of those columns to {c.spec.new};"]),
            ],
        )
        + "-- pgferry:phase expand\n\n"
        + create
        + drop_nn
        + "\n"
        + body
    )
    u_expand = (
        f"-- Undo of step 1: {c.spec.description}\n"
        "-- pgferry:ignore-file ban-drop-table, adding-required-field -- an emergency "
        "undo\n\n"
        f"DROP TRIGGER {ftrg} ON {tbl};\nDROP FUNCTION {fwd}();\n"
        f"DROP TABLE {N};\nDROP FUNCTION {back_fn}();\n"
        + "".join(f"ALTER TABLE {tbl} ALTER COLUMN {q(x)} SET NOT NULL;\n" for x in nn)
    )
    any_set = " OR ".join(f"{x} IS NOT NULL" for x in qc)
    backfill = (
        _backfill_head(c) + f"INSERT INTO {N} ({c.PK}, {tup})\nSELECT {c.PK}, {tup} FROM {tbl}\n"
        f"WHERE {c.PK} BETWEEN :lo AND :hi AND ({any_set})\n"
        f"ON CONFLICT ({c.PK}) DO NOTHING\n"
    )
    t_tup = ", ".join(f"t.{x}" for x in qc)
    n_tup = ", ".join(f"n.{x}" for x in qc)
    contract = (
        _contract_head(
            c,
            f"SELECT t.{c.PK} FROM {tbl} t LEFT JOIN {N} n ON n.{c.PK} = t.{c.PK} WHERE "
            f"({t_tup}) IS DISTINCT FROM ({n_tup}) LIMIT 10",
            "ban-drop-column",
            f"nothing reads or writes {', '.join(cols)} in {fx.table} any more: the guards say so",
        )
        + f"DROP TRIGGER {ftrg} ON {tbl};\nDROP FUNCTION {fwd}();\n"
        + f"DROP TRIGGER {q(back)} ON {N};\nDROP FUNCTION {back_fn}();\n"
        + f"ALTER TABLE {tbl} "
        + ", ".join(f"DROP COLUMN {x}" for x in qc)
        + ";\n"
    )
    u_contract = (
        f"-- Undo of step 3: {c.spec.description}\n"
        "-- pgferry:ignore-file update-without-where -- an emergency undo\n\n"
        f"ALTER TABLE {tbl} "
        + ", ".join(f"ADD COLUMN {q(x)} {fx.columns[x].type}" for x in cols)
        + ";\n"
        f"UPDATE {tbl} t SET "
        + ", ".join(f"{x} = n.{x}" for x in qc)
        + f" FROM {N} n WHERE n.{c.PK} = t.{c.PK};\n\n"
        + body
    )
    return _files(c, expand, u_expand, backfill, contract, u_contract)


def _files(
    c: _Ctx, expand: str, u_expand: str, backfill: str, contract: str, u_contract: str
) -> dict[str, str]:
    return {
        f"VXXX__{c.slug}_1_expand.sql": expand,
        f"UXXX__{c.slug}_1_expand.sql": u_expand,
        f"backfills/{c.slug}.sql": backfill,
        f"VXXX__{c.slug}_2_contract.sql": contract,
        f"UXXX__{c.slug}_2_contract.sql": u_contract,
    }


def files_for(spec: Spec, facts: RecipeFacts, slug: str, today: str) -> dict[str, str]:
    """The five files of the recipe (see the module docstring)."""
    c = _Ctx(spec, facts, slug, today)
    return {"rename": _rename, "change_type": _change_type, "not_null": _not_null, "split": _split}[
        spec.kind
    ](c)

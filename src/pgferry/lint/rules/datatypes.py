"""Rules about column types that are hard to change later (they apply to new tables too)."""

from __future__ import annotations

from collections.abc import Iterator

from pgferry.lint.model import Context, Hit, Node, Rule, Stmt
from pgferry.lint.rules._util import alter_actions, column_defs
from pgferry.sqltext.nodes import loc, type_name


def _types(cx: Context, st: Stmt) -> list[tuple[str, str, list[int], int | None]]:
    """(table, type name, typmods, location) of every column a statement defines or retypes."""
    cached = st.cache.get("types")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    tns: list[tuple[str, Node]] = [
        (t, c["typeName"]) for t, c, _ in column_defs(cx, st) if c.get("typeName")
    ]
    if st.kind == "AlterTableStmt":
        for table, cmd, kind, body, _ in alter_actions(cx, st):
            if cmd.get("subtype") == "AT_AlterColumnType" and kind == "ColumnDef":
                if body.get("typeName"):
                    tns.append((table, body["typeName"]))
    out = []
    for table, tn in tns:
        name, mods, _ = type_name(tn)
        out.append((table, name, mods, loc(tn)))
    st.cache["types"] = out
    return out


class _TypeRule(Rule):
    kinds = ("CreateStmt", "AlterTableStmt")
    subtypes = frozenset({"AT_AddColumn", "AT_AlterColumnType"})
    bad: frozenset[str] = frozenset()
    needs_mods = False

    def check(self, st: Stmt, cx: Context) -> Iterator[Hit]:
        # a plain function, not a generator: seven of these run on every CREATE/ALTER
        return iter(
            [
                Hit(where, table)
                for table, name, mods, where in _types(cx, st)
                if name in self.bad and (mods or not self.needs_mods)
            ]
        )


class BanCharField(_TypeRule):
    """char(n) pads with blanks and is almost always a mistake.

    Anti-pattern::

        CREATE TABLE countries (code char(2));

    Safe::

        CREATE TABLE countries (code text CHECK (length(code) = 2));
    """

    code, name, severity = "PF020", "ban-char-field", "warning"
    message = "char(n) pads values with blanks; use text (with a CHECK) or varchar"
    help = "Use text with a CHECK on length."
    bad = frozenset({"bpchar"})
    squawk = ("ban-char-field",)


class PreferTextField(_TypeRule):
    """varchar(n): changing n later takes an ACCESS EXCLUSIVE lock (shrinking rewrites).

    Anti-pattern::

        CREATE TABLE users (name varchar(100));

    Safe::

        CREATE TABLE users (name text CONSTRAINT users_name_len CHECK (length(name) <= 100));
    """

    code, name, severity = "PF021", "prefer-text-field", "warning"
    message = "varchar(n): changing the limit later locks the table; prefer text with a CHECK"
    help = "Use text with a CHECK (length(col) <= n) constraint (added NOT VALID when needed)."
    bad = frozenset({"varchar"})
    needs_mods = True
    squawk = ("prefer-text-field",)


class PreferTimestamptz(_TypeRule):
    """timestamp without time zone loses the offset; comparisons across zones go wrong.

    Anti-pattern::

        CREATE TABLE events (happened_at timestamp);

    Safe::

        CREATE TABLE events (happened_at timestamptz);
    """

    code, name, severity = "PF022", "prefer-timestamptz", "warning"
    message = "timestamp without time zone: prefer timestamptz"
    help = "Use timestamptz."
    bad = frozenset({"timestamp"})
    squawk = ("prefer-timestamp-tz",)


class PreferBigintOverInt(_TypeRule):
    """int / serial run out at 2.1 billion; moving to bigint later rewrites the table.

    Anti-pattern::

        CREATE TABLE events (id serial PRIMARY KEY, account_id int);

    Safe::

        CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                             account_id bigint);
    """

    code, name, severity = "PF023", "prefer-bigint-over-int", "warning"
    message = "32-bit integer: it can run out, and widening it later rewrites the table"
    help = "Use bigint (bigint identity for keys)."
    bad = frozenset({"int4", "int", "integer", "serial", "serial4"})
    squawk = ("prefer-bigint-over-int",)


class PreferBigintOverSmallint(_TypeRule):
    """smallint runs out at 32767; widening it later rewrites the table.

    Anti-pattern::

        CREATE TABLE items (qty smallint);

    Safe::

        CREATE TABLE items (qty bigint);
    """

    code, name, severity = "PF024", "prefer-bigint-over-smallint", "warning"
    message = "smallint runs out at 32767, and widening it later rewrites the table"
    help = "Use bigint (or int with a CHECK when space matters)."
    bad = frozenset({"int2", "smallint", "smallserial", "serial2"})
    squawk = ("prefer-bigint-over-smallint",)


class PreferIdentity(_TypeRule):
    """serial types complicate permissions, dumps and schema changes; identity is standard.

    Anti-pattern::

        CREATE TABLE users (id bigserial PRIMARY KEY);

    Safe::

        CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);
    """

    code, name, severity = "PF025", "prefer-identity", "warning"
    message = "serial column: prefer GENERATED ... AS IDENTITY"
    help = "Use bigint GENERATED ALWAYS AS IDENTITY."
    bad = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})
    squawk = ("prefer-identity",)


class PreferJsonb(_TypeRule):
    """json stores text and has no equality operator; jsonb is what you want.

    Anti-pattern::

        CREATE TABLE events (payload json);

    Safe::

        CREATE TABLE events (payload jsonb);
    """

    code, name, severity = "PF026", "prefer-jsonb", "warning"
    message = "json column: prefer jsonb (indexable, has equality, no re-parsing)"
    help = "Use jsonb."
    bad = frozenset({"json"})


class PreferBigInt(_TypeRule):
    """Any integer narrower than bigint (int, smallint, serial, smallserial).

    Off by default: ``prefer-bigint-over-int`` and ``prefer-bigint-over-smallint``
    report the same columns separately; this is squawk's former combined rule
    (squawk 2.70 no longer has it), for teams that enable it
    (``[lint] enable = ["prefer-big-int"]``).

    Anti-pattern::

        CREATE TABLE items (id serial, qty smallint);

    Safe::

        CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY, qty bigint);
    """

    code, name, severity = "PF027", "prefer-big-int", "warning"
    message = "integer narrower than bigint: widening it later rewrites the table"
    help = "Use bigint."
    bad = PreferBigintOverInt.bad | PreferBigintOverSmallint.bad
    opt_in = True


RULES: list[type[Rule]] = [
    BanCharField,
    PreferTextField,
    PreferTimestamptz,
    PreferBigintOverInt,
    PreferBigintOverSmallint,
    PreferIdentity,
    PreferJsonb,
    PreferBigInt,
]

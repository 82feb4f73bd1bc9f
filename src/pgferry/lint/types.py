"""Type names and binary coercibility: which ALTER COLUMN TYPE changes need no rewrite.

Contract: :func:`normalize` turns a catalog type (``format_type()`` text such
as ``character varying(20)``) or a parsed type (``varchar(20)``) into
(name, typmods); :func:`binary_coercible` says whether changing the old type to
the new one keeps every stored value as is (no rewrite, no scan).
"""

from __future__ import annotations

import re

from pgferry.lint.model import Node
from pgferry.sqltext.nodes import type_name

_ALIASES = {
    "character varying": "varchar",
    "character": "bpchar",
    "char": "bpchar",
    "integer": "int4",
    "int": "int4",
    "smallint": "int2",
    "bigint": "int8",
    "timestamp without time zone": "timestamp",
    "timestamp with time zone": "timestamptz",
    "time without time zone": "time",
    "time with time zone": "timetz",
    "double precision": "float8",
    "real": "float4",
    "boolean": "bool",
    "decimal": "numeric",
    "bit varying": "varbit",
}
_CATALOG = re.compile(r"^(?P<name>[^(\[]+?)\s*(?:\((?P<mods>[^)]*)\))?\s*(?P<arr>\[\])?$")


def normalize(text: str) -> tuple[str, tuple[int, ...], bool]:
    """(canonical name, typmods, is array) of a type written as text."""
    m = _CATALOG.match(text.strip().lower())
    if not m:
        return text.strip().lower(), (), False
    name = m["name"].strip().removeprefix("pg_catalog.")
    # format_type() puts the typmod inside timestamp(3) with time zone
    name = re.sub(r"\(\d+\)", "", name)
    mods = tuple(int(x) for x in (m["mods"] or "").split(",") if x.strip().isdigit())
    return _ALIASES.get(name, name), mods, bool(m["arr"])


def binary_coercible(old: str, new: Node) -> bool:
    """True when ``old`` (type text) → ``new`` (a parsed TypeName) needs no rewrite or scan."""
    o_name, o_mods, o_arr = normalize(old)
    n_raw, n_mods_l, n_arr = type_name(new)
    n_name = _ALIASES.get(n_raw, n_raw)
    n_mods = tuple(n_mods_l)
    if o_arr != n_arr:
        return False
    if (o_name, o_mods) == (n_name, n_mods):
        return True
    if o_name in ("varchar", "text", "xml") and n_name == "text":
        return True
    if o_name == "varchar" and n_name == "varchar":
        return not n_mods or (bool(o_mods) and n_mods[0] >= o_mods[0])
    if o_name == "text" and n_name == "varchar":
        return not n_mods
    if o_name == "numeric" and n_name == "numeric":
        if not n_mods:
            return True
        if not o_mods:
            return False
        o_scale = o_mods[1] if len(o_mods) > 1 else 0
        n_scale = n_mods[1] if len(n_mods) > 1 else 0
        return o_scale == n_scale and n_mods[0] >= o_mods[0]
    if o_name == "varbit" and n_name == "varbit":
        return not n_mods or (bool(o_mods) and n_mods[0] >= o_mods[0])
    return o_name == "cidr" and n_name == "inet"

"""Which functions are volatile: built-ins known by name, user functions from the catalog.

Contract: :func:`is_volatile` answers for one call. In catalog mode the target's
``pg_proc.provolatile`` decides; without a catalog, a built-in known to be
immutable or stable is safe, a known volatile one is not, and an unknown
function counts as volatile (reporting is safer than missing a rewrite).
"""

from __future__ import annotations

from pgferry.lint.model import Context

VOLATILE = frozenset(
    {
        "random",
        "random_normal",
        "setseed",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "currval",
        "lastval",
        "setval",
        "txid_current",
        "pg_current_xact_id",
        "gen_random_bytes",
        "gen_salt",
        "crypt",
    }
)

#: immutable or stable built-ins commonly used in defaults
STABLE = frozenset(
    {
        "now",
        "current_timestamp",
        "current_date",
        "current_time",
        "localtime",
        "localtimestamp",
        "transaction_timestamp",
        "statement_timestamp",
        "current_user",
        "session_user",
        "user",
        "current_role",
        "current_schema",
        "current_catalog",
        "current_setting",
        "to_timestamp",
        "to_date",
        "to_char",
        "to_number",
        "date_trunc",
        "date_part",
        "extract",
        "make_date",
        "make_time",
        "make_timestamp",
        "make_timestamptz",
        "make_interval",
        "lower",
        "upper",
        "btrim",
        "trim",
        "ltrim",
        "rtrim",
        "length",
        "char_length",
        "substr",
        "substring",
        "replace",
        "concat",
        "concat_ws",
        "format",
        "md5",
        "abs",
        "round",
        "floor",
        "ceil",
        "greatest",
        "least",
        "coalesce",
        "nullif",
        "jsonb_build_object",
        "json_build_object",
        "jsonb_build_array",
        "json_build_array",
        "to_jsonb",
        "to_json",
        "array_fill",
        "int4",
        "int8",
        "numeric",
        "text",
        "timezone",
        "age",
        "inet",
        "point",
        "daterange",
        "tstzrange",
        "int4range",
        "int8range",
        "numrange",
        "tsrange",
        "array_agg",
        "row",
        "encode",
        "decode",
        "sha256",
        "digest",
        "hstore",
        "pg_catalog",
    }
)


def is_volatile(cx: Context, schema: str, name: str) -> bool:
    """True when calling ``schema.name`` (schema may be "") is (or may be) volatile."""
    if cx.catalog is not None:
        vol = cx.catalog.volatility(schema, name)
        if vol is not None:
            return vol == "v"
    if name in VOLATILE:
        return True
    return name not in STABLE

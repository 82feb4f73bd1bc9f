"""[sync.mask] rules: compilation, bad rules (exit 2), fit to columns, the personal-data gate."""

from __future__ import annotations

import pytest

from pgferry.errors import BadInput, Refused
from pgferry.pg.catalog_types import Column, Table
from pgferry.pg.connect import Target
from pgferry.sync.masking import (
    compile_rules,
    mask_expressions,
    mask_key,
    personal_columns_unmasked,
    personal_kind,
    refuse_unmasked,
    select_list,
)

KEY = "k" * 20


def col(name: str, typ: str = "text", not_null: bool = False, oid: int = 25) -> Column:
    return Column(name, typ, not_null, False, "", "", oid)


def users() -> Table:
    return Table(
        "public",
        "users",
        columns=[
            col("id", "bigint", True, 20),
            col("email", "text"),
            col("full_name", "text"),
            col("mobile_phone", "character varying(40)", oid=1043),
            col("birth_date", "date", oid=1082),
            col("email_verified", "boolean", oid=16),
            col("name", "text"),
            col("notes", "text"),
        ],
        primary_key=("id",),
    )


def test_compile_accepts_every_rule() -> None:
    rules = compile_rules(
        {
            "public.users.email": "email",
            "*.*.phone": "phone",
            "public.users.full_name": "name",
            "public.*.h": "hash",
            "public.users.r": "redact",
            "public.users.n": "null",
            "public.users.f": "fixed:n/a",
            "public.users.k": "keep_domain_email",
            "public.users.s": "sql:left({col}, 1) || '.'",
        }
    )
    assert [r.kind for r in rules.rules] == [
        "email",
        "phone",
        "name",
        "hash",
        "redact",
        "null",
        "fixed",
        "keep_domain_email",
        "sql",
    ]
    assert rules.rules[6].arg == "n/a"
    # sql: is parsed and deparsed by pglast (normalized, comments gone)
    assert '"left"(' in rules.rules[8].arg and "'.'" in rules.rules[8].arg
    assert rules.rules[8].spec == "sql:left({col}, 1) || '.'"


@pytest.mark.parametrize(
    "key, rule, words",
    [
        ("public.users.email", "emial", "unknown rule 'emial'"),
        ("public.users.email", "fixed", "fixed needs a value"),
        ("public.users.email", "email:x", "takes no argument"),
        ("users.email", "email", 'must be "schema.table.column"'),
        ("public..email", "email", 'must be "schema.table.column"'),
        ("public.users.notes", "sql:", "needs an expression"),
        ("public.users.notes", "sql:1; DROP TABLE users", "is not an SQL expression"),
        ("public.users.notes", "sql:notes) FROM pg_authid WHERE (true", "exactly one expression"),
        ("public.users.notes", "sql:1), (2", "exactly one expression"),
        ("public.users.notes", "sql:id % 7", "may not contain '%'"),
        ("public.users.notes", "sql:lower(notes", "is not an SQL expression"),
    ],
)
def test_bad_rules_name_the_key(key: str, rule: str, words: str) -> None:
    with pytest.raises(BadInput) as e:
        compile_rules({"public.users.ok": "email", key: rule})
    assert words in str(e.value)
    assert key in str(e.value)
    assert e.value.exit_code == 2


def test_sql_comment_cannot_swallow_the_rest_of_the_select() -> None:
    rules = compile_rules({"public.users.notes": "sql:upper(notes) -- trailing comment"})
    assert "--" not in rules.rules[0].arg
    assert rules.rules[0].arg == "upper(notes)"


def test_most_specific_pattern_wins() -> None:
    rules = compile_rules(
        {"*.*.email": "email", "public.users.email": "keep_domain_email", "public.*.email": "hash"}
    )
    assert rules.rule_for("public.users", "email").kind == "keep_domain_email"  # type: ignore[union-attr]
    assert rules.rule_for("public.orders", "email").kind == "hash"  # type: ignore[union-attr]
    assert rules.rule_for("crm.leads", "email").kind == "email"  # type: ignore[union-attr]
    assert rules.rule_for("crm.leads", "Email") is None  # identifiers are case-sensitive
    assert (
        compile_rules({"public.users.*_phone": "phone"}).rule_for("public.users", "mobile_phone")
        is not None
    )


def test_unused_pattern_is_a_warning_not_an_error() -> None:
    rules = compile_rules({"*.*.email": "email", "public.nosuch.*": "redact"})
    assert rules.unused([users()]) == [
        "[sync.mask] 'public.nosuch.*' matches no column of the synced tables"
    ]


def test_collapsing_rule_on_a_unique_column_is_warned() -> None:
    t = users()
    t.unique_keys = [("email",), ("notes", "name")]
    rules = compile_rules(
        {
            "public.users.email": "fixed:x",
            "public.users.notes": "redact",
            "public.users.name": "name",
        }
    )
    assert rules.warnings([t]) == [
        "[sync.mask] 'public.users.email' = 'fixed:x' on public.users.email, which is under a "
        "UNIQUE constraint: equal masked values will be dead-lettered; use a hash-based rule "
        "(email, name, phone, hash) to keep values unique",
        "[sync.mask] 'public.users.notes' = 'redact' on public.users.notes, which is under a "
        "UNIQUE constraint: equal masked values will be dead-lettered; use a hash-based rule "
        "(email, name, phone, hash) to keep values unique",
    ]


def test_expressions_only_for_masked_columns_and_select_list() -> None:
    t = users()
    rules = compile_rules({"public.users.email": "email", "public.users.notes": "null"})
    masks = mask_expressions(rules, "public.users", t.columns, KEY, key_columns=("id",))
    assert set(masks) == {"email", "notes"}
    text = select_list(t.columns[:2] + t.columns[-1:], masks).as_string(None)
    assert text.startswith('"id", ')
    assert text.endswith('AS "email", CAST(NULL AS text) AS "notes"')
    assert "sha256(convert_to(" in text and "@example.invalid" in text


def test_secret_is_never_in_a_repr_nor_in_plain_query_text() -> None:
    t = users()
    masks = mask_expressions(
        compile_rules({"public.users.email": "email"}),
        "public.users",
        t.columns,
        "my-very-secret-key-1",
    )
    assert "my-very-secret" not in repr(masks)
    assert "my-very-secret" not in masks["email"].as_string(None)
    assert b"my-very-secret-key-1".hex() not in masks["email"].as_string(None)
    assert "current_setting('pgferry.mask_key')" in masks["email"].as_string(None)


def test_percent_never_reaches_the_query_text() -> None:
    t = Table("public", "t", columns=[col("c")])
    m = mask_expressions(
        compile_rules({"public.t.c": "fixed:100%"}), "public.t", t.columns, "%%%%-key-with-percent"
    )
    assert "%" not in m["c"].as_string(None)


@pytest.mark.parametrize(
    "rule, column, words",
    [
        ("email", col("c", "integer", oid=23), "needs a text column, but public.t.c is integer"),
        ("name", col("c", "jsonb", oid=3802), "needs a text column"),
        ("hash", col("c", "integer", oid=23), "needs a text, uuid, bigint or bytea column"),
        (
            "email",
            col("c", "character varying(20)", oid=1043),
            "too short for the 'email' rule's 34",
        ),
        ("null", col("c", "text", not_null=True), "target column is NOT NULL"),
    ],
)
def test_rule_must_fit_the_column(rule: str, column: Column, words: str) -> None:
    with pytest.raises(BadInput, match=words.replace("(", r"\(").replace(")", r"\)")):
        mask_expressions(compile_rules({"public.t.c": rule}), "public.t", [column], KEY)


def test_null_rule_checks_the_target_side() -> None:
    rules = compile_rules({"public.t.c": "null"})
    with pytest.raises(BadInput, match="NOT NULL"):
        mask_expressions(
            rules, "public.t", [col("c")], KEY, target_columns=[col("c", not_null=True)]
        )


def test_key_columns_cannot_be_masked() -> None:
    with pytest.raises(BadInput, match="a key column of the sync"):
        mask_expressions(
            compile_rules({"public.users.*": "hash"}),
            "public.users",
            users().columns,
            KEY,
            key_columns=("id",),
        )


def test_missing_key_is_bad_input_only_when_a_rule_needs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGFERRY_MASK_KEY", raising=False)
    with pytest.raises(BadInput, match="PGFERRY_MASK_KEY is not set"):
        mask_key({})
    with pytest.raises(BadInput, match="shorter than 16"):
        mask_key({"PGFERRY_MASK_KEY": "short"})
    assert mask_key({"PGFERRY_MASK_KEY": KEY}) == KEY
    monkeypatch.setenv("PGFERRY_MASK_KEY", "e" * 16)
    assert mask_key({"PGFERRY_MASK_KEY": KEY}) == "e" * 16  # the process environment wins
    t = [col("c")]
    assert mask_expressions(compile_rules({"public.t.c": "redact"}), "public.t", t, None)
    with pytest.raises(BadInput, match="PGFERRY_MASK_KEY"):
        mask_expressions(compile_rules({"public.t.c": "email"}), "public.t", t, None)


@pytest.mark.parametrize(
    "table, column, kind",
    [
        ("users", "email", "email"),
        ("users", "contact_email", "email"),
        ("users", "e_mail", "email"),
        ("users", "email_verified", None),
        ("users", "phone", "phone"),
        ("users", "mobile_phone_number", "phone"),
        ("users", "first_name", "name"),
        ("users", "surname", "name"),
        ("users", "name", "name"),
        ("leads", "name", "name"),
        ("data_sources", "name", None),
        ("files", "file_name", None),
        ("users", "street_address", "address"),
        ("users", "postal_code", "address"),
        ("users", "iban", "iban"),
        ("users", "date_of_birth", "birth"),
        ("users", "dob", "birth"),
        ("users", "birthday", "birth"),
        ("orders", "total", None),
        ("users", "hotel", None),
    ],
)
def test_personal_kind_by_name(table: str, column: str, kind: str | None) -> None:
    assert personal_kind(table, column) == kind


def test_gate_refuses_protected_to_unprotected_without_rules() -> None:
    prod, dev = Target("prod", "postgresql:///p", protected=True), Target("dev", "postgresql:///d")
    tables = {"public.users": users()}
    rules = compile_rules({"*.*.email": "email"})
    assert personal_columns_unmasked(rules, tables) == [
        "public.users.birth_date",
        "public.users.full_name",
        "public.users.mobile_phone",
        "public.users.name",
    ]
    with pytest.raises(Refused) as e:
        refuse_unmasked(rules, tables, source=prod, target=dev)
    assert e.value.exit_code == 4
    msg = str(e.value)
    assert "from protected 'prod' to unprotected 'dev'" in msg
    assert "public.users.full_name" in msg and "--no-mask --reason" in msg
    # with a reason it goes ahead and tells what was left unmasked
    assert (
        len(refuse_unmasked(rules, tables, source=prod, target=dev, no_mask_reason="ticket 42"))
        == 4
    )
    # other directions are not gated
    assert refuse_unmasked(rules, tables, source=dev, target=prod) == []
    full = compile_rules(
        {
            "*.*.email": "email",
            "public.users.*name": "name",
            "public.users.*phone": "phone",
            "public.users.birth_date": "null",
        }
    )
    assert refuse_unmasked(full, tables, source=prod, target=dev) == []


def test_refusal_message_stays_one_readable_sentence() -> None:
    from pgferry.sync.masking import unmasked_message

    cols = [f"public.users.email_{i}" for i in range(11)]
    msg = unmasked_message(cols, "prod", "staging")
    assert "public.users.email_7 and 3 more;" in msg and "email_8" not in msg
    assert '(e.g. "public.users.email_0" = "email")' in msg
    assert "\n" not in msg
    assert '"public.users.street" = "redact"' in unmasked_message(
        ["public.users.street"], "prod", "dev"
    )

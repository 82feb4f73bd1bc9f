"""The pure sync planner: selection, columns, keys, FK order, cycles, strategies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgferry.config import SyncConfig, SyncTableConfig
from pgferry.errors import BadInput
from pgferry.pg.catalog_types import Column, ForeignKey, Table
from pgferry.sync.plan import build_plan


def with_tables(tables: dict[str, SyncTableConfig]) -> SyncConfig:
    """[sync] with per-table settings, validated as pgferry.toml's [sync.tables] are."""
    return SyncConfig.model_validate({"tables_config": tables})


def col(
    name: str,
    typ: str = "integer",
    *,
    not_null: bool = False,
    default: bool = False,
    identity: str = "",
    generated: str = "",
) -> Column:
    return Column(name, typ, not_null, default, identity, generated)


def table(
    qn: str,
    cols: list[Column] | None = None,
    pk: tuple[str, ...] = ("id",),
    fks: list[tuple[str, bool]] | None = None,
) -> Table:
    schema, name = qn.split(".")
    return Table(
        schema,
        name,
        columns=cols or [col("id", not_null=True), col("ref")],
        primary_key=pk,
        foreign_keys=[
            ForeignKey(f"fk_{name}_{r.split('.')[1]}", ("ref",), r, ("id",), deferrable, True)
            for r, deferrable in fks or []
        ],
    )


def cat(*tables: Table) -> dict[str, Table]:
    return {t.qualname: t for t in tables}


def test_selection_tables_win_over_exclude_and_unknown_is_bad_input() -> None:
    side = cat(table("public.a"), table("public.b"), table("public.c"))
    cfg = SyncConfig(exclude=["public.b"])
    assert [t.qualname for t in build_plan(side, side, cfg).tables] == ["public.a", "public.c"]
    p = build_plan(side, side, cfg, tables=["public.b"])
    assert [t.qualname for t in p.tables] == ["public.b"]
    assert [t.qualname for t in build_plan(side, side, cfg, tables=["b", "public.c"]).tables] == [
        "public.b",
        "public.c",
    ]
    with pytest.raises(BadInput, match="public.zzz"):
        build_plan(side, side, cfg, tables=["public.zzz"])
    with pytest.raises(BadInput, match="nope"):
        build_plan(side, side, cfg, exclude=["public.nope"])


def test_tables_on_one_side_only_source_is_a_finding_target_a_warning() -> None:
    p = build_plan(
        cat(table("public.a"), table("public.s")),
        cat(table("public.a"), table("public.t")),
        SyncConfig(),
    )
    assert [t.qualname for t in p.tables] == ["public.a"]
    # a source table the target lacks is schema drift (exit 1): apply the migrations first
    assert p.missing_tables == ["public.s"]
    assert p.findings == [
        "public.s exists on the source but not on the target: apply the migrations first"
    ]
    assert any("public.t exists only on the target" in w for w in p.warnings)
    # an excluded one is not
    assert (
        build_plan(
            cat(table("public.a"), table("public.s")),
            cat(table("public.a")),
            SyncConfig(exclude=["public.s"]),
        ).findings
        == []
    )


def test_columns_intersection_generated_identity_and_not_null() -> None:
    src = table(
        "public.a", [col("id", not_null=True), col("x"), col("only_src"), col("g", generated="s")]
    )
    tgt = table(
        "public.a",
        [
            col("id", not_null=True, identity="a"),
            col("x", "bigint"),
            col("g", generated="s"),
            col("opt"),
        ],
    )
    t = build_plan(cat(src), cat(tgt), SyncConfig()).tables[0]
    assert t.columns == ["id", "x"]
    assert t.identity_always and not t.same_types
    assert t.missing_on_target == ["only_src"] and t.missing_on_source == ["opt"]
    assert t.error is None
    tgt.columns.append(col("must", not_null=True))
    t = build_plan(cat(src), cat(tgt), SyncConfig()).tables[0]
    assert t.error and "must" in t.error and "NOT NULL" in t.error


def test_no_key_only_full_and_config_key() -> None:
    src = table("public.a", pk=())
    t = build_plan(cat(src), cat(src), SyncConfig()).tables[0]
    assert t.error and "only in full mode" in t.error
    assert build_plan(cat(src), cat(src), SyncConfig(), mode="full").tables[0].error is None
    cfg = with_tables({"public.a": SyncTableConfig(key=["id"])})
    t = build_plan(cat(src), cat(src), cfg).tables[0]
    assert t.key == ("id",) and t.error is None
    bad = with_tables({"public.a": SyncTableConfig(key=["nope"])})
    with pytest.raises(BadInput, match="nope"):
        build_plan(cat(src), cat(src), bad)


def test_strategy_per_table() -> None:
    side = cat(
        table("public.a", [col("id", not_null=True), col("ref"), col("ts", "timestamp")]),
        table("public.b"),
    )
    cfg = with_tables({"public.a": SyncTableConfig(watermark="ts")})
    by = {t.qualname: t for t in build_plan(side, side, cfg).tables}
    assert by["public.a"].strategy == "watermark" and by["public.b"].strategy == "checksum"
    assert {t.strategy for t in build_plan(side, side, cfg, mode="full").tables} == {"full"}
    assert {t.strategy for t in build_plan(side, side, cfg, mode="verify").tables} == {"verify"}
    with pytest.raises(BadInput, match="watermark"):
        build_plan(side, side, with_tables({"public.b": SyncTableConfig(strategy="watermark")}))


def test_fk_order_parents_first_and_unselected_referencers() -> None:
    side = cat(
        table("public.child", fks=[("public.parent", False)]),
        table("public.parent"),
        table("public.grand", fks=[("public.child", False)]),
        table("public.self", fks=[("public.self", False)]),
    )
    p = build_plan(side, side, SyncConfig())
    order = [t.qualname for t in p.tables]
    assert order.index("public.parent") < order.index("public.child") < order.index("public.grand")
    assert p.table("public.self").self_referencing and not p.table("public.self").error
    p = build_plan(side, side, SyncConfig(), tables=["public.parent", "public.child"])
    assert p.table("public.child").referenced_by_unselected == [("public.grand", ("ref",), ("id",))]
    assert p.table("public.parent").referenced


def test_cycles_deferrable_ok_else_named_with_fix() -> None:
    soft = cat(
        table("public.a", fks=[("public.b", True)]), table("public.b", fks=[("public.a", True)])
    )
    p = build_plan(soft, soft, SyncConfig())
    assert all(t.error is None and t.cycle == ["public.a", "public.b"] for t in p.tables)
    hard = cat(
        table("public.a", fks=[("public.b", False)]), table("public.b", fks=[("public.a", True)])
    )
    p = build_plan(hard, hard, SyncConfig())
    assert p.cycles == [["public.a", "public.b"]]
    err = p.table("public.b").error or ""
    assert "public.a -> public.b -> public.a" in err and "DEFERRABLE" in err
    assert "fk_a_b" in err


@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=20))
def test_order_respects_every_acyclic_edge(edges: list[tuple[int, int]]) -> None:
    # child -> parent only from a higher to a lower number: always acyclic
    fks: dict[int, list[tuple[str, bool]]] = {i: [] for i in range(8)}
    for a, b in edges:
        if a > b:
            fks[a].append((f"public.t{b}", False))
    side = cat(*[table(f"public.t{i}", fks=fks[i]) for i in range(8)])
    order = [t.qualname for t in build_plan(side, side, SyncConfig()).tables]
    for a, b in edges:
        if a > b:
            assert order.index(f"public.t{b}") < order.index(f"public.t{a}")


def test_migration_history_is_left_out_unless_named() -> None:
    side = cat(
        table("public.a"),
        table(
            "public.flyway_schema_history",
            [col("installed_rank", not_null=True)],
            pk=("installed_rank",),
        ),
    )
    p = build_plan(side, side, SyncConfig(), history="public.flyway_schema_history")
    assert [t.qualname for t in p.tables] == ["public.a"]
    assert not p.warnings  # leaving it out is the rule, not a surprise worth a warning
    p = build_plan(
        side,
        side,
        SyncConfig(),
        history="public.flyway_schema_history",
        tables=["public.flyway_schema_history"],
    )
    assert [t.qualname for t in p.tables] == ["public.flyway_schema_history"]


def test_sync_durations_are_checked_at_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pgferry.config import load_config
    from pgferry.errors import ConfigError

    p = tmp_path / "pgferry.toml"
    p.write_text('[sync]\nretry = "soon"\n')
    with pytest.raises(ConfigError, match=r"pgferry.toml:2: sync.retry: 'soon' is not a duration"):
        load_config(p)


@pytest.mark.parametrize(
    ("source_pk", "unique", "key", "checked"),
    [
        (("id",), [], None, False),  # the source's own primary key
        (("tenant", "id"), [], None, True),  # the target's key is narrower
        (("id",), [], ("id", "tenant"), False),  # a configured key holding the source's
        ((), [("id",)], None, False),  # UNIQUE over a NOT NULL column
        ((), [("ref",)], ("ref",), True),  # UNIQUE over a column that allows NULL
        ((), [], None, True),  # no constraint at all
    ],
)
def test_the_source_is_asked_for_shared_keys_only_where_no_constraint_rules_them_out(
    source_pk: tuple[str, ...],
    unique: list[tuple[str, ...]],
    key: tuple[str, ...] | None,
    checked: bool,
) -> None:
    cols = [col("id", not_null=True), col("tenant", not_null=True), col("ref")]
    src = table("public.a", cols, pk=source_pk)
    src.unique_keys = unique
    tgt = table("public.a", cols, pk=("id",))
    cfg = with_tables({"public.a": SyncTableConfig(key=list(key))}) if key else SyncConfig()
    (t,) = build_plan(cat(src), cat(tgt), cfg).tables
    assert t.check_source_keys is checked
    (v,) = build_plan(cat(src), cat(tgt), cfg, mode="verify").tables
    assert v.check_source_keys is False

"""The planner: :func:`build_plan`, one :class:`~pgferry.sync.plan.model.TablePlan` per table.

Contract: see :mod:`pgferry.sync.plan`. For each selected table it decides the key, the
columns, the strategy, the conflict handling and what stops the table (``error``) or is
reported as drift (``findings``); then the FK order and its cycles. Columns
are the intersection of both sides minus the target's generated columns (a column
generated on the source only is copied, as drift); identity columns keep their values
(``OVERRIDING SYSTEM VALUE``).
"""

from __future__ import annotations

from pgferry.config import SyncConfig, SyncTableConfig
from pgferry.errors import BadInput
from pgferry.pg.catalog_types import Column, Table, TriggerFunction
from pgferry.sqltext.plpgsql import never_skips
from pgferry.sync.plan import grants
from pgferry.sync.plan.model import Mode, SyncPlan, TablePlan
from pgferry.sync.plan.order import fk_order
from pgferry.sync.plan.selection import select_tables


def _table_cfg(cfg: SyncConfig, qualname: str) -> SyncTableConfig:
    return cfg.table.get(qualname) or SyncTableConfig()


#: pg_type.oid of the first user-defined type (FirstNormalObjectId)
_FIRST_USER_OID = 16384


def _text_input(c: Column) -> bool:
    """True when the target's input of this type can refuse a value a source of the same
    type name holds: enum labels, domain checks, composite and other user-defined types."""
    return c.typtype != "b" or c.type_oid >= _FIRST_USER_OID


def _columns(t: TablePlan, src: Table, tgt: Table) -> None:
    src_cols = {c.name: c for c in src.columns}
    cols: list[str] = []
    for c in tgt.columns:
        s = src_cols.get(c.name)
        if c.generated:
            continue  # computed by the target itself (stored or virtual)
        if s is None:
            t.missing_on_source.append(c.name)
            if c.not_null and not c.has_default and not c.identity:
                t.error = (
                    f"{t.qualname}: target column {c.name} is NOT NULL without a default "
                    "and does not exist on the source; add a default on the target or "
                    "the column on the source"
                )
            else:
                t.warnings.append(
                    f"target column {c.name} is not on the source; it keeps its default"
                )
            continue
        if s.generated:
            # the source's values are data the target's plain column is meant to hold (a
            # migration there dropped the expression): copied, and compared, as drift
            t.findings.append(
                f"column {c.name} is generated on the source and a plain column on the "
                "target: apply the migrations first (until then the source's values are "
                "copied into it)"
            )
        cols.append(c.name)
        t.column_types[c.name] = c.type
        if c.nondeterministic:
            t.bytewise_columns.append(c.name)
        if c.compare_text:
            t.text_compare.append(c.name)
        t.source_types[c.name] = s.type
        if s.type != c.type:
            t.same_types = False
            t.findings.append(
                f"column {c.name} is {s.type} on the source and {c.type} on the "
                "target: apply the migrations first (until then it is copied as "
                "text, and a value the target refuses becomes a dead letter)"
            )
            t.text_columns.append(c.name)
        elif _text_input(c):
            t.text_columns.append(c.name)
            if c.typtype == "e" and s.typtype == "e":
                t.enum_columns.append(c.name)
        if c.identity == "a":
            t.identity_always = True
            t.always_columns.append(c.name)
    tgt_names = {c.name for c in tgt.columns}
    for c in src.columns:
        if c.name not in tgt_names and not c.generated:
            t.missing_on_target.append(c.name)
            t.findings.append(
                f"source column {c.name} is not on the target: apply the "
                "migrations first (until then it is not synced)"
            )
    t.columns = cols


def _never_skips(f: TriggerFunction) -> bool:
    return never_skips(f.language, f.definition, f.source, f.library)


def _strategy(t: TablePlan, tc: SyncTableConfig, mode: Mode) -> None:
    if mode == "verify":
        t.strategy = "verify"
    elif mode == "full" or tc.strategy == "full":
        t.strategy = "full"
    elif tc.strategy == "watermark" or (tc.strategy is None and tc.watermark):
        t.strategy = "watermark"
    else:
        t.strategy = "checksum"
    if t.strategy == "watermark" and not tc.watermark:
        raise BadInput(
            f'[sync.tables."{t.qualname}"] strategy = "watermark" needs watermark = "column"'
        )
    if t.watermark and t.watermark not in t.columns:
        raise BadInput(
            f'[sync.tables."{t.qualname}"] watermark column {t.watermark!r} is '
            "not a synced column of the table"
        )
    if not t.key and t.strategy not in ("full", "verify") and t.error is None:
        t.error = (
            f"{t.qualname} has no primary key and no [sync.tables] key, so it can be "
            "synced only in full mode (--mode full); verify compares it as a multiset "
            "of rows"
        )


def _unique_on(t: Table, key: tuple[str, ...]) -> bool:
    """A constraint of ``t`` (its primary key, or a UNIQUE one over NOT NULL columns)
    allows no two rows one value of ``key``."""
    not_null = {c.name for c in t.columns if c.not_null}
    return any(
        u and set(u) <= set(key) and set(u) <= not_null for u in (t.primary_key, *t.unique_keys)
    )


def build_plan(
    source: dict[str, Table],
    target: dict[str, Table],
    cfg: SyncConfig,
    *,
    mode: Mode = "incremental",
    tables: list[str] | None = None,
    exclude: list[str] | None = None,
    referencing: dict[str, Table] | None = None,
    history: str | None = None,
    protected: bool = False,
    roles: tuple[str, str] = ("", ""),
    on_conflict: str | None = None,
) -> SyncPlan:
    """The plan for syncing ``source`` into ``target`` (see the module docstring).

    ``referencing`` is the target's catalog over *all* its schemas (default:
    ``target``), so foreign keys from tables outside the configured schemas are
    seen when deciding what a delete may touch. ``history`` names the migration
    history table (``schema.table``), left out unless named explicitly.
    ``protected``: the target is a protected environment (the defaults of
    ``block_readers``, ``keep_before_images`` and ``on_conflict`` follow it).
    ``roles``: the source and target roles, for messages. ``on_conflict``: the
    command line's ``--on-conflict``, which wins over the config.
    """
    names, warnings, missing = select_tables(source, target, cfg, tables, exclude, history)
    block = cfg.block_readers if cfg.block_readers is not None else not protected
    # never on a protected target: its indexes are not dropped, whatever the config says
    defer = (cfg.defer_indexes is not False) and block and not protected and mode != "verify"
    images = cfg.keep_before_images if cfg.keep_before_images is not None else protected
    for qn in cfg.table:
        if qn not in source and qn not in target:
            warnings.append(f'[sync.tables."{qn}"] names a table that exists on neither side')
    selected = set(names)
    plans: dict[str, TablePlan] = {}
    for qn in names:
        src, tgt = source[qn], target[qn]
        tc = _table_cfg(cfg, qn)
        key = tuple(tc.key) if tc.key else tgt.primary_key
        t = TablePlan(
            schema=tgt.schema,
            name=tgt.name,
            qualname=qn,
            key=key,
            columns=[],
            mode=mode,
            strategy="checksum",
            watermark=tc.watermark,
            where=tc.where,
            deletes=tc.deletes,
            triggers=tc.triggers,
            partitioned=tgt.partitioned,
            user_triggers=list(tgt.user_triggers),
            skipping_triggers=[
                tg
                for tg in tgt.skipping_triggers
                if tg not in tgt.trigger_functions or not _never_skips(tgt.trigger_functions[tg])
            ],
            row_estimate=src.row_estimate,
            total_bytes=src.total_bytes,
            trigger_modes=dict(tgt.trigger_modes),
            trigger_tables=dict(tgt.trigger_tables),
            # (a role that writes rows without owning the table, nor TRUNCATE: the plain
            # COPY, the indexes in place)
            block_readers=block and tgt.may_truncate,
            before_images=images and mode != "verify",
            defer_indexes=defer and tgt.owned,
        )
        _columns(t, src, tgt)
        for k in key:
            if k not in t.columns:
                raise BadInput(f"{qn}: key column {k!r} is not a column on both sides")
        t.text_columns = [c for c in t.text_columns if c not in key]
        for k in key:
            if t.source_types.get(k) != t.column_types.get(k):
                t.error = (
                    f"{qn}: key column {k} is {t.source_types.get(k)} on the source and "
                    f"{t.column_types.get(k)} on the target, so keys would not match (every "
                    "row would look deleted and inserted again); apply the migrations "
                    "first; nothing is written to this table"
                )
                break
        enum_domains = [c for c in (*src.columns, *tgt.columns) if c.name in key and c.enum_domain]
        if enum_domains and t.error is None:
            t.error = (
                f"{qn}: key column {enum_domains[0].name} is of {enum_domains[0].type}, a "
                "domain over an enum, for which PostgreSQL finds no = or < operator, so "
                "rows cannot be matched by it; name another key in "
                f'[sync.tables."{qn}"] (or make the column the enum itself); nothing is '
                "written to this table"
            )
        arbiters = [set(u) for u in (tgt.primary_key, *tgt.unique_keys) if set(u) == set(key)]
        deferred = [set(u) for u in tgt.deferrable_keys if set(u) == set(key)]
        if deferred and len(deferred) == len(arbiters) and mode != "verify" and t.error is None:
            t.error = (
                f"{qn}: the target's unique constraint on the key ({', '.join(key)}) is "
                "DEFERRABLE, and INSERT ... ON CONFLICT, which the sync writes rows with, "
                "cannot use a deferrable one; recreate it NOT DEFERRABLE (a new unique index, "
                "then ADD CONSTRAINT ... USING INDEX in place of the old constraint) or name "
                f'another key in [sync.tables."{qn}"]; nothing is written to this table'
            )
        nullable = [c.name for c in tgt.columns if c.name in key and not c.not_null]
        if nullable and mode != "verify" and t.error is None:
            t.error = (
                f"{qn}: key column {nullable[0]} allows NULL on the target, and a NULL key "
                "matches no row (such rows would be deleted and never written back); make "
                f'it NOT NULL or name another key in [sync.tables."{qn}"]; nothing is '
                "written to this table"
            )
        src_loose = {c.name for c in src.columns if c.nondeterministic}
        loose_keys = [k for k in key if k in t.bytewise_columns and k not in src_loose]
        if loose_keys and t.error is None:
            t.error = (
                f"{qn}: key column {loose_keys[0]} has a nondeterministic collation on the "
                "target (values such as 'A' and 'a' are one key there) but not on the "
                "source, so two source rows could be written to one target row; give "
                "both sides the same collation first; nothing is written to this table"
            )
        children = sorted({*src.inherited_by, *tgt.inherited_by})
        if children and t.error is None:
            t.error = (
                f"{qn} has child tables by INHERITS ({', '.join(children)}; not partitions): "
                f"reading {qn} reads their rows too, so a sync would write them into {qn} "
                "itself and a verify would compare them as its own; such a parent cannot be "
                "synced yet, so nothing is written to it (its child tables are synced as "
                f"tables of their own); leave it out (--exclude {qn})"
            )
        for side, cat, role in (("source", src, roles[0]), ("target", tgt, roles[1])):
            if cat.rls_active and t.error is None:
                who = f"role {role}" if role else "the connecting role"
                t.error = (
                    f"{qn}: row-level security on the {side} shows {who} only some rows "
                    "(a sync would delete the rows it cannot see, a verify would compare "
                    f"a subset); grant {role or 'the role'} BYPASSRLS or make it the "
                    "table's owner (without FORCE ROW LEVEL SECURITY), or leave the table "
                    "out"
                )
        if tc.key is None and src.primary_key != tgt.primary_key:
            t.warnings.append(
                f"primary key differs: source {list(src.primary_key)}, target "
                f"{list(tgt.primary_key)}; the target's is used"
            )
        t.check_source_keys = bool(key) and mode != "verify" and not _unique_on(src, key)
        _strategy(t, tc, mode)
        if t.strategy == "watermark":
            t.watermark_nullable = any(
                c.name == t.watermark and not c.not_null for c in src.columns
            )
            if t.watermark_nullable:
                t.warnings.append(
                    f"watermark column {t.watermark} allows NULL on the source: rows "
                    "without one fall in no window, so they are read again on every run "
                    "(NOT NULL, or a default or trigger that sets it on INSERT and UPDATE, "
                    "makes a run read only what changed)"
                )
        t.on_conflict = (
            on_conflict or tc.on_conflict or cfg.on_conflict or ("stop" if protected else "source")
        )
        t.keep_target_changes = bool(
            tc.keep_target_changes
            if tc.keep_target_changes is not None
            else cfg.keep_target_changes
        )
        t.track = cfg.track_conflicts and bool(key) and t.strategy in ("checksum", "verify")
        if (
            (t.on_conflict != "source" or t.keep_target_changes)
            and t.strategy in ("watermark", "full")
            and mode != "verify"
        ):
            t.warnings.append(
                f"conflicts are looked for with the checksum strategy only; this "
                f"{t.strategy} table makes the target equal to the source"
            )
        odd = [n for n in (t.schema, t.name, *t.columns) if "%" in n]
        if odd:
            # psycopg reads a % in a quoted identifier as a placeholder in every statement
            # with parameters: stop this table in one sentence rather than with a driver error
            t.error = (
                f"names containing '%' cannot be synced yet ({', '.join(odd)}); "
                "rename them or leave the table out"
            )
        if t.where and t.strategy != "verify":
            t.warnings.append(f"only rows WHERE {t.where} are synced; deletes are limited to them")
        t.sequences = {
            c: s for c, s in {**tgt.default_sequences, **tgt.sequences}.items() if c in t.columns
        }
        grants.check(t, tgt, mode, roles[1])
        # triggers = "disable" is what the user asked for: no warning for it
        if t.user_triggers and mode != "verify" and t.triggers != "disable":
            t.warnings.append(
                f"user triggers {', '.join(t.user_triggers)} fire on the "
                "target (a trigger that sets updated_at makes verify differ; "
                'set triggers = "disable" for this table)'
            )
        for fk in tgt.foreign_keys:
            if fk.ref_table == qn:
                t.self_referencing = True
            elif fk.ref_table in selected and fk.ref_table not in t.parents:
                t.parents.append(fk.ref_table)
        plans[qn] = t
    for other in (referencing or target).values():
        for fk in other.foreign_keys:
            p = plans.get(fk.ref_table)
            if p is not None and other.qualname in selected and fk.on_delete in ("c", "n", "d"):
                p.acting_on_delete.append(
                    (other.qualname, fk.columns, fk.ref_columns, fk.on_delete)
                )
            if p is None or other.qualname == fk.ref_table:
                continue
            p.referenced = True
            if other.qualname not in selected:
                p.referenced_by_unselected.append((other.qualname, fk.columns, fk.ref_columns))
    order, cycles = fk_order(plans)
    hard: list[list[str]] = []
    for comp in cycles:
        members = set(comp)
        fks = [
            (qn, fk)
            for qn in comp
            for fk in target[qn].foreign_keys
            if fk.ref_table in members and fk.ref_table != qn
        ]
        stiff = [f"{qn}.{fk.name}" for qn, fk in fks if not fk.deferrable]
        for qn in comp:
            plans[qn].cycle = list(comp)
        if stiff:
            hard.append(comp)
            msg = (
                f"foreign keys form a cycle {' -> '.join(comp + [comp[0]])} and "
                f"{', '.join(stiff)} {'is' if len(stiff) == 1 else 'are'} not deferrable; "
                "fix: ALTER TABLE ... ALTER CONSTRAINT ... DEFERRABLE (or exclude one table)"
            )
            for qn in comp:
                plans[qn].error = plans[qn].error or msg
        else:
            for qn in comp:
                plans[qn].warnings.append(
                    f"in FK cycle {' -> '.join(comp + [comp[0]])}; "
                    "constraints are deferred to commit"
                )
    ordered = []
    for i, qn in enumerate(order):
        plans[qn].order = i
        ordered.append(plans[qn])
    findings = [
        f"{n} exists on the source but not on the target: apply the migrations first"
        for n in missing
    ]
    return SyncPlan(
        mode=mode,
        tables=ordered,
        warnings=warnings,
        cycles=hard,
        findings=findings,
        missing_tables=missing,
    )

"""The sync plan: which tables, which columns, in which order, with which strategy.

Contract: :func:`build_plan` takes the catalogs of both sides
(:func:`pgferry.pg.catalog.tables`), the ``[sync]`` config and the command
line selection, and returns a :class:`SyncPlan`: one :class:`TablePlan` per
selected table in foreign-key order (parents first; deletes run in reverse).
It is pure: no connection, no clock. Problems with the *selection* (an
unknown table, a key column that does not exist) raise
:class:`~pgferry.errors.BadInput` (exit 2) before anything is written; problems
with *one table* (a target NOT NULL column the source lacks, a non-deferrable
FK cycle, no key outside full mode, a name containing ``%``) set
:attr:`TablePlan.error` so that table is stopped with a clear message while the others go ahead.

Selection rules: every table of ``schemas`` present on both sides, or the
tables named by ``--tables`` (which wins over ``exclude``), else ``[sync]
tables``; names are ``schema.table`` and may hold ``*`` wildcards. Columns
are the intersection of both sides minus stored generated columns (of
either side); identity columns keep their values (``OVERRIDING SYSTEM VALUE``).
"""

from __future__ import annotations

import fnmatch
import heapq
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Literal

from pgferry.config import SyncConfig, SyncTableConfig
from pgferry.errors import BadInput
from pgferry.pg.catalog_types import Column, Table

Mode = Literal["incremental", "full", "verify"]
Strategy = Literal["full", "checksum", "watermark", "verify"]


@dataclass
class TablePlan:
    """How one table is synced; also the ``TableSpec`` the verifier reads.

    ``key`` orders and identifies rows (primary key or ``[sync.tables] key``;
    empty when the table has none, which allows only full mode). ``columns``
    are the synced columns in target order; ``key`` columns are always among
    them. ``order`` is the position in FK order (parents first).
    """

    schema: str
    name: str
    qualname: str
    key: tuple[str, ...]
    columns: list[str]
    mode: Mode
    strategy: Strategy
    watermark: str | None = None
    where: str | None = None
    deletes: bool = True
    triggers: Literal["enable", "disable"] = "enable"
    warnings: list[str] = field(default_factory=list)
    identity_always: bool = False
    #: GENERATED ALWAYS identity columns that are not key columns (never in an UPDATE SET)
    always_columns: list[str] = field(default_factory=list)
    order: int = 0
    #: why this table cannot be synced (it is then skipped and the run fails)
    error: str | None = None
    #: column -> type (format_type) on the target; "" when the table is only planned
    column_types: dict[str, str] = field(default_factory=dict)
    #: True when every synced column has the same type on both sides (COPY binary is safe)
    same_types: bool = True
    #: False when the two servers are of different major versions: a binary format may
    #: differ between them (numeric's infinities are new in 14), so COPY goes as text and
    #: a value the target cannot hold becomes a dead letter, not a failed batch
    binary_copy: bool = True
    #: column -> "schema.sequence" on the target, for the sequences step
    sequences: dict[str, str] = field(default_factory=dict)
    #: selected tables this one references (FK parents), and its own self-reference
    parents: list[str] = field(default_factory=list)
    self_referencing: bool = False
    #: FKs of unselected tables that reference this one: (table, fk columns, key columns)
    referenced_by_unselected: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = field(
        default_factory=list
    )
    #: True when any FK (from any table but itself) references this table: no TRUNCATE
    referenced: bool = False
    #: cycle members when this table is in an FK cycle (deferrable or not)
    cycle: list[str] = field(default_factory=list)
    partitioned: bool = False
    user_triggers: list[str] = field(default_factory=list)
    row_estimate: int = 0
    total_bytes: int = 0
    missing_on_target: list[str] = field(default_factory=list)
    missing_on_source: list[str] = field(default_factory=list)
    #: schema drift the run reports as a problem (exit 1): source columns the target lacks,
    #: columns whose types differ ("apply the migrations first")
    findings: list[str] = field(default_factory=list)
    #: user triggers' pg_trigger.tgenabled, to re-enable them as they were
    trigger_modes: dict[str, str] = field(default_factory=dict)
    #: column -> type (format_type) on the source
    source_types: dict[str, str] = field(default_factory=dict)
    #: columns staged and copied as text, then cast to the target type row by row (so a
    #: value the target refuses is one dead letter, not a failed COPY): types that differ,
    #: and target types whose input can refuse a value the source holds (enum labels,
    #: domain checks, composite and other user-defined types)
    text_columns: list[str] = field(default_factory=list)
    #: text columns of an enum type (the same on both sides): binary COPY carries their
    #: labels, so the fast path into an empty table may still go in binary
    enum_columns: list[str] = field(default_factory=list)
    #: an empty target table may be loaded after a TRUNCATE (COPY FREEZE), which holds
    #: ACCESS EXCLUSIVE until the table commits: readers wait ([sync] block_readers)
    block_readers: bool = True
    #: an empty target table is loaded with its secondary indexes set aside, rebuilt after
    #: the unit commits ([sync] defer_indexes; never on a protected target)
    defer_indexes: bool = False
    #: save every row this run updates or deletes in pgferry.before_images (sync revert)
    before_images: bool = False
    #: masked columns -> the rule's text (filled by the engine)
    masked: dict[str, str] = field(default_factory=dict)
    #: what a conflict does (see :mod:`pgferry.sync.conflicts`) and whether rows only the
    #: target changed are kept; ``track``: conflicts are looked for (checksum strategy)
    on_conflict: str = "source"
    keep_target_changes: bool = False
    track: bool = False
    #: this run leaves some rows alone (they are in its skip table; set by the conflicts step)
    skip: bool = False

    def across_versions(self) -> None:
        """The two servers are of different major versions: no binary COPY (a type's binary
        format may differ: numeric's infinities are new in 14), and every non-key column
        staged as text, so a value the target's version cannot hold (numeric 'Infinity'
        into 13) is one dead letter, not a failed batch."""
        self.binary_copy = False
        self.text_columns = self.value_columns

    @property
    def value_columns(self) -> list[str]:
        """Synced columns that are not key columns (the ones an upsert may update)."""
        return [c for c in self.columns if c not in self.key]

    def to_dict(self) -> dict[str, object]:
        return {
            "table": self.qualname,
            "order": self.order,
            "mode": self.mode,
            "strategy": self.strategy,
            "key": list(self.key),
            "columns": list(self.columns),
            "watermark": self.watermark,
            "where": self.where,
            "deletes": self.deletes,
            "triggers": self.triggers,
            "estimated_rows": self.row_estimate,
            "estimated_bytes": self.total_bytes,
            "missing_on_target": self.missing_on_target,
            "missing_on_source": self.missing_on_source,
            "cycle": self.cycle,
            "warnings": list(self.warnings),
            "error": self.error,
            "findings": list(self.findings),
            "sequences": dict(self.sequences),
            "user_triggers": list(self.user_triggers) if self.triggers == "enable" else [],
            "text_columns": list(self.text_columns),
            "locks": self.locks(),
            "before_images": self.before_images,
            "masked": dict(self.masked),
            "on_conflict": self.on_conflict,
            "keep_target_changes": self.keep_target_changes,
            "conflicts_tracked": self.track,
            "defer_indexes": self.defer_indexes,
        }

    def locks(self) -> list[str]:
        """What the run's writes to this table lock beyond its rows (shown in the plan)."""
        out = []
        if self.mode != "verify" and self.strategy != "verify":
            if self.block_readers and not self.referenced and not self.partitioned:
                out.append(
                    "ACCESS EXCLUSIVE while loading when the target table is empty "
                    "(TRUNCATE + COPY FREEZE: readers wait)"
                )
            if self.defer_indexes:
                out.append(
                    "when the target table is empty: ACCESS EXCLUSIVE while loading "
                    "without its secondary indexes, then SHARE until they are rebuilt "
                    "(readers go on, other writers wait)"
                )
            if self.triggers == "disable" and self.user_triggers:
                out.append(
                    "SHARE ROW EXCLUSIVE (DISABLE TRIGGER) until the table commits: "
                    "other writers wait"
                )
        return out


@dataclass
class SyncPlan:
    """The whole plan: tables in FK order plus run-level warnings."""

    mode: Mode
    tables: list[TablePlan]
    warnings: list[str] = field(default_factory=list)
    #: non-deferrable FK cycles (each a list of tables); their tables carry an error
    cycles: list[list[str]] = field(default_factory=list)
    #: schema drift that is a problem (exit 1): tables of the source the target lacks
    findings: list[str] = field(default_factory=list)
    #: tables of the source the target lacks (each also a finding)
    missing_tables: list[str] = field(default_factory=list)

    def table(self, qualname: str) -> TablePlan:
        return next(t for t in self.tables if t.qualname == qualname)

    @property
    def runnable(self) -> list[TablePlan]:
        return [t for t in self.tables if t.error is None]

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "tables": [t.to_dict() for t in self.tables],
            "warnings": list(self.warnings),
            "cycles": self.cycles,
            "findings": list(self.findings),
            "missing_tables": list(self.missing_tables),
        }


def _match(
    patterns: list[str], names: list[str], schemas: list[str], what: str, strict: bool
) -> list[str]:
    """Names matching ``patterns`` (``schema.table``, ``*`` allowed; bare names search schemas)."""
    out: list[str] = []
    for p in patterns:
        p = p.strip()
        if not p:
            continue
        cands = [p] if "." in p else [f"{s}.{p}" for s in schemas]
        hits = [n for n in names if any(fnmatch.fnmatchcase(n, c) for c in cands)]
        if not hits and strict:
            raise BadInput(
                f"{what} names table {p!r}, which is not in "
                f"{'schema ' + p.split('.')[0] if '.' in p else ', '.join(schemas)}"
                " on both source and target; name tables as schema.table"
            )
        out.extend(h for h in hits if h not in out)
    return out


def select_tables(
    source: dict[str, Table],
    target: dict[str, Table],
    cfg: SyncConfig,
    tables: list[str] | None = None,
    exclude: list[str] | None = None,
    history: str | None = None,
) -> tuple[list[str], list[str], list[str]]:
    """The selected ``schema.table`` names, selection warnings and source tables the target lacks.

    BadInput on unknown names. ``history`` (the migration history table) is never
    selected implicitly: each environment's history records what ran *there*; it is
    synced only when named. A source table missing on the target (among those the
    selection would take) is schema drift: the caller reports it as a problem.
    """
    both = sorted(set(source) & set(target))
    warnings: list[str] = []
    missing: list[str] = []
    if (
        history in both
        and not tables
        and not (cfg.tables and _match(cfg.tables, [history], cfg.schemas, "", strict=False))
    ):
        both.remove(history)  # expected, so no warning on every run (docs/sync.md says it)
    if tables:
        chosen = _match(tables, both, cfg.schemas, "--tables", strict=True)
        # --tables wins over exclude: nothing is removed
        return chosen, warnings, missing
    only_source = sorted(n for n in set(source) - set(target) if n != history)
    excl_patterns = list(cfg.exclude) + list(exclude or [])
    if cfg.tables:
        chosen = _match(cfg.tables, both, cfg.schemas, "[sync] tables", strict=False)
        wanted = _match(cfg.tables, only_source, cfg.schemas, "", strict=False)
        if not chosen and not wanted:
            _match(cfg.tables, both, cfg.schemas, "[sync] tables", strict=True)
    else:
        chosen = both
        wanted = only_source
        for n in sorted(set(target) - set(source)):
            warnings.append(f"{n} exists only on the target; left untouched")
    excl = _match(excl_patterns, both, cfg.schemas, "exclude", strict=bool(exclude))
    gone = _match(excl_patterns, wanted, cfg.schemas, "exclude", strict=False)
    missing = [n for n in wanted if n not in gone]
    return [n for n in chosen if n not in excl], warnings, missing


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
            t.warnings.append(
                f"column {c.name} is generated on the source but not on the "
                "target; it is not synced"
            )
            continue
        cols.append(c.name)
        t.column_types[c.name] = c.type
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


def _order(plans: dict[str, TablePlan]) -> tuple[list[str], list[list[str]]]:
    """Parents first, and the FK cycles found (each sorted by name).

    :class:`graphlib.TopologicalSorter` orders the tables; a cycle it reports is merged
    into one node, until none is left, so each cycle ends up as one group (its strongly
    connected component) placed after everything it references. Of the tables whose
    parents are all placed, the first by name comes next (the order does not depend on
    dict order).
    """
    group = {qn: qn for qn in plans}  # table -> the name its merged group goes by

    def find(qn: str) -> str:
        while group[qn] != qn:
            group[qn] = group[group[qn]]
            qn = group[qn]
        return qn

    while True:
        graph: dict[str, set[str]] = {find(qn): set() for qn in plans}
        for qn, t in plans.items():
            g = find(qn)
            graph[g] |= {find(p) for p in t.parents if p in plans and find(p) != g}
        sorter = TopologicalSorter(graph)
        try:
            sorter.prepare()
        except CycleError as e:
            cycle = [find(qn) for qn in e.args[1]]
            for g in cycle[1:]:
                group[g] = cycle[0]
            continue
        break
    members: dict[str, list[str]] = {}
    for qn in sorted(plans):
        members.setdefault(find(qn), []).append(qn)
    order: list[str] = []
    cycles: list[list[str]] = []
    ready: list[tuple[str, str]] = []  # (first name of the group, group), smallest first
    while sorter.is_active():
        for g in sorter.get_ready():
            heapq.heappush(ready, (members[g][0], g))
        _, g = heapq.heappop(ready)
        order += members[g]
        if len(members[g]) > 1:
            cycles.append(members[g])
        sorter.done(g)
    return order, cycles


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
            row_estimate=src.row_estimate,
            total_bytes=src.total_bytes,
            trigger_modes=dict(tgt.trigger_modes),
            block_readers=block,
            before_images=images and mode != "verify",
            defer_indexes=defer,
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
        _strategy(t, tc, mode)
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
            if p is None or other.qualname == fk.ref_table:
                continue
            p.referenced = True
            if other.qualname not in selected:
                p.referenced_by_unselected.append((other.qualname, fk.columns, fk.ref_columns))
    order, cycles = _order(plans)
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

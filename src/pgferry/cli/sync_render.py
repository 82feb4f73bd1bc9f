"""What ``pgferry sync`` and ``pgferry verify`` print for a person (not ``--json``).

Contract: :func:`renderer` turns a :class:`~pgferry.sync.result.SyncResult` into a function
that prints it on a rich console: for a dry run the plan (a table of what each table
would get, then a line per finding, conflict, mask and warning, then what holds for many
tables: locks, sequences, before-images); otherwise the result table, then the conflicts,
drift, warnings, dead letters and differing keys of each table, and how to undo the run.
Every message goes through :func:`say`, so text in square brackets is printed as it is,
never read as rich markup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

if TYPE_CHECKING:  # the engine is imported when a command runs: fast start-up for the others
    from pgferry.sync.result import SyncResult


def say(out: Console, text: str) -> None:
    """Print a message as it is: text in square brackets is not rich markup."""
    out.print(text, markup=False, highlight=False)


def cells(*values: object) -> list[Text]:
    return [Text(str(v)) for v in values]


def conflict_lines(t: Any, on_conflict: str, keep: bool) -> list[str]:
    """What the conflicts step found for one table, as lines to print (empty: nothing)."""
    from pgferry import jsonio

    lines = []
    if t.conflicts:
        what = {
            "stop": "the table is left as it was; choose with --on-conflict source (the "
            "source wins, the target's rows are kept for sync revert) or target (the "
            "target's rows stay)",
            "source": "the source's rows win; the target's are kept for sync revert",
            "target": "the target's rows stay",
        }
        lines.append(
            f"conflicts: {t.table}: {t.conflicts} row(s) changed on both sides since "
            f"the last sync (on_conflict = {on_conflict}: {what[on_conflict]})"
        )
        for c in t.conflict_rows[:5]:
            key = ", ".join(f"{k}={v}" for k, v in c["key"].items())
            lines.append(
                f"  {key} ({c['kind']}): target {jsonio.dumps(c['target_row'])} | "
                f"source {jsonio.dumps(c['source_row'])}"
            )
        if t.conflicts > 5:
            lines.append(f"  and {t.conflicts - 5:,} more (all counted in --json and the report)")
    if t.target_only:
        lines.append(
            f"{t.table}: {t.target_only} row(s) changed only on the target since the "
            "last sync: "
            + (
                "kept as they are (keep_target_changes)"
                if keep
                else "written back to the source's rows"
            )
        )
    return lines


def _unknown(out: Console, result: SyncResult) -> None:
    unknown = [t.table for t in result.tables if t.conflicts_known is False]
    if unknown:
        say(
            out,
            f"conflicts cannot be known yet (no earlier sync from {result.source}) for: "
            + ", ".join(unknown),
        )


def _plan_table(result: SyncResult, plan: dict[str, Any]) -> RichTable:
    tbl = RichTable(
        title=Text(
            f"plan: {result.mode} {result.source} -> {result.target} (dry run, nothing written)"
        )
    )
    heads = (
        "#",
        "table",
        "strategy",
        "key",
        "insert",
        "update",
        "delete",
        "conflicts",
        "columns",
        "status",
    )
    for h in heads:
        tbl.add_column(
            h,
            justify="right" if h in ("#", "insert", "update", "delete", "conflicts") else "left",
            no_wrap=h == "table",
        )
    by = {t.table: t for t in result.tables}
    for t in plan.get("tables", []):
        r = by.get(t["table"])
        diff = []
        if t["missing_on_target"]:
            diff.append("source only: " + ", ".join(t["missing_on_target"]))
        if t["missing_on_source"]:
            diff.append("target only: " + ", ".join(t["missing_on_source"]))
        counted = r is not None and r.status != "failed" and not t["error"]
        nums = (
            [
                f"{r.would_insert:,}",
                f"{r.would_update:,}",
                f"{r.would_delete:,}",
                "?"
                if r.conflicts_known is False
                else f"{r.conflicts:,}"
                if t["conflicts_tracked"]
                else "-",
            ]
            if counted and r is not None
            else ["-", "-", "-", "-"]
        )
        tbl.add_row(
            *cells(
                t["order"] + 1,
                t["table"],
                t["strategy"],
                ",".join(t["key"]) or "-",
                *nums,
                "; ".join(diff) or f"{len(t['columns'])} same",
                "stopped" if t["error"] else "failed" if r and r.status == "failed" else "ready",
            )
        )
    return tbl


def _plan_table_lines(result: SyncResult, t: dict[str, Any]) -> list[str]:
    """What the plan says of one table, below the table."""
    from pgferry.sync.report import key_text

    name = t["table"]
    r = next((x for x in result.tables if x.table == name), None)
    lines = []
    if t["error"]:
        lines.append(f"stopped: {t['error']}")
    elif r is not None and r.error:
        lines.append(f"failed: {name}: {r.error}")
    lines += [f"drift: {name}: {f}" for f in t["findings"]]
    if r is not None and r.first_differing_keys:
        keys = "; ".join(key_text(k) for k in r.first_differing_keys[:5])
        lines.append(f"{name}: first keys: {keys}")
    if r is not None and r.note:
        lines.append(f"note: {name}: {r.note}")
    if r is not None:
        lines += conflict_lines(r, t["on_conflict"], t["keep_target_changes"])
    if t["masked"]:
        lines.append(
            f"{name}: masked: "
            + ", ".join(f"{c} ({rule})" for c, rule in sorted(t["masked"].items()))
        )
    lines += [f"warning: {name}: {w}" for w in t["warnings"]]
    return lines


def _plan_summary(tables: list[dict[str, Any]]) -> list[str]:
    """What holds for many tables, said once."""
    lines = []
    locks: dict[str, list[str]] = {}
    for t in tables:
        for lock in t["locks"]:
            locks.setdefault(lock, []).append(t["table"])
    lines += [f"locks: {lock}: {', '.join(names)}" for lock, names in locks.items()]
    seqs = sorted({v.partition("|")[0] for t in tables for v in t["sequences"].values()})
    if seqs:
        lines.append("sequences moved forward after the data: " + ", ".join(seqs))
    images = [t["table"] for t in tables if t["before_images"]]
    if images:
        lines.append(
            "before-images kept (sync revert): "
            + ("every table" if len(images) == len(tables) else ", ".join(images))
        )
    return lines


def _render_plan(result: SyncResult, out: Console) -> None:
    plan = result.options.get("plan") or {}
    out.print(_plan_table(result, plan))
    tables = plan.get("tables", [])
    for t in tables:
        for line in _plan_table_lines(result, t):
            say(out, line)
    _unknown(out, result)
    for line in _plan_summary(tables):
        say(out, line)
    for f in plan.get("findings", []):
        say(out, f"drift: {f}")
    for w in result.warnings:
        say(out, f"warning: {w}")


def _result_table(result: SyncResult) -> RichTable:
    verify = result.mode == "verify"
    tbl = RichTable(title=Text(f"{result.mode} {result.source} -> {result.target}"))
    tbl.add_column("table")
    tbl.add_column("strategy")
    heads = (
        ["matched", "differing", "only source", "only target"]
        if verify
        else ["inserted", "updated", "deleted", "unchanged", "dead"]
    )
    for h in heads:
        tbl.add_column(h, justify="right")
    tbl.add_column("status")
    for t in result.tables:
        nums = (
            [t.matched, t.differing, t.only_in_source, t.only_in_target]
            if verify
            else [t.inserted, t.updated, t.deleted, t.unchanged, t.dead_lettered]
        )
        status = t.status + (f": {t.error}" if t.error else "")
        if t.status == "conflicts":  # the conflict lines below say the rest
            status = f"stopped: {t.conflicts} conflict(s), unchanged"
        if t.note and t.status != "failed":
            status += f" ({t.note})"
        tbl.add_row(*cells(t.table, t.strategy, *nums, status))
    return tbl


def _result_table_lines(result: SyncResult, t: Any, policy: dict[str, Any]) -> list[str]:
    """What the result says of one table, below the table."""
    from pgferry.sync.report import key_text

    verify = result.mode == "verify"
    lines = conflict_lines(
        t, policy.get("on_conflict", "source"), policy.get("keep_target_changes", False)
    )
    lines += [f"drift: {t.table}: {f}" for f in t.findings]
    lines += [f"warning: {t.table}: {w}" for w in t.warnings]
    if t.checksums_match is not None and not verify:
        lines.append(
            f"{t.table}: checksums after: source {t.checksum_source}, target "
            f"{t.checksum_target} ({'match' if t.checksums_match else 'DIFFER'})"
        )
    lines += [f"dead letter: {t.table} {d.key}: {d.error}" for d in t.dead_letters[:5]]
    if t.dead_lettered > 5:
        lines.append(
            f"dead letter: {t.table}: {t.dead_lettered - 5} more (all in "
            "pgferry.dead_letters on the target, and in --report)"
        )
    if verify and t.first_differing_keys:
        keys = t.first_differing_keys
        more = t.differing + t.only_in_source + t.only_in_target - min(len(keys), 5)
        lines.append(
            f"{t.table}: first differing keys: "
            + "; ".join(key_text(k) for k in keys[:5])
            + (f"; and {more:,} more" if more > 0 else "")
        )
    return lines


def renderer(result: SyncResult) -> Any:
    def render(out: Console) -> None:
        if result.dry_run:
            _render_plan(result, out)
            return
        out.print(_result_table(result))
        plans = {p["table"]: p for p in result.options.get("table_policies", [])}
        for t in result.tables:
            for line in _result_table_lines(result, t, plans.get(t.table, {})):
                say(out, line)
        _unknown(out, result)
        listed = {t.table for t in result.tables if t.status == "missing"}
        for f in result.findings:
            if f.split(" ", 1)[0] not in listed:  # (a missing table's row says it already)
                say(out, f"drift: {f}")
        for w in result.warnings:
            say(out, f"warning: {w}")
        if result.error:
            say(out, f"error: {result.error}")
        if result.mode != "verify" and any(t.before_images and t.written for t in result.tables):
            say(
                out,
                f"run {result.run_id}: undo with `pgferry sync revert {result.run_id} "
                f"--env {result.target} --yes`",
            )
        say(out, f"{result.derive_outcome()} in {result.duration_s:.1f}s")

    return render

"""Helpers rules share: where an ALTER TABLE action starts, which columns a statement defines.

Contract: pure; :func:`cmd_offsets` runs pglast's scanner over one statement
(cached on the statement) to find where each ALTER TABLE action begins, because
the parse tree does not keep that position.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pgferry.lint.model import Context, Node, Stmt
from pgferry.sqltext.nodes import alter_cmds, qualname, unwrap

_LEAD = re.compile(rb"(?:\s+|--[^\n]*|/\*.*?\*/)*", re.S)


def cmd_offsets(cx: Context, st: Stmt) -> list[int]:
    """Byte offset of each ALTER TABLE action, in ``alter_cmds`` order."""
    if "cmd_offsets" in st.cache:
        return st.cache["cmd_offsets"]  # type: ignore[no-any-return]
    n_cmds = len(st.node.get("cmds") or [])
    offsets: list[int] = []
    info = cx.file
    rel = (st.node.get("relation") or {}).get("location", -1)
    if info is not None and rel >= 0:
        from pgferry.sqltext.parser import parser

        scan = parser().scan
        raw = info.data[st.start : st.end]
        text = raw.decode("utf-8", "replace")
        ascii_ = len(raw) == len(text)
        rel_char = len(info.data[st.start : rel].decode("utf-8", "replace"))
        toks = [t for t in scan(text) if t.name not in ("SQL_COMMENT", "C_COMMENT")]
        i = next((k for k, t in enumerate(toks) if t.start >= rel_char), len(toks))
        i += 1  # the relation's first name part
        while i + 1 < len(toks) and toks[i].name == "ASCII_46":  # ".name"
            i += 2
        if i < len(toks) and toks[i].name == "ASCII_42":  # "*"
            i += 1
        depth = 0
        if i < len(toks):
            offsets.append(toks[i].start)
        for t in toks[i:]:
            if t.name == "ASCII_40":
                depth += 1
            elif t.name == "ASCII_41":
                depth -= 1
            elif t.name == "ASCII_44" and depth == 0:
                offsets.append(t.end + 1)
        offsets = [o if ascii_ else len(text[:o].encode("utf-8")) for o in offsets]
        # skip blanks and comments after a comma: point at the action's first token
        offsets = [st.start + _LEAD.match(raw, o).end() for o in offsets]  # type: ignore[union-attr]
    if len(offsets) != n_cmds:
        offsets = [st.start] * n_cmds
    st.cache["cmd_offsets"] = offsets
    return offsets


Action = tuple[str, Node, str, Node, int]


def alter_actions(cx: Context, st: Stmt) -> list[Action]:
    """(table, cmd, def kind, def body, action offset) for each ALTER TABLE action (cached)."""
    cached = st.cache.get("actions")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    out: list[Action] = []
    if st.kind == "AlterTableStmt" and st.node.get("objtype") in ("OBJECT_TABLE", None):
        table = qualname(st.node.get("relation"))
        cmds = alter_cmds(st.node)
        offsets = cmd_offsets(cx, st) if len(cmds) > 1 else [_first_action(cx, st)] * len(cmds)
        for cmd, off in zip(cmds, offsets, strict=False):
            kind, body = unwrap(cmd.get("def"))
            out.append((table, cmd, kind, body, off))
    st.cache["actions"] = out
    return out


def _first_action(cx: Context, st: Stmt) -> int:
    """Where the only action of a one-action ALTER TABLE starts: the scanner is not needed
    unless the statement spans lines (then the action may be on a later line)."""
    info = cx.file
    if info is not None and b"\n" in info.data[st.start : st.end]:
        return cmd_offsets(cx, st)[0]
    return st.start


def column_defs(cx: Context, st: Stmt) -> list[tuple[str, Node, bool]]:
    """(table, ColumnDef body, added by ALTER TABLE?) from CREATE TABLE and ADD COLUMN (cached)."""
    cached = st.cache.get("coldefs")
    if cached is None:
        cached = st.cache["coldefs"] = list(_column_defs(cx, st))
    return cached


def _column_defs(cx: Context, st: Stmt) -> Iterator[tuple[str, Node, bool]]:
    if st.kind == "CreateStmt":
        table = qualname(st.node.get("relation"))
        for elt in st.node.get("tableElts") or []:
            if "ColumnDef" in elt:
                yield table, elt["ColumnDef"], False
    elif st.kind == "AlterTableStmt":
        for table, cmd, kind, body, _ in alter_actions(cx, st):
            if cmd.get("subtype") == "AT_AddColumn" and kind == "ColumnDef":
                yield table, body, True

"""The lint engine: parse SQL with pglast, run the rules in order, apply suppressions.

Contract:
- :class:`Settings` says which rules run and how severe they are (``[lint]`` in
  pgferry.toml, or the CLI). :func:`active_rules` applies it.
- :class:`Linter` lints files in the order given (the order migrations run). A
  table created earlier in the same file is new (no rows, no clients); one an
  earlier file created is new only when the catalog lacks it and that file is
  pending (not in ``applied``): see :class:`~pgferry.lint.model.Context`. It returns
  :class:`~pgferry.lint.model.Finding` lists; unparsable SQL raises
  :class:`~pgferry.errors.SqlParseError` naming file, line and the parser's words.
- Parsing and the transaction model are the one SQL front end's
  (:func:`pgferry.sqltext.model.split`, which the runner uses too): pglast's JSON
  path (plain dicts are several times cheaper to build than pglast's per-node Python
  objects); a file runs in one transaction unless it holds a statement that cannot
  (CONCURRENTLY, VACUUM, an ADD VALUE whose label the file then uses ...); explicit
  BEGIN ... COMMIT blocks count too.
- A finding's impact names the lock its rule weighs, or the statement's own lock on
  that table when the statement takes a stronger one (an ``ALTER TABLE`` holds the
  strongest lock of all its actions while each of them works).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from pgferry.lint import effects, suppress
from pgferry.lint.impact import impact_of
from pgferry.lint.model import (
    BIG_TABLE_ROWS,
    DEFAULT_PG,
    Context,
    FileInfo,
    Finding,
    Hit,
    Rule,
    Severity,
    Stmt,
)
from pgferry.lint.rules import ALL_RULES
from pgferry.sqltext.classify import stronger
from pgferry.sqltext.model import split

if TYPE_CHECKING:
    from pgferry.config import LintConfig

_SPACE = re.compile(r"\s+")
#: Finding.sort_key, as a C-level getter
_SORT_KEY = attrgetter("path", "line", "column", "code")


@dataclass
class Settings:
    """Which rules run: ``disable``/``enable`` take names or codes; ``severity`` overrides."""

    disable: list[str] = field(default_factory=list)
    enable: list[str] = field(default_factory=list)
    severity: dict[str, Severity] = field(default_factory=dict)
    pg_version: int | None = None
    #: more rows than this (catalog estimate) make a table big (``[lint] big_table_rows``)
    big_table_rows: int = BIG_TABLE_ROWS

    @classmethod
    def from_config(cls, lint: LintConfig) -> Settings:
        """From pgferry.toml's ``[lint]`` (:class:`~pgferry.config.LintConfig`)."""
        return cls(
            list(lint.disable),
            list(lint.enable),
            dict(lint.severity),
            lint.pg_version,
            lint.big_table_rows,
        )


_INDEX: dict[str, type[Rule]] = {}


def rule_index() -> dict[str, type[Rule]]:
    """Every rule by name and by code."""
    if not _INDEX:
        for r in ALL_RULES:
            _INDEX[r.name] = r
            _INDEX[r.code] = r
    return _INDEX


def active_rules(settings: Settings, pg_version: int) -> list[Rule]:
    """The rule instances that run under ``settings`` for ``pg_version``."""
    known = rule_index()
    for key in [*settings.disable, *settings.enable, *settings.severity]:
        if key not in known:
            from pgferry.errors import ConfigError

            raise ConfigError(
                f"[lint] names an unknown rule {key!r}; see `pgferry lint --list-rules`"
            )
    off = {known[k].name for k in settings.disable}
    on = {known[k].name for k in settings.enable}
    return [
        r()
        for r in ALL_RULES
        if r.name not in off and (not r.opt_in or r.name in on) and r.applies(pg_version)
    ]


def severity_of(rule: type[Rule] | Rule, settings: Settings) -> Severity:
    return settings.severity.get(rule.name) or settings.severity.get(rule.code) or rule.severity


class Linter:
    """Lints files in order; keeps what earlier files created (tables, columns).

    ``applied``: the paths (as given to :meth:`lint_text`) the catalog's history
    says ran already; the tables they create are not new in later files.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        catalog: Any = None,
        pg_version: int | None = None,
        applied: Collection[str] = (),
    ) -> None:
        self.settings = settings or Settings()
        self.catalog = catalog
        #: paths (as given to lint_text) the catalog's history says ran already
        self.applied = frozenset(applied)
        version = pg_version or self.settings.pg_version
        if version is None and catalog is not None:
            version = catalog.server_version // 10000
        self.pg_version = version or DEFAULT_PG
        self.rules = active_rules(self.settings, self.pg_version)
        # statements go only to rules with a check() of their own (some only finish())
        checkers = [r for r in self.rules if type(r).check is not Rule.check]
        self.by_kind: dict[str, list[Rule]] = {}
        self.every: list[Rule] = [r for r in checkers if not r.kinds]
        for r in checkers:
            for k in r.kinds:
                self.by_kind.setdefault(k, []).append(r)
        for k in self.by_kind:
            self.by_kind[k] += self.every
        self.cx = Context(
            pg_version=self.pg_version, catalog=catalog, big_table_rows=self.settings.big_table_rows
        )
        self._by_subs: dict[frozenset[str], list[Rule]] = {}
        self._active = {r.name for r in self.rules}
        # only the rules that look at a file as a whole are asked at its end
        self._finishers = [r for r in self.rules if type(r).finish is not Rule.finish]
        self._severity = {r.name: severity_of(r, self.settings) for r in self.rules}
        # a rule's own per-finding severity (Hit.severity) yields to the team's [lint] choice
        self._chosen = {
            r.name
            for r in self.rules
            if r.name in self.settings.severity or r.code in self.settings.severity
        }

    def lint_files(self, items: Iterable[tuple[str, str]]) -> list[Finding]:
        """Lint (path, text) pairs in order; SqlParseError stops at the first bad file."""
        out: list[Finding] = []
        for path, text in items:
            out.extend(self.lint_text(path, text))
        return out

    def lint_text(self, path: str, text: str) -> list[Finding]:
        """Findings of one file, suppressions applied (suppressed ones kept, marked)."""
        return self._walk(path, text, check=True)

    def replay_text(self, path: str, text: str) -> None:
        """Carry what one file creates or changes into later files, without running rules
        (a parallel run's catch-up on files a worker already linted)."""
        self._walk(path, text, check=False)

    def _walk(self, path: str, text: str, check: bool) -> list[Finding]:
        info = split(text, path, pg_major=self.pg_version)
        stmts = info.statements
        cx = self.cx
        cx.file, cx.stmts = info, stmts
        cx.pending = path not in self.applied
        cx.scratch = {}
        cx.file_created.clear()
        cx.reset_tx()
        raw: list[tuple[Rule, Hit, Stmt | None]] = []
        depth = 0
        for st in stmts:
            if check:
                rules = self.by_kind.get(st.kind, self.every)
                if st.kind == "AlterTableStmt":
                    rules = self._alter_rules(st, rules)
                for rule in rules:
                    for hit in rule.check(st, cx):
                        raw.append((rule, hit, st))
            effects.apply(st, cx)
            depth = effects.tx_depth_after(st, depth)
            if depth == 0 and (not info.transactional or effects.ends_tx(st)):
                cx.reset_tx()
        cx.end_file()
        if not check:
            cx.reset_tx()
            return []
        for rule in self._finishers:
            for hit in rule.finish(cx):
                raw.append((rule, hit, None))
        findings = [self._finding(info, stmts, rule, hit, st) for rule, hit, st in raw]
        findings = suppress.apply(info, stmts, findings, self._active, rule_index())
        cx.reset_tx()
        findings.sort(key=_SORT_KEY)
        return findings

    def _alter_rules(self, st: Stmt, rules: list[Rule]) -> list[Rule]:
        """The ALTER TABLE rules that read one of the statement's action subtypes."""
        subs = frozenset(c.get("AlterTableCmd", {}).get("subtype") for c in st.node.get("cmds", ()))
        found = self._by_subs.get(subs)
        if found is None:
            found = self._by_subs[subs] = [r for r in rules if not r.subtypes or r.subtypes & subs]
        return found

    def _finding(
        self, info: FileInfo, stmts: list[Stmt], rule: Rule, hit: Hit, st: Stmt | None
    ) -> Finding:
        if st is None and hit.loc is not None:  # a file-level finding: tie it to its statement
            st = next((s for s in reversed(stmts) if s.start <= hit.loc), None)
        offset = hit.loc if hit.loc is not None else (st.start if st else len(info.data))
        line, col = info.position(offset)
        text = ""
        if st is not None:
            text = st.cache.get("text", "")
            if not text:
                text = _SPACE.sub(" ", info.text_at(st.start, st.end)).strip()
                if len(text) > 200:
                    text = text[:197] + "..."
                st.cache["text"] = text
        impact = ""
        if self.catalog is not None and hit.table:
            lock = rule.lock
            held = st.table_lock if st is not None and lock else None
            if held is not None and held[0] == hit.table:
                lock = stronger(lock, held[1])
            impact = impact_of(
                self.catalog, hit.table, lock, hit.work if hit.work is not None else rule.work
            )
        severity = self._severity[rule.name]
        if hit.severity is not None and rule.name not in self._chosen:
            severity = hit.severity
        return Finding(
            rule.name,
            rule.code,
            severity,
            info.path,
            line,
            col,
            hit.message or rule.message,
            rule.help,
            text,
            impact,
            None,
            st.index if st else None,
        )

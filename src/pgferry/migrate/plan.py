"""Pure planning of migrations: a migrations directory against history rows.

Contract (no I/O, no clock; data in, data out):

- :func:`classify` returns one :class:`Entry` per line of ``migrate status``:
  every versioned file, template, repeatable, baseline row and history row
  without a file, with a Flyway-like ``state``:

  ``applied``            applied and the file is unchanged
  ``checksum_mismatch``  applied, but the file was edited (or renamed: its description
                         differs, as Flyway's validate reports) since
  ``pending``            not applied yet (will run)
  ``undone``             applied, then undone (a ``DELETE`` or ``UNDO_SQL`` row; pending
                         again)
  ``ignored``            not applied and lower than the current version: the history
                         is ahead of the files (``validate`` fails and ``up`` stops with
                         exit 1, as Flyway's validate does; ``--out-of-order`` applies it)
  ``failed``             the latest row for it has ``success = false``
  ``missing``            applied, but its file is gone
  ``future``             applied, no file, and above the highest file version
  ``template``           a ``VXXX__`` file; ``version`` is the one it would get
  ``held``               a contract-phase file (``-- pgferry:phase contract``) not applied:
                         ``up`` holds it until its guards pass and ``--contract`` is given
                         (:mod:`pgferry.migrate.contract`); never ``ignored``, so expand
                         files above it may be applied first
  ``outdated``           a repeatable whose file changed since it last ran
  ``baseline``           the ``BASELINE`` row itself
  ``below_baseline``     a file at or below the baseline version (never runs)

- :func:`fold` replays history rows in rank order: ``SQL`` (and Flyway's other
  script types) apply, ``BASELINE`` sets the baseline, ``SCHEMA`` is skipped. A
  successful ``DELETE`` (what ``migrate undo`` writes by default, and Flyway's
  repair of a removed file) marks the latest applied row of its version deleted,
  exactly as Flyway's ``MigrationInfoServiceImpl.markAsDeleted``: the version is
  undone, its file pending again; Flyway Teams' ``UNDO_SQL`` does the same. A
  failed ``DELETE`` or ``UNDO_SQL`` row is a failed undo of that version.
  A template applied on this database (same description and checksum, under a
  version with no numbered file) counts as applied, not as a new template.
- :func:`current_version`: the highest applied (not undone) version or baseline.
- :func:`template_versions` numbers templates: the next free integers above
  ``max(highest file, applied_max)``, in file-name order. ``migrate number``
  uses it too, so numbering and ``up`` agree.
  A template ``up`` already applied keeps the number it was recorded under,
  and rows of applied templates do not count in :func:`template_base`.
- :func:`pending`: the :class:`Step` list ``up`` runs, in order: versioned
  (pending or undone, and with ``out_of_order`` also ignored ones, up to
  ``target``), then templates when allowed, then repeatables that are new or
  outdated. Held contract files are steps too; the service decides whether they run.
- :func:`undo_steps`: the ``U`` files ``undo`` runs, the most recently applied first;
  raises :class:`~pgferry.errors.BadInput` before anything runs when a version
  has no undo file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pgferry.errors import BadInput
from pgferry.migrate.files import MigrationFile, MigrationKind, MigrationSet, Version
from pgferry.migrate.history_rows import BASELINE, DELETE, UNDO_SQL, HistoryRow
from pgferry.migrate.phases import declares_contract

State = Literal[
    "applied",
    "pending",
    "failed",
    "ignored",
    "missing",
    "checksum_mismatch",
    "template",
    "outdated",
    "baseline",
    "below_baseline",
    "undone",
    "future",
    "held",
]
#: states ``migrate validate`` treats as a problem
PROBLEM_STATES = frozenset({"failed", "missing", "checksum_mismatch", "ignored"})
#: problems ``up`` refuses on (exit 4); an ignored file stops it with exit 1 instead
REFUSE_STATES = frozenset({"failed", "missing", "checksum_mismatch"})


@dataclass
class Entry:
    """One line of ``migrate status``."""

    state: State
    version: Version | None
    description: str
    script: str | None
    file: MigrationFile | None
    row: HistoryRow | None
    kind: MigrationKind

    def to_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "version": str(self.version) if self.version is not None else None,
            "description": self.description,
            "script": self.script,
            "kind": self.kind,
            "checksum": self.file.checksum if self.file else None,
            "applied_checksum": self.row.checksum if self.row else None,
            "installed_rank": self.row.installed_rank if self.row else None,
            "installed_on": self.row.installed_on.isoformat() if self.row else None,
            "installed_by": self.row.installed_by if self.row else None,
            "execution_time": self.row.execution_time if self.row else None,
        }


@dataclass
class Step:
    """One file ``up`` (or ``undo``) will run, with what its history row will say."""

    kind: MigrationKind
    file: MigrationFile
    version: Version | None  # a template gets the version it would be numbered to
    description: str
    script: str  # the script name recorded in history
    checksum: int
    template: bool = False
    reason: str = "pending"  # pending, undone, outdated, template, undo
    undoes: HistoryRow | None = None  # for an undo step: the applied row it undoes

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "version": str(self.version) if self.version is not None else None,
            "description": self.description,
            "script": self.script,
            "file": self.file.script,
            "checksum": self.checksum,
            "template": self.template,
            "reason": self.reason,
        }


@dataclass
class HistoryView:
    """History rows folded into their effect: what is applied, failed, undone now."""

    applied: dict[Version, HistoryRow] = field(default_factory=dict)
    failed: dict[Version, HistoryRow] = field(default_factory=dict)
    undone: dict[Version, HistoryRow] = field(default_factory=dict)
    baseline: HistoryRow | None = None
    repeatable: dict[str, HistoryRow] = field(default_factory=dict)
    repeatable_failed: dict[str, HistoryRow] = field(default_factory=dict)

    @property
    def baseline_version(self) -> Version | None:
        if self.baseline is None or self.baseline.version is None:
            return None
        return Version.parse(self.baseline.version)


def fold(rows: list[HistoryRow]) -> HistoryView:
    """Replay history rows in ``installed_rank`` order."""
    h = HistoryView()
    for row in sorted(rows, key=lambda r: r.installed_rank):
        if row.type == "SCHEMA":  # Flyway's "<< Flyway Schema Creation >>" marker (rank 0)
            continue
        if row.type == BASELINE or row.type.endswith("_BASELINE"):
            if row.success:
                h.baseline = row
            continue
        if row.type == DELETE and row.version is None:  # a repeatable marked deleted
            if row.success:
                h.repeatable.pop(row.description, None)
            continue
        if row.version is None:
            if row.success:
                h.repeatable[row.description] = row
                h.repeatable_failed.pop(row.description, None)
            else:
                h.repeatable_failed[row.description] = row
            continue
        v = Version.parse(row.version)
        if row.type in (UNDO_SQL, DELETE):
            if row.success:
                h.applied.pop(v, None)
                h.failed.pop(v, None)
                h.undone[v] = row
            else:
                h.failed[v] = row
        elif row.success:
            h.applied[v] = row
            h.failed.pop(v, None)
            h.undone.pop(v, None)
        else:
            h.failed[v] = row
    return h


def current_version(rows: list[HistoryRow]) -> Version | None:
    """The highest applied, not undone version (or the baseline), None on a fresh database."""
    return _current(fold(rows))


def _current(h: HistoryView) -> Version | None:
    return max([*h.applied, *([h.baseline_version] if h.baseline_version else [])], default=None)


def template_versions(
    ms: MigrationSet, applied_max: Version | None, keep: dict[str, Version] | None = None
) -> dict[str, Version]:
    """The version each template would get, by script name, in file-name order.

    ``keep``: templates already applied somewhere under a number (script → version);
    each keeps it while it is above every file and ``applied_max``, and the other
    templates are numbered above those.
    """
    floor = max([v for v in (ms.highest, applied_max) if v is not None], default=None)
    kept = {s: v for s, v in (keep or {}).items() if floor is None or v > floor}
    start = max([v for v in (floor, *kept.values()) if v is not None], default=None)
    n = start.parts[0] if start is not None else 0
    out: dict[str, Version] = {}
    for t in sorted(ms.templates, key=lambda m: m.script):
        if t.script in kept:
            out[t.script] = kept[t.script]
            continue
        n += 1
        out[t.script] = Version(str(n))
    return out


def applied_template_versions(ms: MigrationSet, rows: list[HistoryRow]) -> dict[str, Version]:
    """Templates applied in this history, with the version ``up`` recorded them under."""
    return {
        s: Version.parse(r.version)
        for s, r in _applied_templates(ms, fold(rows)).items()
        if r.version
    }


def numbered_script(template: MigrationFile, version: Version) -> str:
    """The file name a template will have once numbered (``VXXX__a.sql`` → ``V7__a.sql``)."""
    return template.kind + str(version) + template.script[len(template.kind) + 3 :]


def _applied_templates(ms: MigrationSet, h: HistoryView) -> dict[str, HistoryRow]:
    """Templates already applied here: a version without a file whose row has the template's
    description and either its checksum or the script ``up`` recorded it under
    (:func:`numbered_script`), so a template edited after it was applied is still that
    template (changed since, as any applied file can be), not a new one to apply again."""
    files = ms.by_version()
    out: dict[str, HistoryRow] = {}
    for t in ms.templates:
        for v, row in h.applied.items():
            if v in files or row.description != t.description:
                continue
            if row.checksum == t.checksum or row.script == numbered_script(t, v):
                out[t.script] = row
                break
    return out


def template_base(ms: MigrationSet, rows: list[HistoryRow]) -> Version | None:
    """What templates are numbered above: the current version, not counting the rows of
    templates applied here (``up`` recorded them under their would-be number, which
    ``migrate number`` must give them again), so ``up``, ``status`` and ``number`` agree."""
    h = fold(rows)
    own = {id(r) for r in _applied_templates(ms, h).values()}
    applied = [v for v, r in h.applied.items() if id(r) not in own]
    return max([*applied, *([h.baseline_version] if h.baseline_version else [])], default=None)


def classify(ms: MigrationSet, rows: list[HistoryRow]) -> list[Entry]:
    """Every file and history row with its state (see the module docstring)."""
    h = fold(rows)
    current = _current(h)
    base = h.baseline_version
    files = ms.by_version()
    entries: list[Entry] = []
    applied_templates = _applied_templates(ms, h)
    template_rows = {id(r) for r in applied_templates.values()}

    for f in ms.versioned:
        v = f.version
        assert v is not None
        state: State
        row = h.applied.get(v) or h.failed.get(v)
        if v in h.failed:
            state, row = "failed", h.failed[v]
        elif v in h.applied:
            # Flyway's validate compares the description too: a renamed file is changed
            same = h.applied[v].checksum in (None, f.checksum)
            same = same and h.applied[v].description == f.description[:200]
            state = "applied" if same else "checksum_mismatch"
        elif base is not None and v <= base:
            state = "below_baseline"
        elif declares_contract(f.sql):
            state, row = "held", h.undone.get(v)
        elif current is not None and v < current:
            state, row = "ignored", h.undone.get(v)
        elif v in h.undone:
            state, row = "undone", h.undone[v]
        else:
            state = "pending"
        entries.append(Entry(state, v, f.description, f.script, f, row, "V"))

    for v, row in h.applied.items():
        if v not in files and id(row) not in template_rows:
            state = "future" if ms.highest is None or v > ms.highest else "missing"
            entries.append(Entry(state, v, row.description, row.script, None, row, "V"))
    for v, row in h.failed.items():
        if v not in files:
            kind: MigrationKind = "U" if row.type in (UNDO_SQL, DELETE) else "V"
            entries.append(Entry("failed", v, row.description, row.script, None, row, kind))
    if h.baseline is not None:
        entries.append(
            Entry(
                "baseline", base, h.baseline.description, h.baseline.script, None, h.baseline, "V"
            )
        )
    entries.sort(key=lambda e: (e.version.parts if e.version else (), e.state != "baseline"))

    numbers = template_versions(
        ms,
        template_base(ms, rows) if applied_templates else current,
        {s: Version.parse(r.version) for s, r in applied_templates.items() if r.version},
    )
    for t in sorted(ms.templates, key=lambda m: m.script):
        if t.script in applied_templates:
            row = applied_templates[t.script]
            entries.append(
                Entry(
                    "applied" if row.checksum in (None, t.checksum) else "checksum_mismatch",
                    Version.parse(row.version or "0"),
                    t.description,
                    t.script,
                    t,
                    row,
                    "V",
                )
            )
        else:
            entries.append(
                Entry("template", numbers[t.script], t.description, t.script, t, None, "V")
            )

    seen: set[str] = set()
    for f in ms.repeatable:
        seen.add(f.description)
        if f.description in h.repeatable_failed:
            entries.append(
                Entry(
                    "failed",
                    None,
                    f.description,
                    f.script,
                    f,
                    h.repeatable_failed[f.description],
                    "R",
                )
            )
        elif f.description not in h.repeatable:
            entries.append(Entry("pending", None, f.description, f.script, f, None, "R"))
        else:
            row = h.repeatable[f.description]
            state = "applied" if row.checksum == f.checksum else "outdated"
            entries.append(Entry(state, None, f.description, f.script, f, row, "R"))
    for desc, row in {**h.repeatable, **h.repeatable_failed}.items():
        if desc not in seen:
            state = "failed" if desc in h.repeatable_failed else "missing"
            entries.append(Entry(state, None, desc, row.script, None, row, "R"))
            seen.add(desc)
    return entries


def pending(
    ms: MigrationSet,
    rows: list[HistoryRow],
    *,
    target: Version | None = None,
    allow_templates: bool = True,
    template_start: Version | None = None,
    out_of_order: bool = False,
) -> list[Step]:
    """The steps ``up`` runs, in order. Templates only when ``allow_templates``;
    versions below the current one (``ignored``) only with ``out_of_order``.

    ``template_start`` is the highest version applied anywhere the caller knows
    of (default: this history's current version); templates are numbered above it.
    """
    entries = classify(ms, rows)
    steps: list[Step] = []
    runnable = (
        ("pending", "undone", "held", "ignored") if out_of_order else ("pending", "undone", "held")
    )
    for e in entries:
        if e.kind != "V" or e.file is None or e.state not in runnable:
            continue
        assert e.version is not None
        if target is not None and e.version > target:
            continue
        steps.append(
            Step(
                "V",
                e.file,
                e.version,
                e.description,
                e.script or e.file.script,
                e.file.checksum,
                reason=e.state,
            )
        )
    if allow_templates:
        start = template_start
        cur = template_base(ms, rows)
        if cur is not None and (start is None or cur > start):
            start = cur
        numbers = template_versions(ms, start, applied_template_versions(ms, rows))
        for e in entries:
            if e.state != "template" or e.file is None:
                continue
            v = numbers[e.file.script]
            if target is not None and v > target:
                continue
            steps.append(
                Step(
                    "V",
                    e.file,
                    v,
                    e.description,
                    numbered_script(e.file, v),
                    e.file.checksum,
                    template=True,
                    reason="template",
                )
            )
    for e in entries:
        if e.kind == "R" and e.file is not None and e.state in ("pending", "outdated"):
            steps.append(
                Step(
                    "R", e.file, None, e.description, e.file.script, e.file.checksum, reason=e.state
                )
            )
    return steps


def undo_steps(
    ms: MigrationSet,
    rows: list[HistoryRow],
    *,
    to: Version | None = None,
    only: set[Version] | None = None,
) -> list[Step]:
    """The undo files to run, the most recently applied first: every applied version above
    ``to`` (default: only the most recently applied one), or exactly the applied versions
    in ``only`` (a gate's rollback of one run). BadInput when one lacks a U file.

    Applied order, not version order: a version applied out of order (``--out-of-order``)
    after a higher one is what a plain undo takes back, as Flyway's undo ("the most recently
    applied versioned migration"): undoing is running what was applied backwards."""
    h = fold(rows)
    applied = sorted(h.applied, key=lambda v: h.applied[v].installed_rank, reverse=True)
    if not applied:
        raise BadInput("nothing to undo: no applied versioned migration")
    if only is not None:
        chosen = [v for v in applied if v in only]
        if not chosen:
            raise BadInput(
                "nothing to undo: none of " + ", ".join(map(str, sorted(only))) + " is applied"
            )
    elif to is None:
        chosen = applied[:1]
    else:
        chosen = [v for v in applied if v > to]
        if not chosen:
            raise BadInput(f"nothing to undo: no applied version above {to}")
    # an undo template undoes only its own template, applied here under a number
    templates = {id(r) for r in _applied_templates(ms, h).values()}
    steps: list[Step] = []
    lacking: list[str] = []
    for v in chosen:
        row = h.applied[v]
        u = ms.undo.get(v)
        if u is None and id(row) in templates:
            u = ms.undo_templates.get(row.description)
        if u is None:
            lacking.append(f"{v} ({row.script})")
            continue
        steps.append(
            Step("U", u, v, u.description, u.script, u.checksum, reason="undo", undoes=row)
        )
    if lacking:
        raise BadInput(
            "cannot undo: no undo file (U<version>__<desc>.sql) for version "
            + ", ".join(lacking)
            + "; nothing was run",
            versions=[x.split(" ")[0] for x in lacking],
        )
    return steps

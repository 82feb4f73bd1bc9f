"""migrate/plan.py: classification and pending steps, as data (no database)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgferry.errors import BadInput
from pgferry.migrate.files import MigrationSet, Version, scan
from pgferry.migrate.history_rows import HistoryRow
from pgferry.migrate.plan import (
    classify,
    current_version,
    numbered_script,
    pending,
    template_versions,
    undo_steps,
)

T0 = datetime(2026, 1, 1)


def mk(tmp: Path, files: dict[str, str]) -> MigrationSet:
    tmp.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (tmp / name).write_text(text)
    return scan(tmp)


class H:
    """Builds history rows the way the runner writes them."""

    def __init__(self) -> None:
        self.rows: list[HistoryRow] = []

    def add(
        self,
        version: str | None,
        script: str,
        checksum: int | None,
        *,
        type: str = "SQL",
        success: bool = True,
        description: str | None = None,
    ) -> H:
        desc = (
            description
            if description is not None
            else script.split("__", 1)[-1][:-4].replace("_", " ")
        )
        self.rows.append(
            HistoryRow(
                len(self.rows) + 1, version, desc, type, script, checksum, "me", T0, 5, success
            )
        )
        return self


def states(entries: list) -> dict[str, str]:  # type: ignore[type-arg]
    return {(e.script or e.description): e.state for e in entries}


def test_fresh_database_everything_pending(tmp_path: Path) -> None:
    ms = mk(
        tmp_path,
        {
            "V1__a.sql": "a",
            "V1.1__b.sql": "b",
            "V2__c.sql": "c",
            "R__view.sql": "v",
            "U2__c.sql": "u",
        },
    )
    assert {e.state for e in classify(ms, [])} == {"pending"}
    steps = pending(ms, [])
    assert [s.script for s in steps] == ["V1__a.sql", "V1.1__b.sql", "V2__c.sql", "R__view.sql"]
    assert steps[1].description == "b" and steps[-1].version is None
    assert current_version([]) is None


def test_states(tmp_path: Path) -> None:
    ms = mk(
        tmp_path,
        {
            "V1__a.sql": "a",
            "V2__b.sql": "b",
            "V3__c.sql": "c",
            "V5__e.sql": "e",
            "V6__f.sql": "f",
            "R__r1.sql": "r1",
            "R__r2.sql": "r2",
            "R__r3.sql": "r3",
        },
    )
    f = {m.script: m.checksum for m in [*ms.versioned, *ms.repeatable]}
    h = (
        H()
        .add("1", "V1__a.sql", f["V1__a.sql"])
        .add("2", "V2__b.sql", 12345)  # edited since
        .add("4", "V4__d.sql", 1)  # file deleted
        .add("5", "V5__e.sql", f["V5__e.sql"])
        .add(None, "R__r1.sql", f["R__r1.sql"])
        .add(None, "R__r2.sql", 99)  # changed → outdated
        .add("6", "V6__f.sql", f["V6__f.sql"], success=False)
        .add("9", "V9__z.sql", 7)
    )  # future
    s = states(classify(ms, h.rows))
    assert s == {
        "V1__a.sql": "applied",
        "V2__b.sql": "checksum_mismatch",
        "V3__c.sql": "ignored",
        "V4__d.sql": "missing",
        "V5__e.sql": "applied",
        "V6__f.sql": "failed",
        "V9__z.sql": "future",
        "R__r1.sql": "applied",
        "R__r2.sql": "outdated",
        "R__r3.sql": "pending",
    }
    assert current_version(h.rows) == Version("9")
    # ignored (out of order) files are not applied by default
    assert [st.script for st in pending(ms, h.rows)] == ["R__r2.sql", "R__r3.sql"]


def test_undo_makes_version_pending_again(tmp_path: Path) -> None:
    ms = mk(tmp_path, {"V1__a.sql": "a", "V2__b.sql": "b", "U2__b.sql": "drop b"})
    f = {m.script: m.checksum for m in ms.versioned}
    h = H().add("1", "V1__a.sql", f["V1__a.sql"]).add("2", "V2__b.sql", f["V2__b.sql"])
    u = undo_steps(ms, h.rows)
    assert [x.script for x in u] == ["U2__b.sql"] and u[0].version == Version("2")
    h.add("2", "U2__b.sql", ms.undo[Version("2")].checksum, type="UNDO_SQL")
    assert states(classify(ms, h.rows))["V2__b.sql"] == "undone"
    assert current_version(h.rows) == Version("1")
    assert [x.script for x in pending(ms, h.rows)] == ["V2__b.sql"]
    h.add("2", "V2__b.sql", f["V2__b.sql"])
    assert states(classify(ms, h.rows))["V2__b.sql"] == "applied"


def test_undo_takes_back_the_most_recently_applied_first(tmp_path: Path) -> None:
    """V2 applied out of order after V3 (``--out-of-order``): a plain undo takes back V2,
    as Flyway's undo does (the most recently applied), not the highest version; ``--to``
    and a gate's ``only`` run theirs backwards in applied order too."""
    files = {f"{p}{v}__{n}.sql": n for v, n in ((1, "a"), (2, "b"), (3, "c")) for p in "VU"}
    ms = mk(tmp_path, files)
    f = {m.script: m.checksum for m in ms.versioned}
    h = H().add("1", "V1__a.sql", f["V1__a.sql"]).add("3", "V3__c.sql", f["V3__c.sql"])
    h.add("2", "V2__b.sql", f["V2__b.sql"])
    assert [x.script for x in undo_steps(ms, h.rows)] == ["U2__b.sql"]
    assert [x.script for x in undo_steps(ms, h.rows, to=Version("1"))] == [
        "U2__b.sql",
        "U3__c.sql",
    ]
    assert [x.script for x in undo_steps(ms, h.rows, only={Version("3"), Version("1")})] == [
        "U3__c.sql",
        "U1__a.sql",
    ]
    h.add("2", "U2__b.sql", ms.undo[Version("2")].checksum, type="UNDO_SQL")
    assert [x.script for x in undo_steps(ms, h.rows)] == ["U3__c.sql"]


def test_undo_without_file_stops_before_anything(tmp_path: Path) -> None:
    ms = mk(tmp_path, {"V1__a.sql": "a", "V2__b.sql": "b", "U2__b.sql": "u"})
    f = {m.script: m.checksum for m in ms.versioned}
    h = H().add("1", "V1__a.sql", f["V1__a.sql"]).add("2", "V2__b.sql", f["V2__b.sql"])
    with pytest.raises(BadInput, match=r"no undo file .* version 1 \(V1__a.sql\)"):
        undo_steps(ms, h.rows, to=Version("0"))
    assert [x.version for x in undo_steps(ms, h.rows, to=Version("1"))] == [Version("2")]
    with pytest.raises(BadInput, match="nothing to undo"):
        undo_steps(ms, [])


def test_baseline(tmp_path: Path) -> None:
    ms = mk(tmp_path, {"V1__a.sql": "a", "V2__b.sql": "b", "V3__c.sql": "c"})
    h = H().add(
        "2", "<< Flyway Baseline >>", None, type="BASELINE", description="<< Flyway Baseline >>"
    )
    s = classify(ms, h.rows)
    assert [(e.script, e.state) for e in s] == [
        ("V1__a.sql", "below_baseline"),
        ("<< Flyway Baseline >>", "baseline"),
        ("V2__b.sql", "below_baseline"),
        ("V3__c.sql", "pending"),
    ]
    assert current_version(h.rows) == Version("2")
    assert [x.script for x in pending(ms, h.rows)] == ["V3__c.sql"]


def test_target_and_templates(tmp_path: Path) -> None:
    ms = mk(
        tmp_path, {"V1__a.sql": "a", "V2__b.sql": "b", "VXXX__zz.sql": "z", "VXXX__aa.sql": "y"}
    )
    assert [x.script for x in pending(ms, [], target=Version("1"), allow_templates=False)] == [
        "V1__a.sql"
    ]
    steps = pending(ms, [])
    assert [(x.script, str(x.version), x.template) for x in steps] == [
        ("V1__a.sql", "1", False),
        ("V2__b.sql", "2", False),
        ("V3__aa.sql", "3", True),
        ("V4__zz.sql", "4", True),
    ]
    assert template_versions(ms, Version("7.5")) == {
        "VXXX__aa.sql": Version("8"),
        "VXXX__zz.sql": Version("9"),
    }
    assert [x.version for x in pending(ms, [], template_start=Version("10"))][2:] == [
        Version("11"),
        Version("12"),
    ]
    # once applied under its number, a template is recognised as applied, not re-numbered
    h = H()
    for x in steps:
        h.add(str(x.version), x.script, x.checksum, description=x.description)
    s = states(classify(ms, h.rows))
    assert s["VXXX__aa.sql"] == "applied" and s["VXXX__zz.sql"] == "applied"
    assert "V3__aa.sql" not in s and pending(ms, h.rows) == []
    assert numbered_script(ms.templates[0], Version("12")) == "V12__aa.sql"


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(1, 40), min_size=1, max_size=12), st.data())
def test_pending_then_applied_is_complete(versions: set[int], data: st.DataObject) -> None:
    """Applying exactly the pending steps leaves nothing pending, in ascending order."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ms = mk(Path(d), {f"V{v}__m{v}.sql": f"select {v};" for v in versions})
        done = data.draw(st.sets(st.sampled_from(sorted(versions))))
        cur = max(done, default=0)
        h = H()
        for v in sorted(done):
            h.add(str(v), f"V{v}__m{v}.sql", ms.by_version()[Version(str(v))].checksum)
        steps = pending(ms, h.rows)
        assert [int(str(s.version)) for s in steps] == sorted(v for v in versions if v > cur)
        ignored = {e.version for e in classify(ms, h.rows) if e.state == "ignored"}
        assert ignored == {Version(str(v)) for v in versions if v < cur and v not in done}
        for s in steps:
            h.add(str(s.version), s.script, s.checksum)
        assert pending(ms, h.rows) == []


def test_undo_of_an_applied_template_uses_its_undo_template(tmp_path: Path) -> None:
    ms = mk(tmp_path, {"V1__a.sql": "a", "VXXX__feature.sql": "f", "UXXX__feature.sql": "drop f"})
    h = H()
    for s in pending(ms, []):
        h.add(str(s.version), s.script, s.checksum, description=s.description)
    u = undo_steps(ms, h.rows)
    assert [(x.script, x.version) for x in u] == [("UXXX__feature.sql", Version("2"))]


def test_failed_repeatable_and_missing_repeatable(tmp_path: Path) -> None:
    ms = mk(tmp_path, {"R__v.sql": "v"})
    h = H().add(None, "R__v.sql", 1, success=False).add(None, "R__gone.sql", 2)
    s = states(classify(ms, h.rows))
    assert s == {"R__v.sql": "failed", "R__gone.sql": "missing"}
    assert pending(ms, h.rows) == []


def test_flyway_delete_rows_hide_missing_migrations(tmp_path: Path) -> None:
    ms = mk(tmp_path, {"V1__a.sql": "a"})
    h = (
        H()
        .add("1", "V1__a.sql", ms.versioned[0].checksum)
        .add("2", "V2__gone.sql", 5)
        .add("2", "V2__gone.sql", 5, type="DELETE")
    )
    assert states(classify(ms, h.rows)) == {"V1__a.sql": "applied"}
    assert current_version(h.rows) == Version("1")


def test_a_delete_row_undoes_like_flyways_mark_as_deleted(tmp_path: Path) -> None:
    """Flyway's MigrationInfoServiceImpl.markAsDeleted: a successful DELETE row marks the latest
    applied row of its version deleted; the file is pending again (issue 19)."""
    from pgferry.migrate.admin import undo_conversions

    ms = mk(tmp_path, {"V1__a.sql": "a", "V2__b.sql": "b", "U2__b.sql": "drop b"})
    f = {m.script: m.checksum for m in ms.versioned}
    h = H().add("1", "V1__a.sql", f["V1__a.sql"]).add("2", "V2__b.sql", f["V2__b.sql"])
    h.add("2", "V2__b.sql", f["V2__b.sql"], type="DELETE")
    assert states(classify(ms, h.rows))["V2__b.sql"] == "undone"
    assert current_version(h.rows) == Version("1")
    assert [x.script for x in pending(ms, h.rows)] == ["V2__b.sql"]
    h.add("2", "V2__b.sql", f["V2__b.sql"])
    assert states(classify(ms, h.rows))["V2__b.sql"] == "applied"
    assert undo_conversions(h.rows) == []
    h.add("2", "U2__b.sql", 7, type="UNDO_SQL")
    (c,) = undo_conversions(h.rows)
    assert (c.installed_rank, c.version, c.script, c.becomes, c.checksum, c.description) == (
        5,
        "2",
        "U2__b.sql",
        "V2__b.sql",
        f["V2__b.sql"],
        h.rows[3].description,
    )

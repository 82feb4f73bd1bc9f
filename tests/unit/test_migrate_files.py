"""Migration files without a database: naming, version order, Flyway's checksum, pgferry.sum."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgferry.errors import BadInput
from pgferry.migrate import files
from pgferry.migrate.files import Version, flyway_checksum


def signed(crc: int) -> int:
    """Java's ``(int) crc32.getValue()``: the unsigned CRC as a signed 32-bit int."""
    return crc - (1 << 32) if crc >= (1 << 31) else crc


def java_checksum(text: str) -> int:
    """Flyway's algorithm written out independently: CRC32 updated line by line."""
    crc = zlib.crc32(b"")
    for line in text.removeprefix("\ufeff").splitlines():
        crc = zlib.crc32(line.encode("utf-8"), crc)
    return signed(crc)


# -- Flyway's checksum ---------------------------------------------------------


def test_checksum_fixed_vectors() -> None:
    # CRC-32 check value of "123456789" is 0xCBF43926 (the standard test vector)
    assert flyway_checksum(b"123456789\n") == signed(0xCBF43926) == -873187034
    assert flyway_checksum(b"123456789") == -873187034
    # lines are joined without terminators: "ab\ncd" hashes like "abcd"
    assert flyway_checksum(b"ab\ncd\n") == signed(zlib.crc32(b"abcd"))
    # an empty file: CRC32 of nothing is 0
    assert flyway_checksum(b"") == 0
    sql = "CREATE TABLE t (id bigint);\nINSERT INTO t VALUES (1);\n"
    assert flyway_checksum(sql.encode()) == signed(
        zlib.crc32(b"INSERT INTO t VALUES (1);", zlib.crc32(b"CREATE TABLE t (id bigint);"))
    )


def test_checksum_ignores_line_endings_and_bom() -> None:
    lf = "SELECT 1;\n-- café\nSELECT 2;\n"
    variants = [
        lf,
        lf.replace("\n", "\r\n"),
        lf.replace("\n", "\r"),
        "\ufeff" + lf,
        "\ufeff" + lf.replace("\n", "\r\n"),
        lf.rstrip("\n"),  # no final newline: Java's readLine() sees the same lines
    ]
    sums = {flyway_checksum(v.encode("utf-8")) for v in variants}
    assert sums == {java_checksum(lf)}
    assert -(1 << 31) <= java_checksum(lf) < (1 << 31)


def test_checksum_sees_content_changes() -> None:
    a = flyway_checksum(b"SELECT 1;\n")
    assert a != flyway_checksum(b"SELECT 1 ;\n")
    assert a != flyway_checksum(b"SELECT 1;\n\nSELECT 2;\n")


@settings(deadline=None)
@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="\r\n\ufeff", blacklist_categories=["Cs"])
        ),
        max_size=8,
    )
)
def test_checksum_matches_java_semantics(lines: list[str]) -> None:
    # str.splitlines also splits on \x0b, \x1c, \u2028 ...; Java's readLine does not
    lines = [ln for ln in lines if ln.splitlines() == [ln] or ln == ""]
    body = "\n".join(lines)
    expected = 0
    for ln in body.split("\n") if body else []:
        expected = zlib.crc32(ln.encode("utf-8"), expected)
    assert flyway_checksum(body.encode()) == signed(expected)
    assert flyway_checksum(body.replace("\n", "\r\n").encode()) == signed(expected)


# -- versions ------------------------------------------------------------------


def test_version_ordering() -> None:
    assert Version.parse("1.10") > Version.parse("1.9")
    assert Version.parse("1") == Version.parse("1.0") == Version.parse("1.0.0")
    assert hash(Version.parse("1")) == hash(Version.parse("1.0"))
    assert Version.parse("2") > Version.parse("1.999")
    assert Version.parse("1_2") == Version.parse("1.2")
    assert str(Version.parse("1_2")) == "1.2"
    assert Version.parse("10") > Version.parse("9")  # numeric, not lexical
    assert Version.parse("002") == Version.parse("2")
    ordered = sorted(Version.parse(v) for v in ["1.10", "1.2", "1.9", "1", "10", "2.0.1"])
    assert [str(v) for v in ordered] == ["1", "1.2", "1.9", "1.10", "2.0.1", "10"]
    assert Version.parse("1.3").next() == Version.parse("2")


@pytest.mark.parametrize("bad", ["", "a", "1..2", "1.", "v1", "1-2"])
def test_version_rejects_garbage(bad: str) -> None:
    with pytest.raises(BadInput):
        Version.parse(bad)


def _dir(tmp_path: Path, names: list[str]) -> Path:
    d = tmp_path / "migrations"
    d.mkdir()
    for n in names:
        (d / n).write_text(f"-- {n}\nSELECT 1;\n", encoding="utf-8")
    return d


def test_scan_sorts_numerically_and_classifies(tmp_path: Path) -> None:
    d = _dir(
        tmp_path,
        [
            "V1.10__ten.sql",
            "V1.9__nine.sql",
            "V2__two.sql",
            "V1_2__one_two.sql",
            "U2__two.sql",
            "R__views.sql",
            "VXXX__add_leads.sql",
            "UXXX__add_leads.sql",
            "VXXX__a_first.sql",
            "notes.sql",
            "README.md",
            "v3__lowercase.sql",
        ],
    )
    ms = files.scan(d)
    assert [m.script for m in ms.versioned] == [
        "V1_2__one_two.sql",
        "V1.9__nine.sql",
        "V1.10__ten.sql",
        "V2__two.sql",
    ]
    assert [m.description for m in ms.versioned] == ["one two", "nine", "ten", "two"]
    assert list(ms.undo) == [Version.parse("2")]
    assert [m.script for m in ms.repeatable] == ["R__views.sql"]
    assert [m.script for m in ms.templates] == ["VXXX__a_first.sql", "VXXX__add_leads.sql"]
    assert list(ms.undo_templates) == ["add leads"]
    assert sorted(p.name for p in ms.ignored) == ["notes.sql", "v3__lowercase.sql"]
    assert ms.highest == Version.parse("2")


@pytest.mark.parametrize(
    "pair",
    [("V1__a.sql", "V1.0__b.sql"), ("V2__a.sql", "V2__b.sql"), ("V1_1__a.sql", "V1.1__b.sql")],
)
def test_duplicate_versions_are_an_error(tmp_path: Path, pair: tuple[str, str]) -> None:
    d = _dir(tmp_path, list(pair))
    with pytest.raises(BadInput, match="duplicate migration version"):
        files.scan(d)


def test_undo_and_versioned_may_share_a_version(tmp_path: Path) -> None:
    ms = files.scan(_dir(tmp_path, ["V1__a.sql", "U1__a.sql"]))
    assert len(ms.versioned) == 1 and len(ms.undo) == 1


def test_sum_changes_with_any_file(tmp_path: Path) -> None:
    d = _dir(tmp_path, ["V1__a.sql", "V2__b.sql"])
    ms = files.scan(d)
    assert files.sum_state(ms) == "missing"
    files.write_sum(ms)
    assert files.sum_state(files.scan(d)) == "ok"
    first = (d / files.SUM_FILE).read_text()
    assert first.startswith("h1:") and "V1__a.sql h1:" in first
    (d / "V3__c.sql").write_text("SELECT 3;\n")
    assert files.sum_state(files.scan(d)) == "stale"
    files.write_sum(files.scan(d))
    second = (d / files.SUM_FILE).read_text()
    # line 1 (the total) changes, so two branches adding files conflict in git
    assert first.splitlines()[0] != second.splitlines()[0]
    (d / "V3__c.sql").write_text("SELECT 33;\n")
    assert files.sum_state(files.scan(d)) == "stale"


# -- templates: numbering is pure ------------------------------------------------


@settings(deadline=None, max_examples=60)
@given(
    existing=st.sets(st.integers(1, 40), max_size=6),
    applied=st.one_of(st.none(), st.integers(1, 60)),
    descs=st.sets(st.text(alphabet="abcdefgh", min_size=1, max_size=6), min_size=1, max_size=5),
    with_undo=st.sets(st.text(alphabet="abcdefgh", min_size=1, max_size=6), max_size=5),
)
def test_numbering_properties(
    existing: set[int], applied: int | None, descs: set[str], with_undo: set[str]
) -> None:
    import tempfile

    from pgferry.migrate import templates

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for v in existing:
            (d / f"V{v}__old_{v}.sql").write_text("SELECT 1;\n")
        for s in descs:
            (d / f"VXXX__{s}.sql").write_text(f"-- {s}\n")
        for s in with_undo:
            (d / f"UXXX__{s}.sql").write_text(f"-- undo {s}\n")
        ms = files.scan(d)
        renames = templates.plan_numbering(ms, Version(str(applied)) if applied else None)
        floor = max([*existing, applied or 0])
        v_renames = [r for r in renames if r.old.name.startswith("V")]
        # every template gets a version, consecutive above both the files and history,
        # in file-name order
        assert [r.old.name for r in v_renames] == sorted(f"VXXX__{s}.sql" for s in descs)
        assert [int(str(r.version)) for r in v_renames] == list(
            range(floor + 1, floor + 1 + len(descs))
        )
        # an undo template follows its V file; orphans are left alone
        by_desc = {r.old.name[6:]: r.version for r in v_renames}
        for r in renames:
            if r.old.name.startswith("U"):
                assert r.version == by_desc[r.old.name[6:]]
        assert {r.old.name for r in renames if r.old.name.startswith("U")} == {
            f"UXXX__{s}.sql" for s in with_undo & descs
        }
        assert templates.orphan_undo_templates(ms) == sorted(
            f"UXXX__{s}.sql" for s in with_undo - descs
        )
        # no two files end up with the same name, none collides with an existing file
        targets = [r.new.name for r in renames]
        assert len(set(targets)) == len(targets)
        assert not any((d / t).exists() for t in targets)
        templates.apply_renames(ms, renames)
        after = files.scan(d)
        assert not after.templates and files.sum_state(after) == "ok"

"""The journal's hash chain without a database (issue 10 item 12): the trigger and the verifier
hash the same fields in the same order, and the checker names the first break."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pgferry.journal import chain, schema


def _calls(text: str, name: str) -> list[str]:
    """The argument text of every ``name(...)`` call in ``text`` (parentheses matched)."""
    out, i = [], text.find(name + "(")
    while i >= 0:
        start = j = i + len(name)  # at the opening parenthesis
        depth = 0
        while True:
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            j += 1
            if depth == 0:
                break
        out.append(text[start + 1 : j - 1])
        i = text.find(name + "(", j)
    return out


def test_trigger_and_verifier_hash_the_same_fields() -> None:
    body = " ".join(
        schema.SCHEMA_SQL.split("CREATE OR REPLACE FUNCTION pgferry.journal_chain")[1].split()
    )
    trigger = [a.replace("NEW.", "") for a in _calls(body, "pgferry.journal_field")]
    assert trigger == [" ".join(f.split()) for f in chain.FIELDS]
    select = " ".join(chain._ROWS_SQL.split())
    assert ", ".join(chain.FIELDS) + ", row_hash" in select


def _rows(n: int) -> list[chain.Row]:
    out, prev = [], ""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(1, n + 1):
        fields: list[str | None] = [
            str(i),
            f"t{i}",
            "once",
            None,
            "u",
            "r",
            "dev",
            "c",
            "{}",
            "ok",
            "0",
            None,
            None,
            "{}",
            prev,
        ]
        h = chain.row_hash(fields)
        out.append(chain.Row(i, t0 + timedelta(seconds=i), fields, prev, h))
        prev = h
    return out


def test_check_names_the_first_break() -> None:
    rows = _rows(5)
    assert chain.check(rows) is None
    changed = _rows(5)
    changed[2].fields[9] = "failed"
    assert chain.check(changed) == (
        "row 3 was changed after it was written: its hash does not match its content"
    )
    removed = [r for r in _rows(5) if r.id != 3]
    assert chain.check(removed) == (
        "a row was removed between row 2 and row 4: row 4 chains to a row that is gone"
    )
    swapped = _rows(5)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    assert chain.check(swapped) == (
        "row 3 was inserted out of order: it chains to row 2, not to row 1 before it"
    )
    early = _rows(5)
    early[4].at = early[0].at
    assert chain.check(early).startswith("row 5 was inserted out of order: it is dated")  # type: ignore[union-attr]
    assert chain.check([]) is None

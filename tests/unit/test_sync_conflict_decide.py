"""The three-way decision of the conflicts step (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pgferry.sync.conflicts import decide

rows = st.one_of(st.none(), st.integers(-3, 3))  # None: no row (absent / not in the base)


def test_the_cases_of_the_issue() -> None:
    b, x, y = 1, 2, 3
    assert decide(b, b, b) == "same"
    assert decide(b, x, b) == "normal"  # only the source changed
    assert decide(None, x, None) == "normal"  # a new source row
    assert decide(b, None, b) == "normal"  # deleted at the source
    assert decide(b, b, x) == "target_only"  # a correction on the target
    assert decide(None, None, x) == "target_only"  # a row only the target inserted
    assert decide(b, b, None) == "target_only"  # deleted on the target only
    assert decide(b, x, y) == "conflict"  # both changed, differently
    assert decide(b, x, None) == "conflict"  # target deleted a row the source changed
    assert decide(b, None, y) == "conflict"  # source deleted a row the target changed
    assert decide(None, x, y) == "conflict"  # both inserted the key, differently
    assert decide(b, x, x) == "same"  # both made the same change


@given(b=rows, s=rows, t=rows)
def test_a_conflict_needs_both_sides_changed_and_different(
    b: int | None, s: int | None, t: int | None
) -> None:
    d = decide(b, s, t)
    assert (d == "same") == (s == t)
    if d == "conflict":
        assert s != b and t != b and s != t
    if s != b and t != b and s != t:
        assert d == "conflict"
    # unchanged on the target: never kept from the source's change
    if t == b and s != t:
        assert d == "normal"

"""The fingerprint comparison (pure): what changed, and fingerprints of an older layout."""

from __future__ import annotations

from pgferry.pg.fingerprint import LAYOUT, compare


def test_changed_added_removed_are_named_sorted() -> None:
    before = {LAYOUT: "2", "table public.a": "1", "index public.i": "2", "view public.v": "3"}
    now = {LAYOUT: "2", "table public.a": "9", "view public.v": "3", "index public.j": "4"}
    assert compare(before, now) == (["table public.a"], ["index public.j"], ["index public.i"])


def test_a_fingerprint_of_the_first_layout_is_compared_without_the_kinds_it_lacks() -> None:
    old = {"table public.a": "1", "trigger public.a.t": "2"}
    now = {
        LAYOUT: "2",
        "table public.a": "1",
        "trigger public.a.t": "2",
        "disabled trigger public.a.t": "D",
        "column collation public.a.code": "pg_catalog.C",
    }
    assert compare(old, now) == ([], [], [])
    # what the first layout had is still compared
    assert compare(old, {**now, "trigger public.a.t": "3"}) == (["trigger public.a.t"], [], [])
    # against a fingerprint of this layout, they are objects like any other
    assert compare({**old, LAYOUT: "2"}, now) == (
        [],
        ["column collation public.a.code", "disabled trigger public.a.t"],
        [],
    )

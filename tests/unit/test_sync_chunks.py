"""Pure pieces of the chunked comparison: ranges, classification, checksums."""

from __future__ import annotations

import uuid
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from pgferry.sync.chunks import KeyDiff, KeyRange, Sums, classify, split, table_checksum


def test_split_covers_the_range_with_consecutive_pieces() -> None:
    pieces = split(KeyRange(), [(10,), (20,)])
    assert pieces == [KeyRange(None, (10,)), KeyRange((10,), (20,)), KeyRange((20,), None)]
    assert split(KeyRange((1,), (5,)), []) == [KeyRange((1,), (5,))]
    assert KeyRange().whole and not pieces[1].whole


@given(st.lists(st.integers(), unique=True).map(sorted))
def test_split_pieces_chain(bounds: list[int]) -> None:
    pieces = split(KeyRange(), [(b,) for b in bounds])
    assert len(pieces) == len(bounds) + 1
    assert pieces[0].lo is None and pieces[-1].hi is None
    assert all(a.hi == b.lo for a, b in zip(pieces, pieces[1:], strict=False))


def test_classify_sorts_keys_into_kinds_in_source_order() -> None:
    src = [((1,), 11), ((2,), 22), ((3,), 33), ((5,), 55)]
    tgt = {(2,): 22, (3,): 99, (4,): 44, (1,): 11}
    leaf = classify(src, tgt)
    assert leaf.matched == 2
    assert leaf.diffs == [
        KeyDiff("differing", (3,)),
        KeyDiff("only_in_source", (5,)),
        KeyDiff("only_in_target", (4,)),
    ]
    assert leaf.count("differing") == leaf.count("only_in_target") == 1


@given(
    st.dictionaries(st.integers(0, 50), st.integers(0, 3)),
    st.dictionaries(st.integers(0, 50), st.integers(0, 3)),
)
def test_classify_counts_add_up(a: dict[int, int], b: dict[int, int]) -> None:
    leaf = classify([((k,), h) for k, h in sorted(a.items())], {(k,): h for k, h in b.items()})
    assert leaf.matched + leaf.count("differing") + leaf.count("only_in_source") == len(a)
    assert leaf.matched + leaf.count("differing") + leaf.count("only_in_target") == len(b)
    assert leaf.matched == sum(1 for k, h in a.items() if b.get(k) == h)


def test_table_checksum_is_count_and_xor_of_hashes() -> None:
    assert table_checksum(Sums()) == "0:0000000000000000"
    assert table_checksum(Sums(2, -1)) == "2:ffffffffffffffff"
    assert (Sums(1, 6) + Sums(1, 3)).hash == 5
    assert table_checksum(Sums(1, 5) + Sums(2, 2**64 + 1)) == "3:0000000000000004"


def test_key_diff_as_json() -> None:
    u = uuid.UUID(int=5)
    d = KeyDiff("only_in_target", (7, u, Decimal("1.50"), "x", None))
    assert d.to_dict(["a", "b", "c", "d", "e"]) == {
        "kind": "only_in_target",
        "key": {"a": 7, "b": str(u), "c": "1.50", "d": "x", "e": None},
    }

"""Pure pieces of the chunked comparison: ranges, classification, checksums."""

from __future__ import annotations

import uuid
from array import array
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from pgferry.sync.chunks import (
    ROWS_PER_SUB,
    KeyDiff,
    KeyRange,
    Signature,
    Sums,
    classify,
    differing_subs,
    split,
    sub_bits,
    sub_bitset,
    table_checksum,
)


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


def _sig(buckets: dict[int, int]) -> Signature:
    return Signature(len(buckets), 0, array("h", buckets), array("q", buckets.values()))


def test_sub_bits_aim_at_a_few_rows_a_bucket() -> None:
    assert sub_bits(0) == sub_bits(ROWS_PER_SUB - 1) == 0
    for rows in (ROWS_PER_SUB, 400, 20_000, 50_000):
        per = rows / (1 << sub_bits(rows))
        assert ROWS_PER_SUB / 2 <= per <= ROWS_PER_SUB
    assert sub_bits(10**9) == 15  # sub-bucket numbers travel as int2


@given(
    st.dictionaries(st.integers(0, 300), st.integers(-(2**63), 2**63 - 1)),
    st.dictionaries(st.integers(0, 300), st.integers(-(2**63), 2**63 - 1)),
    st.booleans(),
)
def test_differing_subs_are_the_buckets_whose_xor_differs(
    a: dict[int, int], b: dict[int, int], same_buckets: bool
) -> None:
    if same_buckets:  # the common case: the same buckets, listed in the same order
        b = {s: b.get(s, x) for s, x in a.items()}
    want = sorted(s for s in a.keys() | b.keys() if a.get(s) != b.get(s))
    assert differing_subs(_sig(a), _sig(b)) == want
    assert differing_subs(None, _sig(b)) == sorted(b)
    assert differing_subs(_sig(a), None) == sorted(a)


def test_sub_bitset_sets_the_bits_get_bit_reads() -> None:
    # get_bit(bytes, n) reads bit n % 8 (least significant first) of byte n / 8
    bits = sub_bitset({0: [0, 9], 2: [3, 15]}, 4, 3)
    assert len(bits) == 6  # 3 pieces of 16 sub-buckets
    on = {n for n in range(len(bits) * 8) if bits[n >> 3] >> (n & 7) & 1}
    assert on == {0, 9, 32 + 3, 32 + 15}
    assert sub_bitset({}, 0, 1) == b"\x00"

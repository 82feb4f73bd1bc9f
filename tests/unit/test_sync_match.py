"""packed.match: the keys found on both sides, whatever their order and however they fold.

Invariant: ``ka[ia] == kb[ib]`` pairwise, and the pairs are exactly the keys the two
sides share (each once). Keys come in order, about in order (a few moved) or in no
order; keys of bytes also with folds made to collide (a fold of few values), which must
fall back to matching the bytes themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgferry.sync import packed

INT64 = st.integers(-(2**63), 2**63 - 1)


def _arrange(keys: list[Any], how: str, seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    keys = sorted(keys)
    if how == "shuffled":
        rng.shuffle(keys)
    elif how == "nearly" and len(keys) > 2:
        for _ in range(max(1, len(keys) // 20)):  # a few keys moved to the end
            keys.append(keys.pop(int(rng.integers(0, len(keys)))))
    return keys


def _check(ka: Any, kb: Any) -> None:
    ia, ib = packed.match(ka, kb)
    assert len(ia) == len(ib)
    assert bool((ka[ia] == kb[ib]).all())
    assert sorted(ka[ia].tolist()) == sorted(set(ka.tolist()) & set(kb.tolist()))


ORDERS = st.sampled_from(["sorted", "nearly", "shuffled"])


@settings(max_examples=300, deadline=None)
@given(
    shared=st.sets(INT64, max_size=60),
    only_a=st.sets(INT64, max_size=30),
    only_b=st.sets(INT64, max_size=30),
    how=st.tuples(ORDERS, ORDERS),
    seed=st.integers(0, 2**32 - 1),
)
def test_integer_keys_match_in_any_order(
    shared: set[int], only_a: set[int], only_b: set[int], how: tuple[str, str], seed: int
) -> None:
    a = shared | only_a
    b = shared | (only_b - only_a)
    ka = np.array(_arrange(list(a), how[0], seed), dtype=np.int64)
    kb = np.array(_arrange(list(b), how[1], seed + 1), dtype=np.int64)
    _check(ka, kb)


KEY16 = st.binary(min_size=16, max_size=16)


@pytest.mark.parametrize("fold", ["real", "few", "one"])
@settings(max_examples=150, deadline=None)
@given(
    shared=st.sets(KEY16, max_size=40),
    only_a=st.sets(KEY16, max_size=20),
    only_b=st.sets(KEY16, max_size=20),
    how=st.tuples(ORDERS, ORDERS),
    seed=st.integers(0, 2**32 - 1),
)
def test_byte_keys_match_even_when_folds_collide(
    fold: str,
    shared: set[bytes],
    only_a: set[bytes],
    only_b: set[bytes],
    how: tuple[str, str],
    seed: int,
) -> None:
    real = packed._fold
    folds = {
        "real": real,
        # three values: most keys fold alike, on one side and across
        "few": lambda k: real(k) % 3,
        # every key folds alike: a side of one key is in order
        "one": lambda k: np.zeros(len(k), dtype=np.int64),
    }
    a = shared | only_a
    b = shared | (only_b - only_a)
    ka = np.array(_arrange(list(a), how[0], seed), dtype="S16")
    kb = np.array(_arrange(list(b), how[1], seed + 1), dtype="S16")
    packed._fold = folds[fold]
    try:
        _check(ka, kb)
    finally:
        packed._fold = real

"""``--json`` output: numbers stay numbers, whatever type computed them."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np

from pgferry.cli.common import dumps


def test_numpy_counts_are_written_as_numbers_not_text() -> None:
    # a count that came from numpy was written as "99" (the text of an unknown object)
    got = json.loads(dumps({"unchanged": np.int64(99), "ratio": np.float64(0.5), "n": 3}))
    assert got == {"unchanged": 99, "ratio": 0.5, "n": 3}
    assert type(got["unchanged"]) is int


def test_decimals_keep_their_digits_as_text() -> None:
    # numeric values keep every digit (a float would round them)
    assert json.loads(dumps({"v": Decimal("0.10000000000000000001")})) == {
        "v": "0.10000000000000000001"
    }

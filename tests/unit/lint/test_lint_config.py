"""lint's start-up check of [lint] agrees with the config's pydantic model: what the quick
check accepts, LintConfig accepts, with the same settings; anything else goes to the model."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pgferry.config import LintConfig
from pgferry.lint.engine import Settings
from pgferry.lint.service import LINT_KEYS, plain_lint

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 200_000),
    st.floats(0, 10),
    st.sampled_from(["error", "warning", "x", "ban-char-field"]),
)
_VALUES = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=3),
    st.dictionaries(st.sampled_from(["PF001", "ban-char-field"]), _SCALARS, max_size=2),
)
_TABLES = st.dictionaries(st.sampled_from(sorted(LINT_KEYS | {"other"})), _VALUES, max_size=4)


def test_the_quick_check_knows_every_field_of_the_model() -> None:
    assert set(LintConfig.model_fields) == LINT_KEYS


@settings(max_examples=400)
@given(_TABLES)
def test_what_the_quick_check_accepts_the_model_accepts_the_same(table: dict[str, Any]) -> None:
    quick = plain_lint(table)
    if quick is not None:
        assert Settings.from_config(LintConfig.model_validate(table)) == quick


def test_plain_tables_take_the_quick_path() -> None:
    table = {
        "disable": ["ban-char-field"],
        "severity": {"PF001": "warning"},
        "pg_version": 15,
        "big_table_rows": 10,
    }
    assert plain_lint(table) == Settings.from_config(LintConfig.model_validate(table))
    assert plain_lint({"pg_version": True}) is None  # the model turns it into 1: its call
    assert plain_lint({"disable": [1]}) is None

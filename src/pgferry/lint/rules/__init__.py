"""Every lint rule, one small class each; :data:`ALL_RULES` in documentation order."""

from __future__ import annotations

from pgferry.lint.model import Rule
from pgferry.lint.rules import columns, constraints, datatypes, indexes, misc, objects, transactions

ALL_RULES: list[type[Rule]] = [
    *columns.RULES,
    *datatypes.RULES,
    *constraints.RULES,
    *indexes.RULES,
    *objects.RULES,
    *transactions.RULES,
    *misc.RULES,
]

"""The sync plan: which tables, which columns, in which order, with which strategy.

Contract: :func:`build_plan` takes the catalogs of both sides
(:func:`pgferry.pg.catalog.tables`), the ``[sync]`` config and the command
line selection, and returns a :class:`SyncPlan`: one :class:`TablePlan` per
selected table in foreign-key order (parents first; deletes run in reverse).
It is pure: no connection, no clock. Problems with the *selection* (an
unknown table, a key column that does not exist) raise
:class:`~pgferry.errors.BadInput` (exit 2) before anything is written; problems
with *one table* (a target NOT NULL column the source lacks, a non-deferrable
FK cycle, no key outside full mode, a name containing ``%``) set
:attr:`TablePlan.error` so that table is stopped with a clear message while the others go ahead.

- :mod:`~pgferry.sync.plan.model`: :class:`SyncPlan` and :class:`TablePlan`.
- :mod:`~pgferry.sync.plan.selection`: which tables (the selection rules).
- :mod:`~pgferry.sync.plan.order`: foreign-key order and cycles.
- :mod:`~pgferry.sync.plan.build`: :func:`build_plan` (the columns, the strategy).

Every module here is pure in the same way (an import-linter contract and a test hold
them to it). The names below are what the rest of pgferry imports from here.
"""

from pgferry.sync.plan.build import build_plan
from pgferry.sync.plan.model import Mode, Strategy, SyncPlan, TablePlan
from pgferry.sync.plan.selection import check_schemas

__all__ = ["Mode", "Strategy", "SyncPlan", "TablePlan", "build_plan", "check_schemas"]

"""Foreign-key order: :func:`fk_order`, parents first, and the FK cycles.

Contract: takes the :class:`~pgferry.sync.plan.model.TablePlan` of each selected table
(its ``parents``) and returns every table name, parents first, with each FK cycle placed
as one group after everything it references; ties go by name, so the order never
depends on dict order.
"""

from __future__ import annotations

import heapq
from graphlib import CycleError, TopologicalSorter

from pgferry.sync.plan.model import TablePlan


def fk_order(plans: dict[str, TablePlan]) -> tuple[list[str], list[list[str]]]:
    """Parents first, and the FK cycles found (each sorted by name).

    :class:`graphlib.TopologicalSorter` orders the tables; a cycle it reports is merged
    into one node, until none is left, so each cycle ends up as one group (its strongly
    connected component) placed after everything it references. Of the tables whose
    parents are all placed, the first by name comes next (the order does not depend on
    dict order).
    """
    group = {qn: qn for qn in plans}  # table -> the name its merged group goes by

    def find(qn: str) -> str:
        while group[qn] != qn:
            group[qn] = group[group[qn]]
            qn = group[qn]
        return qn

    while True:
        graph: dict[str, set[str]] = {find(qn): set() for qn in plans}
        for qn, t in plans.items():
            g = find(qn)
            graph[g] |= {find(p) for p in t.parents if p in plans and find(p) != g}
        sorter = TopologicalSorter(graph)
        try:
            sorter.prepare()
        except CycleError as e:
            cycle = [find(qn) for qn in e.args[1]]
            for g in cycle[1:]:
                group[g] = cycle[0]
            continue
        break
    members: dict[str, list[str]] = {}
    for qn in sorted(plans):
        members.setdefault(find(qn), []).append(qn)
    order: list[str] = []
    cycles: list[list[str]] = []
    ready: list[tuple[str, str]] = []  # (first name of the group, group), smallest first
    while sorter.is_active():
        for g in sorter.get_ready():
            heapq.heappush(ready, (members[g][0], g))
        _, g = heapq.heappop(ready)
        order += members[g]
        if len(members[g]) > 1:
            cycles.append(members[g])
        sorter.done(g)
    return order, cycles

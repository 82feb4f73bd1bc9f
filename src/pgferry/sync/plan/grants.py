"""What the target role may do to a table beyond writing its rows (pure).

Contract: :func:`check` adds to a :class:`~pgferry.sync.plan.model.TablePlan` what its
target role's grants mean for it. On a hosted database the migrations often run as the
owner, and the role that syncs is granted ``SELECT, INSERT, UPDATE, DELETE`` and
``USAGE`` on the sequences, as an application is. Such a role loads an empty table with
a plain ``COPY`` and its indexes in place (the plan's ``block_readers`` and
``defer_indexes`` follow ``Table.may_truncate`` and ``Table.owned``); this module says
what it cannot do at all: move a sequence it may not set (a warning: whether it has to
move depends on the rows), disable triggers of a table it does not own (the table stops).
"""

from __future__ import annotations

from pgferry.pg.catalog_types import Table
from pgferry.sync.plan.model import Mode, TablePlan


def check(t: TablePlan, tgt: Table, mode: Mode, role: str) -> None:
    """Warn of sequences ``role`` may not set; stop ``t`` where it may not disable triggers."""
    if mode == "verify":
        return
    fixed = sorted(set(t.sequences.values()) & tgt.unsettable_sequences)
    if fixed:
        t.warnings.append(
            f"the target role may not move {', '.join(fixed)} forward after the data (it "
            f"needs UPDATE on {'them' if len(fixed) > 1 else 'it'}): should the synced "
            "rows go past its value, the run fails after the data, and the application's "
            "next insert would take a key a synced row holds; GRANT UPDATE ON SEQUENCE "
            f"{', '.join(fixed)} TO {role or 'the role'}, or sync as the table's owner"
        )
    if t.user_triggers and t.triggers == "disable" and not tgt.owned:
        t.error = t.error or (
            f'{t.qualname}: triggers = "disable" needs the table\'s owner ({tgt.owner}) to '
            f"disable its triggers ({', '.join(t.user_triggers)}), and the target role "
            f"{role} is not it nor a member of it: sync as {tgt.owner}, or drop "
            'triggers = "disable" (they then fire on the synced rows); nothing is written '
            "to this table"
        )

"""Which columns look personal, and the protected → unprotected masking gate.

Contract: :func:`personal_kind` classifies a column by its name (email, phone,
name, address, iban, birth) — names, not data, so nothing is read;
:func:`personal_columns_unmasked` lists the personal-looking columns no
``[sync.mask]`` rule covers; :func:`refuse_unmasked` raises
:class:`~pgferry.errors.Refused` (exit 4) for a sync from a protected to an
unprotected environment that would copy them, unless ``--no-mask --reason``;
:func:`unquoted` tells a server error of a masked table without the value it may
quote (the source stumbled on an unmasked value; the message goes to the terminal,
the report and the target's journal).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pgferry.errors import PgferryError, Refused
from pgferry.pg.catalog_types import Table
from pgferry.pg.errors import hide_values

if TYPE_CHECKING:
    from pgferry.sync.masking import MaskRules
    from pgferry.sync.plan import TablePlan

#: why a masked table's error leaves the server's words about a value out
HIDDEN = "the table has masked columns"


def unquoted(err: PgferryError, tables: Iterable[TablePlan]) -> PgferryError:
    """``err`` as it may be shown, when any of ``tables`` (those the failed work was for)
    has masked columns: without the values the server's message, DETAIL and HINT may
    quote (a masking rule that fails on one row quotes the unmasked value it read)."""
    return hide_values(err, HIDDEN) if any(t.masked for t in tables) else err


# Column names that look personal. Anchored at the end (email_verified is not an email).
_PERSONAL = [
    ("email", re.compile(r"(^|_)e_?mail(_?addr(ess)?)?(_\d+)?$")),
    (
        "phone",
        re.compile(
            r"(phone|mobile|msisdn|(^|_)fax|(^|_)tel(ephone)?)(_?(number|no|num))?"
            r"(_\d+)?$"
        ),
    ),
    (
        "name",
        re.compile(
            r"((^|_)(first|last|full|given|family|middle|maiden|nick|contact|"
            r"person|customer|client|display|legal|user)_?name|surname|forename)$"
        ),
    ),
    (
        "address",
        re.compile(
            r"(address|street|postcode|postal_?code|(^|_)zip(_?code)?)"
            r"(_?line)?(_?\d+)?$"
        ),
    ),
    (
        "iban",
        re.compile(
            r"(^|_)(iban|ssn|passport(_?(number|no))?|national_id|tax_id|"
            r"card_?number|account_?number)$"
        ),
    ),
    ("birth", re.compile(r"(birth|(^|_)dob$|birthday)")),
]
# a bare "name" column is personal only in tables that hold people
_PEOPLE = re.compile(
    r"(user|customer|person|people|contact|client|lead|employee|patient|"
    r"member|staff|author|applicant|candidate|subscriber|tenant|guest)s?$"
)


def personal_kind(table: str, column: str) -> str | None:
    """Which kind of personal data the column's name suggests (``email``, ...), or None."""
    name = column.lower()
    for kind, pat in _PERSONAL:
        if pat.search(name):
            return kind
    if name == "name" and _PEOPLE.search(table.lower()):
        return "name"
    return None


def personal_columns_unmasked(
    rules: MaskRules, tables: Iterable[Table] | Mapping[str, Table]
) -> list[str]:
    """``schema.table.column`` of every personal-looking column no rule covers, sorted."""
    ts = tables.values() if isinstance(tables, Mapping) else tables
    found = [
        f"{t.qualname}.{c.name}"
        for t in ts
        for c in t.columns
        if not c.generated
        and personal_kind(t.name, c.name)
        and rules.rule_for(t.qualname, c.name) is None
    ]
    return sorted(found)


def unmasked_message(columns: Sequence[str], source: str, target: str) -> str:
    """One sentence: what is refused and the two ways out."""
    shown = ", ".join(columns[:8]) + (f" and {len(columns) - 8} more" if len(columns) > 8 else "")
    example = columns[0] if columns else "public.users.email"
    return (
        f"refusing to copy personal-looking columns from protected {source!r} to unprotected "
        f"{target!r} without masking: {shown}; add rules under [sync.mask] "
        f'(e.g. "{example}" = "{_suggest(example)}") or pass --no-mask --reason TEXT'
    )


def _suggest(qualcol: str) -> str:
    schema, table, column = qualcol.split(".", 2)
    kind = personal_kind(table, column)
    return {"email": "email", "phone": "phone", "name": "name"}.get(kind or "", "redact")


def refuse_unmasked(
    rules: MaskRules,
    tables: Iterable[Table] | Mapping[str, Table],
    *,
    source: Any,
    target: Any,
    no_mask_reason: str | None = None,
) -> list[str]:
    """Refuse (exit 4) a protected → unprotected sync that would copy personal data unmasked.

    ``source``/``target`` are :class:`~pgferry.pg.connect.Target`. Returns the unmasked
    columns (empty when the policy does not apply) so the caller can record them, e.g.
    with ``--no-mask --reason`` in the journal.
    """
    if not (source.protected and not target.protected):
        return []
    cols = personal_columns_unmasked(rules, tables)
    if cols and not (no_mask_reason and no_mask_reason.strip()):
        raise Refused(unmasked_message(cols, source.name, target.name), columns=cols)
    return cols

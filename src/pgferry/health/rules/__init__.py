"""One rule per check: facts + thresholds + now → (status, value, threshold, message, fix).

Pure (no I/O, no clock). :data:`RULES` is the order ``pgferry health`` lists the
checks in; :func:`table_rows` judges one ``[health.tables]`` entry. Every message
says what is wrong in one sentence, and ``fix`` what to do about it.

- :mod:`~pgferry.health.rules.verdict`: what a rule returns, and the shared phrases.
- :mod:`~pgferry.health.rules.database`: the database server's own state.
- :mod:`~pgferry.health.rules.operations`: what pgferry records (migrations, drift,
  backups, restore tests, syncs, dead letters).
- :mod:`~pgferry.health.rules.tables`: ``[health.tables]`` row counts.
"""

from pgferry.health.rules.database import (
    blocked_sessions,
    connections,
    idle_in_transaction,
    invalid_indexes,
    long_transactions,
    reachability,
    replication_slots,
    sequences,
    slow_statements,
    tables_without_pk,
    wraparound,
    writable,
)
from pgferry.health.rules.operations import (
    backups,
    dead_letters,
    migrations,
    restore_test,
    schema_drift,
    sync,
)
from pgferry.health.rules.tables import table_rows, table_threshold
from pgferry.health.rules.verdict import Rule, Status, Verdict, fix_for_failure

__all__ = [
    "NOT_REACHED",
    "OFFLINE",
    "RULES",
    "Status",
    "Verdict",
    "fix_for_failure",
    "table_rows",
    "table_threshold",
]

NOT_REACHED = "not checked: the database did not answer"
#: checks whose facts come from disk, judged even when the database does not answer
OFFLINE = frozenset({"backups", "restore_test"})


RULES: list[tuple[str, Rule]] = [
    ("reachability", reachability),
    ("writable", writable),
    ("connections", connections),
    ("long_transactions", long_transactions),
    ("idle_in_transaction", idle_in_transaction),
    ("blocked_sessions", blocked_sessions),
    ("wraparound", wraparound),
    ("replication_slots", replication_slots),
    ("sequences", sequences),
    ("invalid_indexes", invalid_indexes),
    ("tables_without_pk", tables_without_pk),
    ("slow_statements", slow_statements),
    ("migrations", migrations),
    ("schema_drift", schema_drift),
    ("backups", backups),
    ("restore_test", restore_test),
    ("sync", sync),
    ("dead_letters", dead_letters),
]

"""migrate/locks.py: the advisory lock key is Flyway's, so the two tools exclude each other."""

from __future__ import annotations

from pgferry.migrate.locks import FLYWAY_LOCK_MAGIC, _java_hash, lock_key, work_app_name


def test_java_string_hash() -> None:
    # values of java.lang.String#hashCode
    assert _java_hash("") == 0
    assert _java_hash("hello") == 99162322
    assert _java_hash("Aa") == _java_hash("BB") == 2112
    assert _java_hash("polygenelubricants") == -2147483648


def test_lock_key_is_flywayish_and_per_table() -> None:
    assert FLYWAY_LOCK_MAGIC == int.from_bytes(b"Flyway", "big")
    k = lock_key("public", "flyway_schema_history")
    assert k == FLYWAY_LOCK_MAGIC + _java_hash('"public"."flyway_schema_history"')
    assert -(1 << 63) <= k < (1 << 63)
    assert lock_key("app", "flyway_schema_history") != k
    assert lock_key('we"ird', "t") == FLYWAY_LOCK_MAGIC + _java_hash('"we""ird"."t"')
    assert work_app_name(k).startswith("pgferry-migrate-work:") and len(work_app_name(k)) < 64


def test_blockers_in_words() -> None:
    from pgferry.migrate.locks import Waiting

    other = {
        "pid": 7,
        "application_name": "",
        "state": "",
        "query": "<insufficient privilege>",
        "user": "",
        "backend_type": "",
    }
    av = {
        "pid": 8,
        "application_name": "",
        "state": "",
        "query": "<insufficient privilege>",
        "user": "",
        "backend_type": "autovacuum worker",
    }
    mine = {
        "pid": 9,
        "application_name": "psql",
        "state": "idle in transaction",
        "query": "LOCK t",
        "user": "app",
        "backend_type": "client backend",
    }
    w = Waiting("t", "AccessExclusiveLock", "relation", [other, av, mine])
    assert w.describe() == (
        "AccessExclusiveLock on t, held by pid 7 (no application_name); pid 8, an autovacuum "
        "worker; pid 9 (psql, user app, idle in transaction, 'LOCK t')"
    )
    assert w.autovacuum and not Waiting("t", "x", "relation", [other]).autovacuum

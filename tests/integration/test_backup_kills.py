"""Backup operations killed half-way, on a real server: what is left must be what it was."""

from __future__ import annotations

import signal
from collections.abc import Callable

import psycopg
import pytest

from tests.helpers import Project, Result, q, run, sql, wait_for

GATED = """
CREATE TABLE big (id bigint PRIMARY KEY, note text);
INSERT INTO big SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 200000) g;
-- a row the restore loads waits on an advisory lock the test holds (a slow server)
CREATE FUNCTION gate(i bigint) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN IF i = 100 THEN PERFORM pg_advisory_xact_lock_shared(4242); END IF; RETURN true; END $$;
ALTER TABLE big ADD CHECK (gate(id));
"""


@pytest.mark.slow
def test_sigkill_during_a_tables_restore_leaves_the_tables_as_they_were(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    """pgferry feeds psql the rows through a pipe: killed half-way, psql read an end of
    input, and a --single-transaction psql commits at the end of its input, so the TRUNCATE
    and half of the rows were committed. The transaction must end only with its COMMIT."""
    dsn = bproj.dsns["prod"]
    sql(dsn, GATED)
    bid = run(cli, bproj, "backup", "create", "--env", "prod", "--json").json["id"]
    sql(dsn, "DELETE FROM big WHERE id > 1000")
    holder = psycopg.connect(dsn, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(4242)")
    p = bproj.popen("backup", "restore", bid, "--env", "prod", "--yes", "--tables", "public.big")
    try:
        wait_for(
            dsn,
            "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            alive=p,
            timeout=120,
            what="the restore's COPY waiting at the gate",
        )
        assert p.poll() is None
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    finally:
        holder.execute("SELECT pg_advisory_unlock(4242)")
        holder.close()
    wait_for(
        dsn,
        "SELECT count(*) = 0 FROM pg_stat_activity WHERE query LIKE 'COPY public.big%%'"
        " AND pid <> pg_backend_pid()",
        what="the restore's session to end",
    )
    assert q(dsn, "SELECT count(*), max(id) FROM big") == [(1000, 1000)]


@pytest.mark.slow
def test_prune_leaves_a_backup_a_restore_is_using(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    """An incident restore of an old backup (one retention expires) while the nightly prune
    runs: prune deleted the backup under the restore, the one that was needed."""
    dsn = bproj.dsns["prod"]
    old = run(cli, bproj, "backup", "create", "--env", "prod", "--json").json["id"]
    sql(dsn, "DELETE FROM orders WHERE id > 10")
    run(cli, bproj, "backup", "create", "--env", "prod")
    holder = psycopg.connect(dsn)
    holder.execute("LOCK TABLE orders IN ACCESS SHARE MODE")  # the restore's TRUNCATE waits
    p = bproj.popen("backup", "restore", old, "--env", "prod", "--yes", "--tables", "public.orders")
    try:
        wait_for(
            dsn,
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE 'TRUNCATE%%'",
            alive=p,
            what="the restore waiting to empty orders",
        )
        r = run(cli, bproj, "backup", "prune", "--env", "prod", "--json")
        assert r.code == 0 and old not in r.json["deleted"], r.out + r.err
    finally:
        holder.rollback()
        holder.close()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, out + err
    assert q(dsn, "SELECT count(*) FROM orders") == [(4000,)]
    r = run(cli, bproj, "backup", "prune", "--env", "prod", "--json")
    assert r.code == 0 and old in r.json["deleted"], r.out + r.err


@pytest.mark.slow
def test_a_killed_restore_of_an_encrypted_backup_leaves_no_plaintext_for_long(
    bproj: Project, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """restore decrypts into .decrypted-* under the backup root; a SIGKILL left that
    plaintext copy there for good. The next command that decrypts removes it."""
    bproj.config.write_text(bproj.config.read_text() + "\n[backup]\nencrypt = true\n")
    monkeypatch.setenv("PGFERRY_BACKUP_KEY", "s3cret-backup-key")
    dsn = bproj.dsns["prod"]
    bid = run(cli, bproj, "backup", "create", "--env", "prod", "--json").json["id"]
    holder = psycopg.connect(dsn)
    holder.execute("LOCK TABLE orders IN ACCESS SHARE MODE")  # the restore's DROP waits
    p = bproj.popen("backup", "restore", bid, "--env", "prod", "--yes")
    try:
        wait_for(
            dsn,
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND pid <> pg_backend_pid()",
            alive=p,
            what="the restore waiting on orders",
        )
        left = list((bproj.root / "backups").glob(".decrypted-*"))
        assert left
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    finally:
        holder.rollback()
        holder.close()
    assert all(d.exists() for d in left)
    r = run(cli, bproj, "backup", "verify", bid)
    assert r.code == 0, r.out + r.err
    assert not list((bproj.root / "backups").glob(".decrypted-*"))

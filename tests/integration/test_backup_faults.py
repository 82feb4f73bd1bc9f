"""Backup faults on a real server: SIGKILL, a flipped byte, a failing restore, a full or
read-only disk, no pg_dump new enough, a protected env, a blackout, a wrong key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from pgferry.backup.catalog import list_backups
from tests.helpers import Project, Result, q, run, sql, wait_for
from tests.helpers import backup as bh
from tests.helpers.backup import backed_up, fingerprint


def journal(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as c:
        return [
            (a, b) for a, b in c.execute("SELECT command, outcome FROM pgferry.journal ORDER BY id")
        ]


@pytest.mark.slow
def test_sigkill_during_create_leaves_nothing_usable_and_the_next_run_cleans_it(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    dsn = bproj.dsns["prod"]
    holder = psycopg.connect(dsn)
    holder.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")  # the dump waits on it
    p = bproj.popen("backup", "create", "--env", "prod")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            dirs = list(bh.backups_dir(bproj, "prod").glob("*/.in-progress"))
            if dirs and (dirs[0].parent / "dump").exists():
                break
            time.sleep(0.1)
        else:
            pytest.fail("the backup never started")
        blocked = (
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND %s = ANY(pg_blocking_pids(pid))"
        )
        holder_pid = holder.info.backend_pid
        wait_for(
            dsn, blocked, [holder_pid], alive=p, what="pg_dump waiting for the table it must read"
        )
        dump_pids = [r[0] for r in q(dsn, blocked, [holder_pid])]
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    finally:
        holder.rollback()
        holder.close()
    # pg_dump dies with its parent: once its session is gone nothing writes there any more
    wait_for(
        dsn,
        "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = ANY(%s)",
        [dump_pids],
        what="pg_dump's session to end",
    )
    killed = dirs[0].parent
    assert killed.is_dir() and not (killed / "manifest.json").exists()
    assert list_backups(bproj.root / "backups", "prod") == []
    r = run(cli, bproj, "backup", "list", "--env", "prod", "--all", "--json")
    assert [(b["id"], b["state"]) for b in r.json["backups"]] == [(killed.name, "interrupted")]
    assert r.json["freshness"]["stale"] is True
    r = run(cli, bproj, "backup", "verify", killed.name)
    assert r.code == 2 and "is not complete" in r.err
    r = run(cli, bproj, "backup", "create", "--env", "prod", "--json")
    assert r.code == 0, r.err
    assert r.json["cleaned"] == [killed.name] and not killed.exists()
    assert [i.id for i in list_backups(bproj.root / "backups", "prod")] == [r.json["id"]]


def test_a_flipped_byte_fails_verify_naming_the_file_and_restore_refuses(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    dsn = bproj.dsns["prod"]
    out = run(cli, bproj, "backup", "create", "--env", "prod", "--json").json
    d = Path(out["path"])
    data = max((d / "dump").glob("*.dat.gz"), key=lambda f: f.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    rel = f"dump/{data.name}"
    r = run(cli, bproj, "backup", "verify", out["id"], "--json")
    assert r.code == 1 and r.json["ok"] is False
    assert any(rel in p for p in r.json["problems"]), r.json["problems"]
    side = json.loads((d / "verification.json").read_text())
    assert side["verify_ok"] is False and rel in side["problems"][0]
    r = run(cli, bproj, "backup", "verify", out["id"])
    assert r.code == 1 and f"problem: file {rel} does not match its sha256" in r.out
    sql(dsn, "DELETE FROM orders WHERE id > 10")
    before = fingerprint(dsn)
    r = run(cli, bproj, "backup", "restore", out["id"], "--env", "prod", "--yes")
    assert r.code == 1 and rel in r.err and "nothing was restored" in r.err
    assert fingerprint(dsn) == before
    assert [i.id for i in list_backups(bproj.root / "backups", "prod")] == [out["id"]]
    assert journal(dsn) == [("backup create", "ok")]


def test_a_restore_that_fails_half_way_leaves_the_target_as_it_was(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    # after the backup: rows change, and a new table refers to orders, so dropping orders
    # (the restore's clean step, after it dropped other objects) fails
    dsn, bid, before = backed_up(
        cli,
        bproj,
        "DELETE FROM orders WHERE id > 3000; UPDATE customers SET name = 'changed';"
        "CREATE TABLE refunds (order_id bigint REFERENCES orders); INSERT INTO refunds VALUES (1)",
    )
    r = run(cli, bproj, "backup", "restore", bid, "--env", "prod", "--yes")
    assert r.code == 3, r.out + r.err
    assert "rolled back" in r.err and "emergency backup" in r.err
    assert fingerprint(dsn) == before
    emergency = [i for i in list_backups(bproj.root / "backups", "prod") if i.tag == "pre-restore"]
    assert len(emergency) == 1 and emergency[0].keep and emergency[0].id in r.err
    assert emergency[0].manifest and emergency[0].manifest.tables["public.orders"] == 3000
    assert journal(dsn)[-1] == ("backup restore", "failed")


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Callable[[Path, str], None]]:
    """Mount a small tmpfs (root only): a full or read-only disk for real."""
    done: list[Path] = []

    def do(where: Path, options: str) -> None:
        where.mkdir(parents=True, exist_ok=True)
        p = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if p.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({p.stderr.strip()}); needs root")
        done.append(where)

    yield do
    for where in done:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_is_exit_3_with_the_path_and_nothing_listed(
    bproj: Project, cli: Callable[..., Result], mount: Callable[[Path, str], None]
) -> None:
    sql(
        bproj.dsns["prod"],
        "INSERT INTO orders SELECT g, 1, 1, md5(g::text) ||"
        " md5((g*7)::text) FROM generate_series(10001, 40000) g",
    )
    mount(bproj.root / "backups", "size=160k")
    r = run(cli, bproj, "backup", "create", "--env", "prod")
    assert r.code == 3, r.out + r.err
    assert str(bproj.root / "backups" / "prod") in r.err and "space" in r.err
    assert list_backups(bproj.root / "backups", "prod", include_incomplete=True) == []
    assert journal(bproj.dsns["prod"]) == [("backup create", "failed")]


def test_a_read_only_backup_dir_is_exit_3_with_the_path(
    bproj: Project, cli: Callable[..., Result], mount: Callable[[Path, str], None]
) -> None:
    mount(bproj.root / "backups", "ro,size=1m")
    r = run(cli, bproj, "backup", "create", "--env", "prod")
    assert r.code == 3, r.out + r.err
    assert f"cannot write the backup at {bproj.root / 'backups' / 'prod'}" in r.err


def test_no_pg_dump_new_enough_is_exit_2_with_the_fix(
    bproj: Project, cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGFERRY_PG_BIN", str(tmp_path / "nowhere"))
    r = run(cli, bproj, "backup", "create", "--env", "prod")
    assert r.code == 2 and "no pg_dump found in $PGFERRY_PG_BIN" in r.err
    assert "install pg_dump 18 or newer" in r.err
    old = Path("/usr/lib/postgresql/15/bin")
    if not (old / "pg_dump").is_file():  # a stand-in that answers --version as pg_dump 15
        old = tmp_path / "old"
        old.mkdir()
        (old / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 15.8'\n")
        (old / "pg_dump").chmod(0o755)
    monkeypatch.setenv("PGFERRY_PG_BIN", str(old))
    r = run(cli, bproj, "backup", "create", "--env", "prod")
    assert r.code == 2, r.err
    assert (
        "pg_dump must be at least as new as the server (PostgreSQL 18) but only pg_dump 15" in r.err
        and "apt install postgresql-client-18" in r.err
    )
    assert list_backups(bproj.root / "backups", "prod", include_incomplete=True) == []


def test_restore_onto_protected_without_yes_is_refused_untouched(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    dsn, bid, before = backed_up(cli, bproj, "DELETE FROM orders")
    r = bproj.run("backup", "restore", bid, "--env", "prod")
    assert r.code == 4 and "protected" in r.err and "--yes" in r.err
    assert fingerprint(dsn) == before
    assert len(list_backups(bproj.root / "backups", "prod")) == 1  # no emergency backup
    # the refusal is journaled (as every refusal is where the journal exists); nothing ran
    assert journal(dsn) == [("backup create", "ok"), ("backup restore", "refused")]


def test_restore_in_a_blackout_window_is_refused_unless_overridden(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    bid = run(cli, bproj, "backup", "create", "--env", "prod", "--json").json["id"]
    bproj.config.write_text(
        bproj.config.read_text() + '\n[[blackout]]\nfrom = "2020-01-01"\n'
        'envs = ["prod"]\nreason = "freeze"\n'
    )
    r = run(cli, bproj, "backup", "restore", bid, "--env", "prod", "--yes")
    assert r.code == 4 and "blackout window" in r.err and "freeze" in r.err
    assert len(list_backups(bproj.root / "backups", "prod")) == 1
    r = run(
        cli,
        bproj,
        "backup",
        "restore",
        bid,
        "--env",
        "prod",
        "--yes",
        "--override-blackout",
        "--reason",
        "restore after the incident",
    )
    assert r.code == 0, r.err
    with psycopg.connect(bproj.dsns["prod"]) as c:
        rows = c.execute(
            "SELECT command, outcome, details->'blackout_override'->>'reason',"
            " details->>'reason' FROM pgferry.journal WHERE command IN "
            "('backup restore', 'blackout override') ORDER BY id"
        ).fetchall()
    assert rows == [
        ("backup restore", "refused", None, None),
        ("blackout override", "ok", None, "restore after the incident"),
        ("backup restore", "ok", "restore after the incident", None),
    ], rows


def test_restore_into_protected_prod_in_a_blackout_judges_the_window_before_yes(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    """backup restore's checks go in every writer's order (docs/backups.md, pgferry.policy):
    the window first, then --yes; a refusal by the window names --yes too when it is
    missing, and nobody is asked to confirm a restore the window refuses."""
    from pgferry.commands import backup as cmd
    from pgferry.config import load_config
    from pgferry.errors import Refused

    dsn, bid, before = backed_up(cli, bproj, "DELETE FROM orders")
    bproj.config.write_text(
        bproj.config.read_text() + '\n[[blackout]]\nfrom = "2020-01-01"\n'
        'envs = ["prod"]\nreason = "freeze"\n'
    )
    restore = ("backup", "restore", bid, "--env", "prod")
    # no --yes, in the window: refused by the window (exit 4), which says all it takes
    r = run(cli, bproj, *restore)
    assert r.code == 4 and "blackout window" in r.err and "freeze" in r.err, r.err
    assert "--override-blackout --reason" in r.err and "and --yes ('prod' is protected)" in r.err
    # migrate up and sync say the same, in the same order
    for other in (("migrate", "up", "--env", "prod"), ("sync", "dev", "prod")):
        o = run(cli, bproj, *other)
        assert o.code == 4 and "and --yes ('prod' is protected)" in o.err, o.err
    # --yes: still the window (exit 4), and nothing more to ask for
    r = run(cli, bproj, *restore, "--yes")
    assert r.code == 4 and "blackout window" in r.err and "--yes" not in r.err, r.err
    # the window overridden (with a reason), no --yes: now the protected environment (exit 4)
    r = run(cli, bproj, *restore, "--override-blackout", "--reason", "INC-9")
    assert r.code == 4 and "is protected" in r.err and "needs --yes" in r.err, r.err
    assert "blackout window" not in r.err
    # --into-new leaves prod's database alone: no --yes, but the window still refuses it
    r = run(cli, bproj, *restore, "--into-new", "bk_new_blackout")
    assert r.code == 4 and "blackout window" in r.err and "--yes" not in r.err, r.err
    # nothing was touched: no restore, no emergency backup, no new database
    assert fingerprint(dsn) == before
    assert len(list_backups(bproj.root / "backups", "prod")) == 1
    assert q(dsn, "SELECT 1 FROM pg_database WHERE datname = 'bk_new_blackout'") == []
    assert journal(dsn)[1:] == [
        ("backup restore", "refused"),
        ("migrate up", "refused"),
        ("sync", "refused"),
        ("backup restore", "refused"),
        ("backup restore", "refused"),
        ("backup restore", "refused"),
    ]  # an override is journaled only for a write that goes ahead: none here
    r = run(cli, bproj, "sync", "dev", "prod", "--override-blackout", "--reason", "INC-9")
    assert r.code == 4 and "needs --yes" in r.err, r.err
    assert journal(dsn)[-1] == ("sync", "refused")
    # at a terminal: the window refuses before any question; overridden, the question comes
    cfg = load_config(bproj.config)
    asked: list[str] = []

    def confirm(question: object) -> bool:
        asked.append(str(getattr(question, "prompt", "")))
        return False

    with pytest.raises(Refused, match="blackout window") as e:
        cmd.restore(cfg, cmd.RestoreOptions(bid, "prod"), confirm=confirm)
    assert e.value.exit_code == 4 and asked == []
    with pytest.raises(Refused, match="needs --yes"):
        cmd.restore(
            cfg,
            cmd.RestoreOptions(bid, "prod", override_blackout=True, reason="INC-9"),
            confirm=confirm,
        )
    assert asked == [f"prod is protected. restore backup {bid} into prod?"]
    assert fingerprint(dsn) == before


def test_encrypted_backups_round_trip_and_a_wrong_key_is_exit_2(
    bproj: Project, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    bproj.config.write_text(bproj.config.read_text() + "\n[backup]\nencrypt = true\n")
    monkeypatch.delenv("PGFERRY_BACKUP_KEY", raising=False)
    r = run(cli, bproj, "backup", "create", "--env", "prod")
    assert r.code == 2 and "PGFERRY_BACKUP_KEY is not set" in r.err
    monkeypatch.setenv("PGFERRY_BACKUP_KEY", "s3cret-backup-key")
    out = run(cli, bproj, "backup", "create", "--env", "prod", "--json").json
    d = Path(out["path"])
    assert out["manifest"]["encryption"]["scheme"] == "aes-256-gcm-stream-v1"
    toc = (d / "dump" / "toc.dat").read_bytes()
    assert toc.startswith(b"PGFENC1") and b"orders" not in toc
    assert "s3cret" not in (d / "manifest.json").read_text()
    assert not list(d.glob(".plain*"))
    r = run(cli, bproj, "backup", "verify", out["id"], "--restore-test", "--json")
    assert r.code == 0 and r.json["restore_test_ok"], r.out + r.err
    sql(bproj.dsns["prod"], "DELETE FROM orders")
    r = run(cli, bproj, "backup", "restore", out["id"], "--env", "prod", "--yes")
    assert r.code == 0, r.err
    assert bh.counts(bproj.dsns["prod"]) == bh.COUNTS
    assert not list((bproj.root / "backups").glob(".decrypted-*"))
    monkeypatch.setenv("PGFERRY_BACKUP_KEY", "another key")
    r = run(cli, bproj, "backup", "verify", out["id"])
    assert r.code == 2 and "is not the key backup" in r.err
    assert "s3cret" not in r.err and "another key" not in r.err
    assert os.environ["PGFERRY_BACKUP_KEY"] == "another key"


def test_restoring_a_table_others_refer_to_is_rolled_back_with_the_fix(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    dsn, bid, before = backed_up(cli, bproj, "DELETE FROM orders WHERE id > 10")
    r = run(
        cli,
        bproj,
        "backup",
        "restore",
        bid,
        "--env",
        "prod",
        "--yes",
        "--tables",
        "public.customers",
    )
    assert r.code == 3, r.out + r.err
    assert (
        "cannot truncate a table referenced in a foreign key constraint (list the tables "
        "that refer to it in --tables too, or use --into-new)" in r.err
    )
    assert "psql:" not in r.err and "ERROR:" not in r.err
    assert fingerprint(dsn) == before


def test_a_truncated_manifest_is_a_damaged_backup_not_an_interrupted_one(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    dsn = bproj.dsns["prod"]
    out = run(cli, bproj, "backup", "create", "--env", "prod", "--json").json
    manifest = Path(out["path"]) / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:200])
    r = run(cli, bproj, "backup", "verify", out["id"])
    assert r.code == 1 and "manifest.json" in r.err and "damaged" in r.err, r.out + r.err
    assert "interrupted" not in r.err
    sql(dsn, "DELETE FROM orders WHERE id > 10")
    before = fingerprint(dsn)
    r = run(cli, bproj, "backup", "restore", out["id"], "--env", "prod", "--yes")
    assert r.code == 1 and "manifest.json" in r.err, r.err
    assert "nothing was checked or restored" in r.err
    assert fingerprint(dsn) == before
    r = run(cli, bproj, "backup", "list", "--env", "prod", "--all", "--json")
    assert [b["state"] for b in r.json["backups"]] == ["damaged"], r.json
    run(cli, bproj, "backup", "prune", "--env", "prod")
    assert manifest.exists()  # a damaged backup is the operator's to look at, not deleted


def test_a_backup_found_damaged_is_no_longer_the_newest_restore_tested(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    """verify keeps the last restore test's result in the sidecar; a backup whose files no
    longer match must not go on counting as the restore-tested one (list, health)."""
    out = run(cli, bproj, "backup", "create", "--env", "prod", "--json").json
    r = run(cli, bproj, "backup", "verify", out["id"], "--restore-test")
    assert r.code == 0, r.out + r.err
    data = max((Path(out["path"]) / "dump").glob("*.dat.gz"), key=lambda f: f.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    assert run(cli, bproj, "backup", "verify", out["id"]).code == 1
    fresh = run(cli, bproj, "backup", "list", "--env", "prod", "--json").json["freshness"]
    assert fresh["newest_restore_tested"] is None, fresh
    r = run(cli, bproj, "health", "--env", "prod", "--json")
    checks = {c["name"]: c for c in r.json["checks"]}
    assert checks["restore_test"]["status"] != "optimal", checks["restore_test"]


def test_an_emergency_backup_that_fails_stops_the_restore(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    """The backup root read-only (a full or remounted disk): the emergency backup cannot be
    written, so the restore does not go ahead, and the message says so."""
    dsn, bid, before = backed_up(cli, bproj, "DELETE FROM orders WHERE id > 10")
    root = str(bproj.root / "backups")
    if subprocess.run(["mount", "--bind", root, root], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here; needs root")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", root], check=True)
        r = run(cli, bproj, "backup", "restore", bid, "--env", "prod", "--yes")
    finally:
        subprocess.run(["umount", root], check=False)
    assert r.code == 3, r.out + r.err
    assert "emergency backup" in r.err and "nothing was restored" in r.err, r.err
    assert fingerprint(dsn) == before
    assert journal(dsn)[-1] == ("backup create", "failed")


def test_a_verify_of_a_read_only_copy_reports_and_says_it_was_not_recorded(
    bproj: Project, cli: Callable[..., Result]
) -> None:
    """A read-only copy of the backups (a remounted disk, a restore-only host) can still be
    verified: the result is reported with its exit code, plus one sentence that it could not
    be recorded (no traceback); no sidecar or temp file appears, and the catalog keeps
    showing no verification."""
    dsn, bid, _ = backed_up(cli, bproj, "SELECT 1")
    root = bproj.root / "backups"
    d = root / "prod" / bid
    if subprocess.run(["mount", "--bind", str(root), str(root)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here; needs root")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(root)], check=True)
        r = run(cli, bproj, "backup", "verify", bid, "--env", "prod", "--json")
        human = run(cli, bproj, "backup", "verify", bid, "--env", "prod")
    finally:
        subprocess.run(["umount", str(root)], check=False)
    assert r.code == 0, r.out + r.err
    assert r.json["ok"] and r.json["files_checked"] > 0 and r.json["recorded"] is False
    [w] = r.json["warnings"]
    assert str(d / "verification.json") in w and "Read-only file system" in w, w
    assert human.code == 0 and "Traceback" not in human.err
    assert "warning: the result could not be recorded" in human.out, human.out
    assert not (d / "verification.json").exists()
    assert [p.name for p in d.iterdir() if p.name.startswith(".")] in ([], [".in-use"])
    [info] = list_backups(root, "prod")
    assert info.verification is not None and info.verification.verified_at is None
    # writable again: the same verify records its result
    r = run(cli, bproj, "backup", "verify", bid, "--env", "prod", "--json")
    assert r.code == 0 and r.json["recorded"] is True and r.json["warnings"] == []
    assert json.loads((d / "verification.json").read_text())["verify_ok"] is True


def test_a_json_write_that_fills_the_disk_leaves_no_temp_file(
    tmp_path: Path, mount: Callable[[Path, str], None]
) -> None:
    """A manifest or verification.json that does not fit raises, and leaves neither a
    half-written temp file nor the file itself (a leftover would count as an added file)."""
    from pgferry.backup.storage import write_json_atomic

    where = tmp_path / "full"
    mount(where, "size=16k")
    with pytest.raises(OSError, match="No space left"):
        write_json_atomic(where / "verification.json", {"problems": ["x" * 100] * 1000})
    assert list(where.iterdir()) == []

"""The command layer as a second front end would call it: typed options in, typed results
out, a confirmation callback instead of a prompt, typed progress events, nothing printed."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgferry.commands import backup as backup_cmd
from pgferry.commands import migrate_info, migrate_run
from pgferry.commands import sync as sync_cmd
from pgferry.commands.base import Question
from pgferry.config import load_config
from pgferry.errors import BadInput, Refused
from pgferry.events import Collector, Notice
from pgferry.migrate.events import MigrationFinished, MigrationStarted
from pgferry.sync.events import RunFinished, TableFinished
from tests.helpers import Project


def q(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as c:
        cur = c.execute(query)
        return cur.fetchall() if cur.description else []


def test_migrate_up_through_the_command_layer(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.write("V1__a.sql", "CREATE TABLE a (id int PRIMARY KEY);")
    project.write("V2__b.sql", "CREATE TABLE b (id int PRIMARY KEY);")
    cfg = load_config(project.config)
    asked: list[Question] = []

    def no(qn: Question) -> bool:
        asked.append(qn)
        return False

    with pytest.raises(Refused, match="protected: migrate up needs --yes"):
        migrate_run.up(cfg, migrate_run.RunOptions(env="prod"), confirm=no)
    assert [x.prompt for x in asked] == ["prod is protected. migrate up?"]
    got = Collector()
    res = migrate_run.up(
        cfg, migrate_run.RunOptions(env="prod"), confirm=lambda _: True, progress=got
    )
    assert isinstance(res, migrate_run.RunResult)
    assert (res.env, res.current_version, [x.script for x in res.applied]) == (
        "prod",
        "2",
        ["V1__a.sql", "V2__b.sql"],
    )
    assert res.to_dict()["applied"][0]["script"] == "V1__a.sql"
    started = got.of(MigrationStarted)
    assert [(e.label, e.index, e.total) for e in started] == [("V1 a", 1, 2), ("V2 b", 2, 2)]
    assert [e.mode for e in got.of(MigrationFinished)] == ["transaction", "transaction"]
    assert all(
        e.to_dict()["type"] in ("migration_started", "migration_finished") for e in got.events
    )
    journal = q(project.dsns["prod"], "SELECT command, outcome FROM pgferry.journal ORDER BY id")
    assert journal == [("migrate up", "ok")]  # the refusal came before any journal existed
    assert capsys.readouterr() == ("", "")  # a command prints nothing


def test_validate_and_repair_report_in_their_results(project: Project) -> None:
    project.write("V1__a.sql", "CREATE TABLE a (id int);")
    cfg = load_config(project.config)
    migrate_run.up(cfg, migrate_run.RunOptions(env="dev"))
    project.write("V1__a.sql", "CREATE TABLE a (id bigint);")
    v = migrate_info.validate(cfg, "dev")
    assert v.exit_code == 1 and "changed after it was applied" in v.problems[0]
    notes = Collector()
    with pytest.raises(Refused, match="rewrites the migration history of 'dev'"):
        migrate_info.repair(cfg, migrate_info.RewriteOptions("dev"), progress=notes)
    assert [e.message for e in notes.of(Notice)] == [
        f"will realign 1 V1__a.sql: checksum {v.status.rows[0].checksum} → "
        f"{v.status.ms.versioned[0].checksum}"
    ]
    r = migrate_info.repair(cfg, migrate_info.RewriteOptions("dev", yes=True))
    assert r.changed and r.to_dict()["realigned"][0]["script"] == "V1__a.sql"
    assert migrate_info.validate(cfg, "dev").exit_code == 0


def test_sync_checks_its_options_before_any_database(project: Project) -> None:
    cfg = load_config(project.config)
    with pytest.raises(BadInput, match="SOURCE and TARGET are the same environment"):
        sync_cmd.sync(cfg, sync_cmd.SyncOptions("dev", "dev"))
    with pytest.raises(BadInput, match="--no-mask needs --reason"):
        sync_cmd.sync(cfg, sync_cmd.SyncOptions("dev", "prod", no_mask=True))
    with pytest.raises(BadInput, match="--mode 'sideways'"):
        sync_cmd.sync(cfg, sync_cmd.SyncOptions("dev", "prod", mode="sideways"))


def test_sync_into_protected_shows_a_preview_to_confirm(project: Project) -> None:
    for dsn in project.dsns.values():
        q(dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    q(project.dsns["dev"], "INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    cfg = load_config(project.config)
    seen: list[Question] = []

    def look(qn: Question) -> bool:
        seen.append(qn)
        return bool(qn.preview.tables[0].would_insert == 2)

    got = Collector()
    res = sync_cmd.sync(cfg, sync_cmd.SyncOptions("dev", "prod"), confirm=look, progress=got)
    assert seen and seen[0].prompt.startswith("prod is protected. Apply these changes")
    assert res.exit_code == 0 and res.tables[0].inserted == 2
    assert [e.table for e in got.of(TableFinished)] == ["public.t"]
    assert got.of(RunFinished)[0].outcome == "ok"
    assert q(project.dsns["prod"], "SELECT count(*) FROM t") == [(2,)]


def test_backup_restore_asks_the_policy_first(project: Project) -> None:
    cfg = load_config(project.config)
    q(project.dsns["prod"], "CREATE TABLE t (id int PRIMARY KEY)")
    created = backup_cmd.create(cfg, backup_cmd.CreateOptions("prod"))
    with pytest.raises(Refused, match="protected: restore backup .* into prod needs --yes"):
        backup_cmd.restore(cfg, backup_cmd.RestoreOptions(created.manifest.id, "prod"))
    assert q(project.dsns["prod"], "SELECT command, outcome FROM pgferry.journal ORDER BY id") == [
        ("backup create", "ok"),
        ("backup restore", "refused"),
    ]

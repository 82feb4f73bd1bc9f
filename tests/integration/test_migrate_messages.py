"""What `migrate up` says when the server refuses a file: the whole server message
(DETAIL and HINT, each on its own line), in text and in --json (issue 10 item 7)."""

from __future__ import annotations

from collections.abc import Callable

from tests.helpers import Project, Result

Cli = Callable[..., Result]

RAISE = (
    "DO $$ BEGIN RAISE EXCEPTION 'cannot go on' USING DETAIL = E'first line\\nsecond line',"
    " HINT = 'do this instead'; END $$;\n"
)


def test_detail_and_hint_each_on_its_own_line(project: Project, cli: Cli) -> None:
    project.write("V1__raise.sql", "CREATE TABLE t (id int);\n" + RAISE)
    r = cli("--config", str(project.config), "migrate", "up", "--json")
    assert r.code == 3
    lines = r.err.strip().splitlines()
    assert lines[0].startswith("error: V1__raise.sql:2 (statement 2): cannot go on; nothing")
    assert lines[1:] == ["DETAIL: first line", "second line", "HINT: do this instead"]
    err = r.json
    assert err["message"].endswith("\nDETAIL: first line\nsecond line\nHINT: do this instead")
    assert err["details"]["detail"] == "first line\nsecond line"
    assert err["details"]["hint"] == "do this instead"


def test_detail_and_hint_of_a_non_transactional_file(project: Project, cli: Cli) -> None:
    project.write("V1__t.sql", "CREATE TABLE t (id int);")
    project.write("V2__idx.sql", "CREATE INDEX CONCURRENTLY t_id ON t (id);\n" + RAISE)
    r = cli("--config", str(project.config), "migrate", "up")
    assert r.code == 3
    assert "\nDETAIL: first line\nsecond line\nHINT: do this instead" in r.err
    # the journal keeps them too
    r = cli("--config", str(project.config), "journal", "--json")
    failed = [e for e in r.json["entries"] if e["outcome"] == "failed"][0]
    assert failed["details"]["hint"] == "do this instead"


def test_a_password_in_a_migration_is_not_shown_by_its_preview(project: Project, cli: Cli) -> None:
    # CI logs keep what `migrate plan` and `up --dry-run` print, the admin service keeps a
    # run's plan: a role's password in a migration was in all of them
    project.write(
        "V1__roles.sql",
        "CREATE ROLE reporting LOGIN PASSWORD 'hunter2-secret';\n"
        "ALTER ROLE reporting WITH ENCRYPTED PASSWORD 'an''other-secret';\n",
    )
    cfg = ("--config", str(project.config))
    plan = cli(*cfg, "migrate", "plan", "--env", "dev")
    dry = cli(*cfg, "migrate", "up", "--env", "dev", "--dry-run")
    js = cli(*cfg, "--json", "migrate", "plan", "--env", "dev")
    for r in (plan, dry, js):
        assert r.code == 0, r.out + r.err
        assert "secret" not in r.out + r.err, r.out
    assert "CREATE ROLE reporting LOGIN PASSWORD '***';" in plan.out
    assert [s["sql"] for s in js.json["steps"][0]["statements"]] == [
        "CREATE ROLE reporting LOGIN PASSWORD '***'",
        "ALTER ROLE reporting WITH ENCRYPTED PASSWORD '***'",
    ]

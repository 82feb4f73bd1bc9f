"""The example project (examples/legal-platform): its migrations apply as a non-superuser
owner, its pgferry.sum is current, and the lead module's row-level security fails closed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pgferry.config import load_config
from pgferry.migrate import files
from pgferry.pg import embedded
from tests.helpers import Result

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "legal-platform"
APP_ROLE = "lead_app_test"


def test_example_config_and_files() -> None:
    cfg = load_config(EXAMPLE / "pgferry.toml")
    assert set(cfg.environments) == {"dev", "prod"}
    assert cfg.environments["prod"].protected and not cfg.environments["dev"].protected
    assert all(e.url is None for e in cfg.environments.values())  # embedded server
    ms = files.scan(cfg.migrations_dir)
    assert files.sum_state(ms) == "ok", "run `pgferry migrate sum` in examples/legal-platform"
    assert [str(m.version) for m in ms.versioned] == [str(i) for i in range(1, 13)]
    assert [m.script for m in ms.repeatable] == ["R__lead_overview.sql"]
    assert list(ms.undo) == [files.Version("12")]
    assert not ms.templates and not ms.ignored


@pytest.fixture
def app_role(pg_admin_dsn: str) -> Iterator[str]:
    """A login role that does not own the tables, as the application would use (fixture:
    only the superuser may create roles)."""
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        embedded.ensure_role(c, APP_ROLE)
    yield APP_ROLE


def apply_example(dsn: str) -> None:
    ms = files.scan(EXAMPLE / "migrations")
    with psycopg.connect(dsn, autocommit=True) as c:
        for m in [*ms.versioned, *ms.repeatable]:
            c.execute(m.sql)


def test_lead_rls_fails_closed_for_the_app_role(db: str, app_role: str) -> None:
    apply_example(db)  # as pgferry_test: owner, not superuser
    app = sql.Identifier(app_role)
    with psycopg.connect(db, autocommit=True) as owner:
        owner.execute(
            sql.SQL(
                "GRANT SELECT, INSERT, UPDATE ON leads, user_lead_assignments, lead_access_audit,"
                " lead_overview, legal_cases TO {0};"
                " GRANT EXECUTE ON FUNCTION can_edit_lead(bigint) TO {0}"
            ).format(app)
        )
        owner.execute("INSERT INTO data_sources (name, kind) VALUES ('EU court registry', 'court')")
        owner.execute(
            "INSERT INTO legal_cases (source_id, case_number, title, jurisdiction)"
            " VALUES (1, 'C-1/26', 'Acme v. Regulator', 'EU')"
        )
        owner.execute(
            "INSERT INTO leads (case_id, territory, company) VALUES"
            " (1, 'north', 'Acme'), (1, 'north', 'Globex'), (NULL, 'south', 'Initech')"
        )
        owner.execute(
            "INSERT INTO user_lead_assignments (lead_id, territory, user_name, can_edit)"
            " VALUES (1, 'north', 'alice', true), (2, 'north', 'bob', false)"
        )
        # the owner is exempt (ENABLE, not FORCE): migrations, sync and pg_dump see all rows
        assert owner.execute("SELECT count(*) FROM leads").fetchone() == (3,)
        volatility = owner.execute(
            "SELECT provolatile, prosecdef FROM pg_proc WHERE proname = 'can_edit_lead'"
        ).fetchone()
        assert volatility == ("s", True)  # STABLE, SECURITY DEFINER
        forced = owner.execute(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class"
            " WHERE relname IN ('leads', 'user_lead_assignments', 'lead_access_audit')"
            " ORDER BY relname"
        ).fetchall()
        assert forced == [
            ("lead_access_audit", True, False),
            ("leads", True, False),
            ("user_lead_assignments", True, False),
        ]

    app_dsn = embedded.role_dsn(db, app_role, str(psycopg.conninfo.conninfo_to_dict(db)["dbname"]))
    with psycopg.connect(app_dsn, autocommit=True) as c:
        assert c.execute("SELECT current_user").fetchone() == (app_role,)
        # app.territory never set: NULL, no rows anywhere (fail-closed)
        assert c.execute("SELECT current_setting('app.territory', true)").fetchone() == (None,)
        assert c.execute("SELECT count(*) FROM leads").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM lead_overview").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM user_lead_assignments").fetchone() == (0,)

        c.execute("SET app.territory = 'north'")
        assert c.execute("SELECT company FROM leads ORDER BY id").fetchall() == [
            ("Acme",),
            ("Globex",),
        ]
        assert c.execute(
            "SELECT company, case_number, assignees FROM lead_overview ORDER BY id"
        ).fetchall() == [("Acme", "C-1/26", 1), ("Globex", "C-1/26", 1)]
        # edits need an assignment with can_edit for app.user_name
        assert c.execute("UPDATE leads SET status = 'contacted'").rowcount == 0
        c.execute("SET app.user_name = 'alice'")
        assert c.execute("UPDATE leads SET status = 'contacted'").rowcount == 1
        c.execute("SET app.user_name = 'bob'")
        assert c.execute("UPDATE leads SET status = 'won' WHERE id = 2").rowcount == 0
        # writing into another territory is refused
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("INSERT INTO leads (territory, company) VALUES ('south', 'Evil')")
        c.execute(
            "INSERT INTO lead_access_audit (lead_id, territory, user_name, action)"
            " VALUES (1, 'north', 'bob', 'view')"
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute(
                "INSERT INTO lead_access_audit (lead_id, territory, user_name, action)"
                " VALUES (3, 'south', 'bob', 'view')"
            )

        # a setting reset to the empty string (after SET LOCAL, RESET) still sees nothing
        c.execute("RESET app.territory")
        assert c.execute("SELECT current_setting('app.territory', true)").fetchone() == ("",)
        assert c.execute("SELECT count(*) FROM leads").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM lead_access_audit").fetchone() == (0,)


def test_undo_file_reverses_v12(db: str) -> None:
    apply_example(db)
    ms = files.scan(EXAMPLE / "migrations")
    with psycopg.connect(db, autocommit=True) as c:
        c.execute(ms.undo[files.Version("12")].sql)
        cols = {
            r[0]
            for r in c.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'leads'"
            )
        }
        assert "priority" not in cols
        # the repeatable view does not depend on the column, so it survives the undo
        assert c.execute("SELECT count(*) FROM lead_overview").fetchone() == (0,)


def test_example_migrations_pass_the_zero_downtime_linter(cli: Callable[..., Result]) -> None:
    r = cli("--config", str(EXAMPLE / "pgferry.toml"), "lint", "--json")
    assert r.code == 0, r.out + r.err
    assert r.json["summary"]["errors"] == 0 and r.json["findings"] == [], r.json["findings"]

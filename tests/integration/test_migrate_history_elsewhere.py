"""A history table of the configured name that exists only in another schema (Flyway run
with another default schema) stops ``up``: it would otherwise apply every file again on a
database that already has them, starting a second, empty history."""

from __future__ import annotations

import psycopg

from pgferry.migrate import history
from tests.helpers import Project, q


def test_up_refuses_when_the_history_is_in_another_schema(project: Project) -> None:
    dev = project.dsns["dev"]
    project.write(
        "V1__seed.sql",
        "CREATE TABLE IF NOT EXISTS plans (name text);\nINSERT INTO plans VALUES ('pro');\n",
    )
    # what Flyway with defaultSchema=app left: V1 applied, history in app
    with psycopg.connect(dev, autocommit=True) as c:
        c.execute("CREATE TABLE plans (name text); INSERT INTO plans VALUES ('pro')")
        with c.transaction():
            history.ensure_table(c, "app", "flyway_schema_history")
            history.insert(
                c,
                "app",
                "flyway_schema_history",
                version="1",
                description="seed",
                type="SQL",
                script="V1__seed.sql",
                checksum=0,
                installed_by="flyway",
                execution_time=1,
                success=True,
            )
    v = project.run("migrate", "validate", "-e", "dev")
    assert v.code == 1, v.out + v.err
    assert "but app.flyway_schema_history exists" in v.out + v.err
    r = project.run("migrate", "up", "-e", "dev")
    assert r.code == 2, r.err
    assert "but app.flyway_schema_history exists" in r.err and "[migrate] schema" in r.err
    assert q(dev, "SELECT count(*) FROM plans") == [(1,)]
    assert q(dev, "SELECT to_regclass('public.flyway_schema_history')") == [(None,)]


def test_another_applications_history_elsewhere_is_passed_by_a_baseline_at_0(
    project: Project,
) -> None:
    dev = project.dsns["dev"]
    project.write("V1__mine.sql", "CREATE TABLE mine (id bigint);\n")
    with psycopg.connect(dev, autocommit=True) as c, c.transaction():
        history.ensure_table(c, "other_app", "flyway_schema_history")
    assert project.run("migrate", "up", "-e", "dev").code == 2
    r = project.run("migrate", "baseline", "-e", "dev", "--version", "0")
    assert r.code == 0, r.err
    r = project.run("migrate", "up", "-e", "dev")
    assert r.code == 0, r.err
    assert q(dev, "SELECT to_regclass('public.mine') IS NOT NULL") == [(True,)]

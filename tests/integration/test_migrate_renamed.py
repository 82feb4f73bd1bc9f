"""An applied file renamed afterwards (same version and content, another description) is
changed, as Flyway's validate reports it ("Migration description mismatch"): pgferry's
validate said ok, and Flyway's then failed on the same database."""

from __future__ import annotations

from tests.helpers import Project, q


def test_renamed_applied_file_is_a_problem_until_repaired(project: Project) -> None:
    dev = project.dsns["dev"]
    f = project.write("V1__create_users.sql", "CREATE TABLE users (id bigint);\n")
    assert project.run("migrate", "up", "-e", "dev").code == 0
    f.rename(project.migrations / "V1__create_accounts.sql")
    v = project.run("migrate", "validate", "-e", "dev")
    assert v.code == 1, v.out + v.err
    assert "description 'create users' in history, 'create accounts' on disk" in v.out + v.err
    r = project.run("migrate", "up", "-e", "dev")
    assert r.code == 4, r.err
    r = project.run("migrate", "repair", "-e", "dev", "--yes")
    assert r.code == 0, r.err
    assert q(dev, "SELECT description FROM flyway_schema_history") == [("create accounts",)]
    assert project.run("migrate", "validate", "-e", "dev").code == 0

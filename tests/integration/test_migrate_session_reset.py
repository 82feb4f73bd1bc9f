"""Each file starts from the same session: what a file SETs for its session does not leak
into the files after it in the same run (it would not reach them in a later run), as
Flyway restores the connection after each migration."""

from __future__ import annotations

from tests.helpers import Project, q


def test_search_path_set_by_a_file_does_not_move_the_next_files_objects(
    project: Project,
) -> None:
    dev, prod = project.dsns["dev"], project.dsns["prod"]
    project.write(
        "V1__audit.sql",
        "CREATE SCHEMA audit;\nSET search_path TO audit;\nCREATE TABLE log (id bigint);\n",
    )
    project.write("V2__users.sql", "CREATE TABLE users (id bigint);\n")
    # dev gets the files one run at a time, prod in one run: both must end the same
    assert project.run("migrate", "up", "-e", "dev", "--target", "1").code == 0
    assert project.run("migrate", "up", "-e", "dev").code == 0
    r = project.run("migrate", "up", "-e", "prod", "--yes")
    assert r.code == 0, r.err
    where = "SELECT to_regclass('audit.log') IS NOT NULL, to_regclass('public.users') IS NOT NULL"
    assert q(dev, where) == [(True, True)]
    assert q(prod, where) == [(True, True)]

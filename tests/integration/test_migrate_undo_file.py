"""``migrate undo`` runs the undo file of the version it undoes, never another one."""

from __future__ import annotations

from tests.helpers import Project, q


def test_undo_template_does_not_undo_a_numbered_version_of_the_same_description(
    project: Project,
) -> None:
    """V1 has no undo file; a new template pair happens to have V1's description. The undo
    template belongs to the template, not to V1: undo must refuse, not run it for V1."""
    dev = project.dsns["dev"]
    project.write("V1__add_note.sql", "CREATE TABLE keep (id int);\nINSERT INTO keep VALUES (1);\n")
    r = project.run("migrate", "up", "-e", "dev", "--target", "1")
    assert r.code == 0, r.err
    project.write("VXXX__add_note.sql", "CREATE TABLE other (id int);\n")
    project.write("UXXX__add_note.sql", "DROP TABLE keep;\n")
    r = project.run("migrate", "undo", "-e", "dev")
    assert r.code == 2, r.err
    assert "no undo file" in r.err
    assert q(dev, "SELECT count(*) FROM keep") == [(1,)]
    assert q(dev, "SELECT script, type FROM flyway_schema_history") == [("V1__add_note.sql", "SQL")]


def test_undo_template_undoes_the_template_applied_on_dev(project: Project) -> None:
    dev = project.dsns["dev"]
    project.write("V1__base.sql", "CREATE TABLE keep (id int);\n")
    project.write("VXXX__add_note.sql", "CREATE TABLE other (id int);\n")
    project.write("UXXX__add_note.sql", "DROP TABLE other;\n")
    r = project.run("migrate", "up", "-e", "dev")
    assert r.code == 0, r.err
    r = project.run("migrate", "undo", "-e", "dev", "--json")
    assert r.code == 0, r.err
    assert q(dev, "SELECT to_regclass('other'), to_regclass('keep') IS NOT NULL") == [(None, True)]

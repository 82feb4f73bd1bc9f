"""A template ``up`` applied on dev and edited afterwards is an applied file that changed,
not a new template: ``validate`` reports it and ``up`` refuses, instead of applying the
edited copy again under the next number."""

from __future__ import annotations

from tests.helpers import Project, q


def test_template_edited_after_it_was_applied_is_changed_not_new(project: Project) -> None:
    dev = project.dsns["dev"]
    project.write("V1__base.sql", "CREATE TABLE plans (name text, price int);\n")
    project.write("VXXX__add_plan.sql", "INSERT INTO plans VALUES ('pro', 10);\n")
    assert project.run("migrate", "up", "-e", "dev").code == 0
    project.write("VXXX__add_plan.sql", "INSERT INTO plans VALUES ('pro', 12);\n")

    v = project.run("migrate", "validate", "-e", "dev", "--json")
    assert v.code == 1, v.out
    assert len(v.json["problems"]) == 1
    assert "VXXX__add_plan.sql: changed after it was applied" in v.json["problems"][0]
    r = project.run("migrate", "up", "-e", "dev")
    assert r.code == 4, r.err
    assert "2 (VXXX__add_plan.sql) was changed after it was applied" in r.err
    assert q(dev, "SELECT name, price FROM plans") == [("pro", 10)]

    # repair realigns it (the edit was cosmetic, or fixed by hand); then nothing runs again
    assert project.run("migrate", "repair", "-e", "dev", "--yes").code == 0
    r = project.run("migrate", "up", "-e", "dev", "--json")
    assert r.code == 0, r.err
    assert r.json["applied"] == []
    assert q(dev, "SELECT count(*) FROM plans") == [(1,)]
    n = project.run("migrate", "number", "--json")
    assert n.code == 0, n.err
    assert [x["to"] for x in n.json["renames"]] == ["V2__add_plan.sql"]
    assert project.run("migrate", "validate", "-e", "dev").code == 0
    assert q(dev, "SELECT version, script FROM flyway_schema_history ORDER BY 1") == [
        ("1", "V1__base.sql"),
        ("2", "V2__add_plan.sql"),
    ]

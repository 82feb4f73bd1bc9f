"""Passwords in SQL text (a migration's ``CREATE ROLE ... PASSWORD '...'``) are redacted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgferry.redaction import redact

CASES = [
    ("CREATE ROLE r LOGIN PASSWORD 'hunter2-secret';", "CREATE ROLE r LOGIN PASSWORD '***';"),
    ("ALTER ROLE r WITH ENCRYPTED PASSWORD 'a''b';", "ALTER ROLE r WITH ENCRYPTED PASSWORD '***';"),
    ("alter role r password E'x\\'y';", "alter role r password '***';"),
    ("ALTER ROLE r PASSWORD $p$s'e$c$p$;", "ALTER ROLE r PASSWORD '***';"),
    (
        "CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'u', password 'pw1');",
        "CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'u', password '***');",
    ),
    # no secret: left as it is
    ("ALTER ROLE r PASSWORD NULL;", "ALTER ROLE r PASSWORD NULL;"),
    ("SELECT 'password is wrong'", "SELECT 'password is wrong'"),
    # the other shapes still apply
    ("host=db password='a b' user=x", "host=db password=*** user=x"),
]


@pytest.mark.parametrize(("text", "shown"), CASES)
def test_sql_passwords_are_redacted(text: str, shown: str) -> None:
    assert redact(text) == shown


@given(st.text(alphabet=st.characters(blacklist_characters="'"), min_size=4, max_size=30))
def test_any_quoted_password_is_gone(secret: str) -> None:
    sql = f"CREATE ROLE app LOGIN PASSWORD '{secret}' VALID UNTIL 'infinity';"
    out = redact(sql)
    assert out == "CREATE ROLE app LOGIN PASSWORD '***' VALID UNTIL 'infinity';"

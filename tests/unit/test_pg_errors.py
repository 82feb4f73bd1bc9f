"""pgferry.pg.errors: decisions by psycopg class, the same ones the SQLSTATEs meant."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as e_

from pgferry.errors import CannotConnect, LockUnavailable, OperationFailed, Unreachable
from pgferry.pg import connect_failures, errors


def _err(sqlstate: str) -> psycopg.Error:
    cls: type[psycopg.Error] = e_.lookup(sqlstate)
    return cls(f"error {sqlstate}")


@pytest.mark.parametrize(
    ("state", "transient"),
    [
        ("40001", True),
        ("40P01", True),
        ("57P01", True),
        ("57P02", True),
        ("57P03", True),
        ("53300", True),
        ("08000", True),
        ("08003", True),
        ("08006", True),
        ("08001", True),
        ("08004", True),
        ("08P01", True),
        ("55P03", False),
        ("23505", False),
        ("42P01", False),
        ("57014", False),
    ],
)
def test_transient(state: str, transient: bool) -> None:
    assert errors.transient(_err(state)) is transient


@pytest.mark.parametrize(
    ("state", "row"),
    [
        ("22P02", True),
        ("22003", True),
        ("23505", True),
        ("23503", True),
        ("P0001", True),
        ("38001", True),
        ("39P01", True),
        ("2F005", True),
        ("44000", True),
        ("57014", False),
        ("08006", False),
        ("42501", False),
        ("53100", False),
        ("40P01", False),
    ],
)
def test_row_error(state: str, row: bool) -> None:
    assert errors.row_error(_err(state)) is row


def test_single_conditions() -> None:
    assert errors.lock_timeout(_err("55P03")) and not errors.lock_timeout(_err("40P01"))
    assert errors.retry_statement(_err("55P03")) and errors.retry_statement(_err("40P01"))
    assert not errors.retry_statement(_err("40001"))
    assert errors.foreign_key(_err("23503")) and not errors.foreign_key(_err("23505"))
    assert errors.integrity(_err("23514")) and not errors.integrity(_err("22P02"))


@pytest.mark.parametrize(
    ("state", "kind"),
    [
        ("55P03", LockUnavailable),
        ("28P01", CannotConnect),
        ("28000", CannotConnect),
        ("08006", Unreachable),
        ("57P01", Unreachable),
        ("57P03", Unreachable),
        ("53300", OperationFailed),
        ("42P01", OperationFailed),
        ("23505", OperationFailed),
    ],
)
def test_map_db_error_by_class(state: str, kind: type) -> None:
    err = errors.map_db_error(_err(state), "ctx")
    assert type(err) is kind and err.details["sqlstate"] == state
    assert err.message == f"ctx: error {state}"


@pytest.mark.parametrize(
    ("state", "kind"),
    [
        ("28P01", "auth"),
        ("28000", "auth"),
        ("3D000", "no_database"),
        ("57P03", "transient"),
        ("53300", "transient"),
        ("08006", "transient"),
        ("42501", "other"),
    ],
)
def test_connect_failure_with_a_sqlstate(state: str, kind: str) -> None:
    assert connect_failures.connect_failure(_err(state)) == kind


def test_no_sqlstate_literals_outside_the_table() -> None:
    """Modules decide through pgferry.pg.errors, not by comparing SQLSTATE strings."""
    import re
    from pathlib import Path

    src = Path(errors.__file__).resolve().parents[1]
    pattern = re.compile(
        r"sqlstate\s*(==|!=|in\b|\[|or\s*\"\"\)\s*\[)"
        r"|startswith\(\"[0-9A-Z]{2}\"\)"
    )
    found = [
        f"{p.relative_to(src)}:{n}"
        for p in src.rglob("*.py")
        if p.name != "errors.py"
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []

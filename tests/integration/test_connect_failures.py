"""Connection failures on a real server: what fails at once (exit 2), what is retried (exit 3),
and passwords that never show, also when the URL does not parse (issue 9 item 22, issue 10
item 15).

The password role is real: a ``scram-sha-256`` line for it in the test server's
``pg_hba.conf`` (a fixture edits the file and reloads the server; only that role is
affected).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from pgferry.errors import CannotConnect, Unreachable
from pgferry.pg.connect import connect
from tests.helpers import Project, Result, write_project

PW_ROLE = "pgferry_pw"
PASSWORD = "Right-Pass-7"
WRONG = "Wr0ng-Pass-9"


@pytest.fixture(scope="module")
def password_role(pg_admin_dsn: str) -> Iterator[dict[str, str]]:
    """A login role that must give a password (scram-sha-256 in pg_hba.conf)."""
    with psycopg.connect(pg_admin_dsn, autocommit=True) as c:
        hba = Path(str(c.execute("SHOW hba_file").fetchone()[0]))  # type: ignore[index]
        c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(PW_ROLE)))
        c.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(PW_ROLE), sql.Literal(PASSWORD)
            )
        )
        c.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier("pw_db"), sql.Identifier(PW_ROLE)
            )
        )
        try:
            before = hba.read_text()
            hba.write_text(
                f"local all {PW_ROLE} scram-sha-256\n"
                f"host all {PW_ROLE} all scram-sha-256\n" + before
            )
        except OSError:
            pytest.skip(f"cannot edit {hba} of the test server")
        reloaded_after = c.execute("SELECT clock_timestamp()").fetchone()
        c.execute("SELECT pg_reload_conf()")
        _wait_for_reload(pg_admin_dsn, reloaded_after[0] if reloaded_after else None)
        params = psycopg.conninfo.conninfo_to_dict(pg_admin_dsn)
        query = f"?host={params['host']}" if params.get("host") else ""
        port = f":{params['port']}" if params.get("port") else ""
        yield {"query": query, "port": port}
        hba.write_text(before)
        c.execute("SELECT pg_reload_conf()")
        c.execute("DROP DATABASE IF EXISTS pw_db WITH (FORCE)")
        c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(PW_ROLE)))


def _wait_for_reload(dsn: str, after: Any) -> None:
    """Until the postmaster has read the edited pg_hba.conf: a new session inherits its
    configuration, so its pg_conf_load_time() moves past ``after``."""
    deadline = time.monotonic() + 30
    while True:
        with psycopg.connect(dsn, autocommit=True) as c:
            row = c.execute("SELECT pg_conf_load_time() > %s", [after]).fetchone()
        if row and row[0]:
            return
        assert time.monotonic() < deadline, "the server never reloaded its configuration"
        time.sleep(0.02)


def url(pw: dict[str, str], password: str, db: str = "pw_db") -> str:
    return f"postgresql://{PW_ROLE}:{password}@localhost{pw['port']}/{db}{pw['query']}"


def one_env(tmp_path: Path, dsn: str) -> Project:
    return write_project(tmp_path / "p", {"staging": dsn})


def test_right_password_connects(
    password_role: dict[str, str], tmp_path: Path, cli: Callable[..., Result]
) -> None:
    p = one_env(tmp_path, url(password_role, quote(PASSWORD, safe="")))
    r = cli("--config", str(p.config), "migrate", "status", "--json")
    assert r.code == 0, r.err


@pytest.mark.parametrize("case", ["wrong password", "no password", "missing database"])
def test_login_and_database_failures_are_not_retried(
    case: str, password_role: dict[str, str], tmp_path: Path, cli: Callable[..., Result]
) -> None:
    dsn = {
        "wrong password": url(password_role, WRONG),
        "no password": url(password_role, "").replace(f"{PW_ROLE}:@", f"{PW_ROLE}@"),
        "missing database": url(password_role, PASSWORD, "no_such_db"),
    }[case]
    p = one_env(tmp_path, dsn)
    for args in (["migrate", "status"], ["migrate", "up"], ["journal"]):
        for json_ in ([], ["--json"]):
            r = cli("--config", str(p.config), *args, *json_)
            assert r.code == 2, (args, r.err)
            line = r.err.strip().splitlines()
            assert len(line) == 1 and "environment 'staging'" in line[0], r.err
            assert WRONG not in r.out + r.err and PASSWORD not in r.out + r.err
            if json_:  # the server was asked once: not retried
                assert r.json["details"]["attempts"] == 1, (args, r.json)
    if case == "missing database":
        assert 'database "no_such_db" does not exist' in r.err
        assert "create the database" in r.err
    else:
        assert "cannot log in to environment 'staging'" in r.err
        assert "not retried" in r.err


@pytest.mark.parametrize("bad", ["99999", "abc", "0"])
def test_a_bad_port_fails_at_once(bad: str, tmp_path: Path, cli: Callable[..., Result]) -> None:
    p = one_env(tmp_path, f"postgresql://app:{WRONG}@localhost:{bad}/db")
    r = cli("--config", str(p.config), "migrate", "status", "--json")
    assert r.code == 2, r.err
    assert "environment 'staging'" in r.err and f"port '{bad}'" in r.err
    assert r.json["ok"] is False and r.json["details"]["kind"] == "bad_url"
    assert r.json["details"]["attempts"] == 0, r.json  # refused before asking the server
    assert WRONG not in r.out + r.err


def test_unreachable_server_is_retried_then_exit_3() -> None:
    t0 = time.monotonic()
    with pytest.raises(Unreachable) as e:
        connect("postgresql://app@127.0.0.1:1/db", retry_for=1.0)
    assert time.monotonic() - t0 >= 0.9  # it kept trying for the whole second
    assert e.value.details["attempts"] > 1, e.value.details
    assert e.value.exit_code == 3 and "retried for 1s" in e.value.message


def test_connect_classifies_a_missing_database(password_role: dict[str, str]) -> None:
    with pytest.raises(CannotConnect) as e:
        connect(url(password_role, PASSWORD, "nope_db"), retry_for=30)
    assert e.value.details["kind"] == "no_database" and e.value.exit_code == 2
    assert e.value.details["attempts"] == 1


# passwords written raw into the URL, with every character that breaks a URL
SECRETS = [
    "Alpha7%zzBravo",
    "Charlie8 Delta9",
    "Echo1@Foxtrot2:Golf3/Hotel4?India5#Juliet6",
    "Kilo7%Lima8@Mike9:Nov0/Osc1?Pap2#Que3 Rom4",
    "Sierra5 Tango6@host:1/db?x#",
]


@pytest.mark.parametrize("secret", SECRETS)
def test_passwords_in_unparsable_urls_never_show(
    secret: str, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    p = write_project(
        tmp_path / "p",
        {
            "dev": f"postgresql://app:{secret}@localhost:1/app",
            "prod": f"postgresql://app:{secret}@localhost:1/app",
        },
    )
    pieces = [
        secret,
        *[w for w in re.split(r"[%@:/?# ]", secret) if len(w) >= 4 and w not in ("host", "Host")],
    ]
    runs = [
        ("migrate", "status"),
        ("migrate", "up"),
        ("migrate", "plan"),
        ("migrate", "validate"),
        ("journal",),
        ("env", "check"),
        ("sync", "dev", "prod"),
        ("verify", "dev", "prod"),
        ("migrate", "repair", "--yes"),
    ]
    for args in runs:
        for json_ in ([], ["--json"]):
            r = cli("--config", str(p.config), *args, *json_)
            # 2 (or 1 where the command reports problems): a retried failure would end in
            # 3, unreachable; a URL that does not parse is never tried twice
            assert r.code in (1, 2), (args, r.code, r.err)
            if json_ and "attempts" in r.json.get("details", {}):
                assert r.json["details"]["attempts"] <= 1, (args, r.json)
            for piece in pieces:
                assert piece not in r.out + r.err, (args, piece, r.out + r.err)
    assert "does not parse" in r.err or "percent-encod" in r.err or "port" in r.err


def test_an_unreachable_target_is_retried_for_sync_retry_not_10_s(
    tmp_path: Path, make_db: Callable[..., str], cli: Callable[..., Result]
) -> None:
    """``[sync] retry`` bounds the target's first connection too (it was always 10 s: a
    configured 1 s waited 10, a configured 5 minutes gave up after 10)."""
    p = write_project(
        tmp_path / "p",
        {"dev": make_db("dev"), "gone": "host=127.0.0.1 port=1 dbname=gone user=gone"},
        protected=(),
        extra='[sync]\nretry = "1s"\n',
    )
    for args in (("verify", "dev", "gone"), ("sync", "dev", "gone")):
        t0 = time.monotonic()
        r = cli("--config", str(p.config), "--json", *args)
        took = time.monotonic() - t0
        assert r.code == 3, (args, r.err)
        assert "cannot connect to environment 'gone'" in r.json["message"], r.json
        assert "(retried for 1s)" in r.json["message"], r.json
        assert took < 8, (args, took)  # 1 s of retries; it was 10 s

"""The dashboard over HTTP, against a real ``pgferry serve`` process and real databases; httpx
plays the browser (cookies, forms). One server for the module.

What is asserted: the login (a session cookie that is HttpOnly, SameSite=Strict and
expires; a wrong token is a journaled 401; an expired or ended session goes back to the
login), CSRF on every form (no token or another session's: 403, nothing started), the
roles (a viewer sees no usable button and is refused), four eyes (the requester sees no
approve button and is refused by the service; another approver approves the plan hash
shown), every page with what it must show (protected environments marked, checks,
pending migrations with lint findings, backups with their verification state, the
journals, SVG charts drawn on the server), the pages' security headers, and live
progress read from the API's own SSE stream with the session cookie.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.helpers import Project
from tests.helpers.dashboard import dashboard_project, form_csrf, login, serve
from tests.helpers.service import SECRET, Server, sse, wait_run

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dashboard")]

Svc = tuple[Project, Server, dict[str, str]]


@pytest.fixture(scope="module")
def service(
    make_db_module: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Svc]:
    p = dashboard_project(tmp_path_factory.mktemp("dash") / "proj", make_db_module)
    for srv, toks in serve(p):
        yield p, srv, toks


@pytest.fixture
def srv(service: Svc) -> Server:
    return service[1]


@pytest.fixture
def tok(service: Svc) -> dict[str, str]:
    return service[2]


def _control(p: Project, query: str, args: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(p.dsns["control"], autocommit=True) as c:
        cur = c.execute(query, args)
        return cur.fetchall() if cur.description else []


def _start(c: httpx.Client, page: str, **fields: str) -> httpx.Response:
    html = c.get(page).text
    return c.post(
        "/runs", data={"csrf": form_csrf(html), "nonce": "n" + str(time.time()), **fields}
    )


def test_pages_need_a_session_and_the_login_sets_a_strict_expiring_cookie(service: Svc) -> None:
    p, srv, tok = service
    anon = httpx.Client(base_url=srv.url, timeout=30)
    r = anon.get("/migrations?env=prod")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/migrations%3Fenv%3Dprod"
    r = anon.get("/login")
    assert r.status_code == 200 and 'type="password"' in r.text
    pre = r.headers["set-cookie"].lower()
    assert "pgferry_login=" in pre and "httponly" in pre and "samesite=strict" in pre
    # the login form itself is CSRF-bound: no token from the page, no login
    r = anon.post("/login", data={"token": tok["vera"]})
    assert r.status_code == 403 and "pgferry_session" not in r.headers.get("set-cookie", "")
    csrf = form_csrf(anon.get("/login").text)
    r = anon.post("/login", data={"csrf": csrf, "token": "pgf_wrong"})
    assert r.status_code == 401 and "wrong" in r.text
    refused = _control(
        p,
        "SELECT arguments->>'address', details->>'path' FROM pgferry.journal"
        " WHERE command = 'http 401' AND details->>'path' = '/login'",
    )
    assert refused and refused[-1][0] == "127.0.0.1"
    r = anon.post("/login", data={"csrf": csrf, "token": tok["vera"], "next": "//evil.example/"})
    assert r.status_code == 303 and r.headers["location"] == "/"  # never off-site
    cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith("pgferry_session="))
    flags = {x.strip().split("=")[0].lower() for x in cookie.split(";")}
    assert {"httponly", "samesite", "max-age", "path"} <= flags
    assert "samesite=strict" in cookie.lower() and "max-age=43200" in cookie.lower()  # 12h
    assert anon.get("/").status_code == 200


def test_every_page_shows_its_concern_with_security_headers(
    srv: Server, tok: dict[str, str]
) -> None:
    c = login(srv, tok["olga"])
    pages = {
        p: c.get(p)
        for p in (
            "/",
            "/migrations?env=prod",
            "/runs",
            "/approvals",
            "/backups?env=dev",
            "/journal?env=dev",
        )
    }
    for path, r in pages.items():
        assert r.status_code == 200, (path, r.text[-2000:])
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-frame-options"] == "DENY"
        # no inline script, no style attribute (the CSP would block them), no password
        assert not re.search(r"<script(?![^>]*\bsrc=)", r.text), path
        assert " style=" not in r.text, path
        assert SECRET not in r.text, path
        assert "olga" in r.text
    env = pages["/"].text
    assert env.count('class="lock"') >= 1 and "protected" in env  # prod is marked
    assert "reachability" in env and "rows:public.items" in env  # the check table
    assert "<svg" in env and 'class="threshold"' in env  # rows per table, threshold marked
    assert "Check the health of prod now" in env
    mig = pages["/migrations?env=prod"].text
    assert "V2__items_weight.sql" in mig and "pending" in mig
    assert "PF0" in mig  # the pending file's lint finding, with its rule code
    assert "Apply 1 pending migration to prod" in mig
    assert "second person" in mig  # the button says prod's change needs an approval
    runs = pages["/runs"].text
    assert "Verify prod against dev (reads only)" in runs
    assert runs.count("<svg") == 2  # durations and rows/s over 30 days
    bk = pages["/backups?env=dev"].text
    assert "Back up dev now" in bk and "never" in bk and 'class="limit"' in bk
    assert "complete" in bk
    jr = pages["/journal?env=dev"].text
    assert "migrate up" in jr and "backup create" in jr and "dashboard login" in jr


def test_every_form_needs_the_csrf_token_of_its_session(service: Svc) -> None:
    p, srv, tok = service
    olga = login(srv, tok["olga"])
    before = _control(p, "SELECT count(*) FROM pgferry_control.runs")[0][0]
    args = {"kind": "health", "a.env": "dev"}
    assert olga.post("/runs", data=args).status_code == 403
    other = form_csrf(login(srv, tok["alice"]).get("/runs").text)
    r = olga.post("/runs", data={**args, "csrf": other})
    assert r.status_code == 403 and "reload" in r.text
    assert olga.post("/logout", data={}).status_code == 403
    # the API's writes carry no CSRF token: the session cookie alone may read, not write
    assert olga.get("/api/runs").status_code == 200
    r = olga.post("/api/runs", json={"kind": "health", "arguments": {"env": "dev"}})
    assert r.status_code == 403 and "Bearer" in r.json()["message"], r.text
    assert _control(p, "SELECT count(*) FROM pgferry_control.runs")[0][0] == before
    # the same form sent twice (a double click) is one run
    html = olga.get("/runs").text
    form = {**args, "csrf": form_csrf(html), "nonce": "twice"}
    r1, r2 = olga.post("/runs", data=form), olga.post("/runs", data=form)
    assert r1.status_code == r2.status_code == 303
    assert r1.headers["location"] == r2.headers["location"]


def test_a_viewer_sees_no_usable_button_and_is_refused(srv: Server, tok: dict[str, str]) -> None:
    vera = login(srv, tok["vera"])
    html = vera.get("/runs").text
    assert "disabled" in html and "needs operator" in html
    r = vera.post("/runs", data={"csrf": form_csrf(html), "kind": "health", "a.env": "dev"})
    assert r.status_code == 403 and "needs operator" in r.text


def test_the_requester_sees_no_approve_button_and_is_refused(service: Svc) -> None:
    p, srv, tok = service
    alice, bob = login(srv, tok["alice"]), login(srv, tok["bob"])
    # the migrations page's own button: "Apply 1 pending migration to prod"
    r = _start(alice, "/migrations?env=prod", kind="migrate_up", **{"a.env": "prod"})
    assert r.status_code == 303, r.text
    rid = r.headers["location"].rsplit("/", 1)[-1]
    page = alice.get(f"/runs/{rid}").text
    assert "awaiting approval" in page and f"/runs/{rid}/approve" not in page
    assert "You asked for this run" in page
    mine = alice.get("/approvals").text
    assert f"approval-{rid}" in mine and f"/runs/{rid}/approve" not in mine
    # the button hidden is not the guard: the service refuses the requester
    r = alice.post(f"/runs/{rid}/approve", data={"csrf": form_csrf(mine)})
    assert r.status_code == 403, r.text
    assert (
        _control(p, "SELECT state FROM pgferry_control.runs WHERE id = %s", [rid])[0][0]
        == "awaiting_approval"
    )
    theirs = bob.get("/approvals").text
    # the plan: the exact SQL, and its hash
    assert f"/runs/{rid}/approve" in theirs and "ADD COLUMN weight int" in theirs
    shown = re.search(rf'/runs/{rid}/approve".*?name="plan_hash" value="([0-9a-f]+)"', theirs, re.S)
    assert shown
    r = bob.post(
        f"/runs/{rid}/approve", data={"csrf": form_csrf(theirs), "plan_hash": shown.group(1)}
    )
    assert r.status_code == 303 and r.headers["location"] == f"/runs/{rid}"
    api = httpx.Client(
        base_url=srv.url, headers={"Authorization": f"Bearer {tok['vera']}"}, timeout=60
    )
    run = wait_run(api, rid)
    assert run["state"] == "succeeded" and run["approved_by"] == "bob", run


def test_live_progress_is_the_apis_stream_read_with_the_session(service: Svc) -> None:
    p, srv, tok = service
    olga = login(srv, tok["olga"])
    r = _start(olga, "/runs", kind="verify", **{"a.source": "dev", "a.target": "staging"})
    assert r.status_code == 303, r.text
    rid = r.headers["location"].rsplit("/", 1)[-1]
    page = olga.get(f"/runs/{rid}").text
    assert f'data-events="/api/runs/{rid}/events"' in page
    events = sse(olga, rid)  # the cookie alone: the browser's EventSource sends no header
    names = [n for n, _ in events]
    assert names[-1] == "batch:complete" and "batch:progress" in names
    assert any(e["type"] == "table_finished" for _, e in events)
    done = olga.get(f"/runs/{rid}").text
    assert 'value="100"' in done and "succeeded" in done


def test_an_ended_or_expired_session_goes_back_to_the_login(service: Svc) -> None:
    p, srv, tok = service
    c = login(srv, tok["vera"])
    assert c.get("/journal").status_code == 200
    _control(
        p,
        "UPDATE pgferry_control.sessions SET expires_at = now() - interval '1 s'"
        " WHERE token_id = (SELECT id FROM pgferry_control.tokens WHERE name = 'vera')",
    )
    # the service's token cache keeps a found session for a second: ask until it lets go
    deadline = time.monotonic() + 15
    while (r := c.get("/journal")).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    c = login(srv, tok["vera"])
    html = c.get("/").text
    assert c.post("/logout", data={"csrf": form_csrf(html)}).status_code == 303
    old = c.cookies.get("pgferry_session")
    assert old is None  # the browser was told to forget it
    gone = _control(
        p,
        "SELECT count(*) FROM pgferry_control.sessions s JOIN"
        " pgferry_control.tokens t ON t.id = s.token_id WHERE t.name = 'vera'"
        " AND s.expires_at > now()",
    )[0][0]
    assert gone == 0

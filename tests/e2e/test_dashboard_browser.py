"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright (no
browser downloaded: ``executable_path``), against a real ``pgferry serve`` and real
databases.

A person logs in with a token, starts a verify run from the runs page (the button says
what it will do with the environments chosen), watches its progress bar fill live from
the SSE stream up to 100%, and every page is saved as a screenshot (under docs/img/, the
pictures docs/dashboard.md shows, with ``PGFERRY_SCREENSHOTS=docs``). Skips, saying why,
where chromium is not installed (``.ci/run`` installs Debian's ``chromium``) or Playwright
is missing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ROOT, Project
from tests.helpers.dashboard import dashboard_project, serve
from tests.helpers.service import Server, wait_run

CHROMIUM = os.environ.get("PGFERRY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: where the screenshots go: docs/img (the pictures docs/dashboard.md shows) only when
#: asked for with PGFERRY_SCREENSHOTS=docs, so that `./run test` leaves the checkout clean
IMG = (
    ROOT / "docs" / "img"
    if os.environ.get("PGFERRY_SCREENSHOTS") == "docs"
    else Path(tempfile.gettempdir()) / "pgferry-dashboard-img"
)
#: rows in dev and staging: enough for a verify to report progress in several batches
ROWS = 60_000

if not Path(CHROMIUM).exists():
    pytest.skip(
        f"chromium is not installed ({CHROMIUM}): apt install chromium, or set "
        "PGFERRY_CHROMIUM; .ci/run installs it",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed: pip install -e '.[test]'"
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dashboard_browser")]


@pytest.fixture(scope="module")
def service(
    make_db_module: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Project, Server, dict[str, str]]]:
    p = dashboard_project(tmp_path_factory.mktemp("dashb") / "proj", make_db_module, ROWS)
    for srv, toks in serve(p):
        yield p, srv, toks


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        # chromium refuses to run as root with its sandbox (CI containers run as root)
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield b
        finally:
            b.close()


def _history(srv: Server, tok: dict[str, str]) -> None:
    """What a team's dashboard has seen by lunchtime: runs finished, a backup verified, and
    a change to prod someone else asked for."""
    olga = httpx.Client(
        base_url=srv.url, timeout=120, headers={"Authorization": f"Bearer {tok['olga']}"}
    )
    for kind, args in (
        ("health", {"env": "dev"}),
        ("backup_verify", {"env": "dev"}),
        ("verify", {"source": "dev", "target": "staging"}),
    ):
        r = olga.post("/api/runs", json={"kind": kind, "arguments": args})
        assert r.status_code == 202, r.text
        wait_run(olga, r.json()["id"])
    r = olga.post("/api/runs", json={"kind": "migrate_up", "arguments": {"env": "prod"}})
    assert r.status_code == 202 and r.json()["state"] == "awaiting_approval", r.text


def test_log_in_start_a_verify_watch_it_reach_100_and_see_every_page(
    service: tuple[Project, Server, dict[str, str]], browser: Any
) -> None:
    p, srv, tok = service
    _history(srv, tok)
    IMG.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    # every value a progress bar took before its last, in order (the test's own probe; a
    # mutation record's oldValue, as the attribute may have changed again before it is read)
    ctx.add_init_script("""window.__seen = [];
      new MutationObserver((ms) => ms.forEach((m) => window.__seen.push(
        [m.target.closest('.progress')?.dataset.run, m.oldValue])))
      .observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                          attributeFilter: ['value']});""")
    page = ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(srv.url + "/runs")
    assert page.url.startswith(srv.url + "/login?next=")  # no session: the login first
    page.screenshot(path=str(IMG / "dashboard-login.png"))
    page.fill("#token", tok["alice"])
    page.click("form.login button[type=submit]")
    page.wait_for_url(srv.url + "/runs")
    cookie = next(c for c in ctx.cookies() if c["name"] == "pgferry_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    assert page.evaluate("document.cookie") == ""  # a script cannot read it

    # the button says what it will do with the environments chosen
    form = page.locator("form.pair", has=page.locator("#start-verify"))
    form.locator("select[name='a.target']").select_option("staging")
    button = page.locator("#start-verify")
    assert button.inner_text() == "Verify staging against dev (reads only)"
    button.click()
    page.wait_for_url(srv.url + "/runs/*")
    run_id = page.url.rsplit("/", 1)[-1]
    box = page.locator(f".progress[data-run='{run_id}']")
    # live: the bar is filled from the SSE stream as the events come, up to 100%
    page.wait_for_function(
        "id => { const b = document.querySelector(`.progress[data-run='${id}'] progress`);"
        " return b && b.value === 100 && b.closest('.progress').dataset.done === 'true'; }",
        arg=run_id,
        timeout=90_000,
    )
    assert box.locator(".pct").inner_text() == "100%"
    seen = [float(v) for r, v in page.evaluate("window.__seen") if r == run_id and v]
    assert any(0 < v < 100 for v in seen), seen  # it moved before it filled
    assert box.locator(".state").inner_text() == "succeeded"
    log = page.locator(f"[data-log-for='{run_id}'] li").all_inner_texts()
    assert all(
        any(f"{t} finished: ok" in x for x in log) for t in ("public.items", "public.notes")
    ), log
    assert any("run ended: succeeded" in x for x in log), log
    page.screenshot(path=str(IMG / "dashboard-run.png"), full_page=True)

    shots = {
        "environments": "/",
        "migrations": "/migrations?env=prod",
        "runs": "/runs",
        "approvals": "/approvals",
        "backups": "/backups?env=dev",
        "journal": "/journal?env=dev",
    }
    for name, path in shots.items():
        page.goto(srv.url + path)
        assert page.locator("h1").inner_text() == name.capitalize()
        page.screenshot(path=str(IMG / f"dashboard-{name}.png"), full_page=True)
    # alice may approve olga's change to prod: the button names the run and the environment
    page.goto(srv.url + "/approvals")
    assert (
        page.locator("button.approve").first.inner_text()
        == "Approve: run migrate up on prod as planned"
    )
    assert page.locator(".env.protected").count() >= 1
    assert not errors, errors  # no script error, no CSP violation
    ctx.close()

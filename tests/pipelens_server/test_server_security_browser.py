"""In a real Chromium: a page on another 127.0.0.1 port cannot change the server's settings nor
ingest through the user's browser, and every dashboard page runs under its CSP with no
violation. A missing browser fails these tests, it never skips them."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
from _browser_kit import TIMEOUT_MS, ingest
from _dashboard_kit import recent_run
from _pg_testkit import live_server, read_rows
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from pipelens_server import Settings, create_app

pytestmark = pytest.mark.browser

TOKEN = "browser-token"
SEED_BODY = (
    '{"name": "evil", "key": "evil", "runId": "planted", "time": {"startTs": 1}, "records": {}}'
)


def _retention(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT days FROM retention_default").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def attacker() -> Iterator[tuple[str, dict[str, str]]]:
    """Another site on 127.0.0.1 (another port: ``same-site`` to the browser); its pages are
    whatever the test puts in the dict (path → HTML)."""
    pages: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", pages
    server.shutdown()
    server.server_close()


def _attack_page(site: str) -> str:
    """A page that, once opened, posts the settings form to ``site`` and sends a seed body
    without preflight (``text/plain``, ``no-cors``)."""
    return f"""<!doctype html><html><body>
<form id="f" method="post" action="{site}/settings"><input name="days" value="1"></form>
<script>
fetch("{site}/api/ingestion/pipeline/start", {{method: "POST", mode: "no-cors",
  headers: {{"content-type": "text/plain"}}, body: {SEED_BODY!r}}})
  .finally(() => document.getElementById("f").submit());
</script></body></html>"""


def _run_attack(
    browser: Browser, site: str, attacker: tuple[str, dict[str, str]], login: bool
) -> int:
    """Open the attacker's page in a browser (logged in to ``site`` first when ``login``); the
    status of the settings POST it made."""
    origin, pages = attacker
    pages["/"] = _attack_page(site)
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    if login:
        tab.goto(f"{site}/login")
        tab.fill("#token", TOKEN)
        tab.get_by_role("button", name="Log in").click()
        expect(tab).to_have_url(f"{site}/")
    with tab.expect_response(lambda r: r.url == f"{site}/settings") as answer:
        tab.goto(f"{origin}/")
    status = answer.value.status
    context.close()
    return status


def test_a_page_on_another_port_cannot_change_the_retention(
    browser: Browser, site: str, database_url: str, attacker: tuple[str, dict[str, str]]
) -> None:
    """Without a token: the auto-submitted form is a 403 and the seed body is not stored."""
    before = _retention(database_url)
    assert _run_attack(browser, site, attacker, login=False) == 403
    assert before == _retention(database_url)
    assert read_rows(database_url)["runs"] == []


def test_a_logged_in_user_visiting_a_page_on_another_port_keeps_the_retention(
    browser: Browser, database_url: str, attacker: tuple[str, dict[str, str]]
) -> None:
    """With a token and a session (SameSite does not tell ports apart): still a 403."""
    with live_server(create_app(Settings(database_url=database_url, token=TOKEN))) as site:
        before = _retention(database_url)
        assert _run_attack(browser, site, attacker, login=True) == 403
    assert before == _retention(database_url)


def test_the_settings_form_still_saves_from_its_own_page(
    browser: Browser, site: str, database_url: str
) -> None:
    """Our own form carries its CSRF token and our Origin: the new retention is saved."""
    tab = browser.new_page()
    tab.goto(f"{site}/settings")
    tab.fill("#default_days", "21")
    tab.get_by_role("button", name="Save default").click()
    expect(tab.get_by_role("status")).to_contain_text("Saved")
    tab.close()
    assert _retention(database_url) == 21


# -- the Content-Security-Policy -------------------------------------------------------------


@pytest.fixture
def watched(browser: Browser, site: str) -> Iterator[tuple[Page, list[str]]]:
    """A tab whose console errors and page errors are collected."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_cookies([{"name": "tz", "value": "UTC", "url": site}])
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning") or "Content Security Policy" in message.text:
            problems.append(f"{tab.url}: {message.text}")

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: problems.append(f"{tab.url}: {error}"))
    yield tab, problems
    context.close()


def test_a_csp_violation_would_be_seen(watched: tuple[Page, list[str]], site: str) -> None:
    """The check below can fail: an inline style added to a page is refused and reported."""
    tab, problems = watched
    tab.goto(f"{site}/import")
    tab.evaluate(
        "document.head.appendChild(Object.assign(document.createElement('style'), "
        "{textContent: 'body { color: red }'}))"
    )
    tab.wait_for_timeout(300)
    assert any("Content Security Policy" in p for p in problems), problems


def test_every_page_runs_under_the_csp_without_a_violation(
    watched: tuple[Page, list[str]], site: str
) -> None:
    """Every page, a step panel opened by htmx and a filter change: no CSP report, no error."""
    tab, problems = watched
    ingest(site, recent_run("r1", "rag", fail=True))
    ingest(site, recent_run("2026/12/01-nightly", "etl/daily"))
    pages = [
        "/",
        "/pipelines/rag/runs",
        "/runs/r1",
        "/runs/r1?step=answer.retrieve",
        "/pipelines/rag/steps",
        "/pipelines/rag/steps/answer",
        f"/runs/{quote('2026/12/01-nightly', safe='')}",
        f"/pipelines/{quote('etl/daily', safe='')}/runs",
        "/llm",
        "/import",
        "/settings",
        "/login",
        "/no-such-page",
    ]
    for path in pages:
        tab.goto(f"{site}{path}")
        tab.wait_for_load_state("load")
    tab.goto(f"{site}/runs/r1")
    tab.locator(".tree a", has_text="rerank").click()
    expect(tab.locator("#step_panel")).to_contain_text("rerank")
    tab.goto(f"{site}/pipelines/rag/runs")
    tab.locator("#range").select_option("custom")
    tab.wait_for_timeout(2500)  # a live refresh of the runs table
    # A 404 (the missing page, the browser's favicon) is no violation; everything else is.
    problems = [p for p in problems if "status of 404" not in p]
    assert problems == []

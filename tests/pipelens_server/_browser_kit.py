"""What the dashboard's browser tests share: Debian's Chromium driven by Playwright, a real
server on the test's own database, and screenshots for a person to look at.

A missing browser fails these tests, it never skips them: ``.ci/run`` installs it. The fixtures
are offered to every module by ``conftest.py``; each module gets its own driver (module scope:
while Playwright's sync API is started it leaves its event loop marked running in the thread, so
``asyncio.run()`` in later modules would fail).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _pg_testkit import MSGPACK, live_server, msgpack_body
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from pipelens.events import Event
from pipelens_server import Settings, create_app

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "output" / "screenshots"
#: axe-core as the package bundles it (its ``axe.min.js``, injected into the page by
#: ``page.evaluate``): the audit needs no network.
AXE = Axe()
#: The impacts an audit refuses; "minor" and "moderate" findings are reported by axe but allowed.
REFUSED_IMPACTS = frozenset({"serious", "critical"})
#: Long enough for a few 2 s polls on a busy machine.
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Playwright's driver for one module's tests."""
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless; its absence is a failure, not a skip."""
    assert CHROMIUM.is_file(), (
        f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
    )
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
    yield chromium
    chromium.close()


@pytest.fixture
def site(database_url: str) -> Iterator[str]:
    """A real server (uvicorn on a free port) on the test's own database; its base URL."""
    with live_server(create_app(Settings(database_url=database_url))) as url:
        yield url


def ingest(site: str, events: list[Event], token: str | None = None) -> None:
    """Send ``events`` to ``site`` the way clients do (with ``token`` when the server has one)."""
    headers = MSGPACK | ({"Authorization": f"Bearer {token}"} if token else {})
    response = httpx.post(f"{site}/api/v1/events", content=msgpack_body(events), headers=headers)
    assert response.status_code == 202, response.text


def shot(page: Page, name: str) -> None:
    """Save a full-page screenshot as ``tests/output/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def serious_violations(page: Page) -> list[str]:
    """axe-core's serious and critical findings on ``page`` as it is now, one line each: the
    rule id, its impact, and the elements at fault (empty when the page passes)."""
    results = AXE.run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(" ".join(map(str, node["target"])) for node in v["nodes"])
        for v in results.response["violations"]
        if v["impact"] in REFUSED_IMPACTS
    ]

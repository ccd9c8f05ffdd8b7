"""The dashboard's pages through the Litestar test client, on a real PostgreSQL."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _dashboard_kit import MS, form_token, ingest, recent_run, running_run, step_named, table_rows
from _pg_testkit import LOCAL
from litestar import Litestar
from litestar.testing import TestClient

from pipelens_server import Settings, create_app
from pipelens_server._pages._login import COOKIE
from pipelens_server._pages._templating import HTMX_FILE

Client = TestClient[Litestar]
HTMX = {"HX-Request": "true"}
TOKEN = "dashboard-token"


def _hrefs(html: str, prefix: str) -> list[str]:
    return [
        h.replace("&amp;", "&") for h in re.findall(rf'href="({re.escape(prefix)}[^"]*)"', html)
    ]


def test_overview_without_runs_shows_the_two_lines_to_add(client: Client) -> None:
    """A new server's overview tells the user how to send runs to this very server."""
    response = client.get("/")
    assert response.status_code == 200
    assert "No runs yet" in response.text
    assert 'pipelens.configure(url="http://127.0.0.1")' in response.text.replace("&#34;", '"')
    assert "@pipelens.step" in response.text


def test_overview_has_runs_error_rate_percentiles_and_last_run_per_range(client: Client) -> None:
    """Each pipeline's figures count only the runs in the chosen time range."""
    ingest(client, recent_run("a1", "alpha"))
    ingest(client, recent_run("a2", "alpha", fail=True))
    ingest(client, recent_run("b1", "beta", ago_s=3 * 86400))
    day = table_rows(client.get("/", params={"range": "24h"}).text)
    week = table_rows(client.get("/", params={"range": "7d"}).text)
    # Columns: pipeline, runs, running, abandoned, error rate, p50, p95, last run.
    assert [row[:7] for row in day] == [
        ["alpha", "2", "0", "0", "50.0 %", "300.0 ms", "300.0 ms"],
        ["beta", "0", "0", "0", "—", "—", "—"],
    ]
    assert [row[:5] for row in week] == [
        ["alpha", "2", "0", "0", "50.0 %"],
        ["beta", "1", "0", "0", "0.0 %"],
    ]
    assert day[0][7].endswith(" UTC")


def test_overview_refuses_an_unknown_range_with_an_html_page(client: Client) -> None:
    """A range that is not a preset is a 400 page naming the parameter."""
    response = client.get("/", params={"range": "3 weeks"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "range" in response.text


def test_runs_page_filters_by_status_and_time_range(client: Client) -> None:
    """Status and time range narrow a pipeline's runs; other pipelines never show."""
    ingest(client, recent_run("ok", "alpha", ago_s=30))
    ingest(client, recent_run("bad", "alpha", fail=True, ago_s=60))
    ingest(client, recent_run("old", "alpha", ago_s=7200))
    ingest(client, recent_run("other", "beta"))
    runs = "/pipelines/alpha/runs"

    def ids(**params: str) -> list[str]:
        return [row[0] for row in table_rows(client.get(runs, params=params).text)]

    assert ids(range="all") == ["ok", "bad", "old"]
    assert ids(range="1h") == ["ok", "bad"]
    assert ids(range="1h", status="failed") == ["bad"]
    assert ids(range="5m", status="running") == []


def test_runs_page_pages_through_every_run_once_with_keyset_links(client: Client) -> None:
    """Following 'Older runs' visits every run exactly once, newest first."""
    events = [e for i in range(60) for e in recent_run(f"r{i:02d}", ago_s=100 - i)]
    ingest(client, events)
    seen: list[str] = []
    url: str | None = "/pipelines/rag/runs?range=1h"
    pages = 0
    while url is not None:
        html = client.get(url).text
        seen += [row[0] for row in table_rows(html)]
        older = [h for h in _hrefs(html, "/pipelines/rag/runs") if "after=" in h]
        url = older[0] if older else None
        pages += 1
    assert pages == 2
    assert seen == [f"r{i:02d}" for i in reversed(range(60))]


def test_runs_page_finds_runs_by_the_start_of_their_id(client: Client) -> None:
    """The run id filter matches a prefix, literally (``_`` and ``%`` are not wildcards)."""
    for run_id in ("job_1", "job_2", "jobX3", "other"):
        ingest(client, recent_run(run_id))

    def ids(q: str) -> list[str]:
        html = client.get("/pipelines/rag/runs", params={"q": q}).text
        return sorted(row[0] for row in table_rows(html))

    assert ids("job_") == ["job_1", "job_2"]
    assert ids("job") == ["jobX3", "job_1", "job_2"]
    assert ids("%") == []


def test_runs_page_refuses_a_malformed_cursor(client: Client) -> None:
    """A cursor that is not start_ns:run_id is a 400 that says what it should be."""
    response = client.get("/pipelines/rag/runs", params={"after": "yesterday"})
    assert response.status_code == 400
    assert "start_ns:run_id" in response.text


def test_htmx_gets_the_targeted_block_and_a_browser_the_page(client: Client) -> None:
    """One URL: the whole page, the content block, or the polled table, by request headers."""
    ingest(client, recent_run("r1"))
    url = "/pipelines/rag/runs?range=1h"
    page = client.get(url).text
    content = client.get(url, headers={**HTMX, "HX-Target": "content"}).text
    table = client.get(url, headers={**HTMX, "HX-Target": "runs_table"}).text
    restore = client.get(url, headers={**HTMX, "HX-History-Restore-Request": "true"}).text
    assert page.startswith("<!doctype html>")
    assert restore.startswith("<!doctype html>")
    assert ("<html" in content, '<form class="filters"' in content) == (False, True)
    assert table.lstrip().startswith('<div id="runs_table"')
    assert '<form class="filters"' not in table
    assert 'hx-get="/pipelines/rag/runs?range=1h"' in table
    assert table_rows(table) == table_rows(page)


def test_polled_table_keeps_the_filters_and_page_it_shows(client: Client) -> None:
    """The live table polls its own URL, so a filter or page change carries on refreshing."""
    ingest(client, recent_run("r1", fail=True))
    html = client.get("/pipelines/rag/runs", params={"status": "failed", "range": "6h"}).text
    polled = re.search(r'<div id="runs_table" hx-get="([^"]*)"', html)
    assert polled is not None
    assert polled.group(1).replace("&amp;", "&") == "/pipelines/rag/runs?range=6h&status=failed"
    assert "every 2s" in html


def test_run_page_draws_one_bar_per_step_coloured_by_status(client: Client) -> None:
    """The Gantt chart has a bar for each step, in tree order, classed by status."""
    ingest(client, recent_run("r1", fail=True))
    html = client.get("/runs/r1").text
    bars = re.findall(r'<rect class="bar (\w+)" data-key="([^"]+)"', html)
    assert bars == [
        ("failed", "answer"),
        ("completed", "answer.retrieve"),
        ("failed", "answer.rerank"),
    ]
    assert "<title>answer.retrieve\ncompleted · 100.0 ms" in html


def test_running_run_polls_and_its_running_steps_grow(client: Client) -> None:
    """While the run runs its live part polls, and a running step's bar reaches now."""
    running, _ = running_run("r1")
    ingest(client, running)
    html = client.get("/runs/r1").text
    assert 'id="run_live" hx-get="/runs/r1"' in html
    widths = dict(re.findall(r'data-key="([^"]+)" x="[^"]*" y="[^"]*"\s+width="([\d.]+)%"', html))
    assert float(widths["answer"]) > 99
    assert '<rect class="bar running growing" data-key="answer"' in html
    assert "so far" in html
    poll = client.get("/runs/r1", headers={**HTMX, "HX-Target": "run_live"})
    assert (poll.status_code, "<html" in poll.text) == (200, False)


def test_poll_of_a_finished_run_is_answered_286(client: Client) -> None:
    """Once the run has ended, the poll gets 286 (stop polling) with the final state."""
    running, rest = running_run("r1")
    ingest(client, running)
    ingest(client, rest)
    poll = client.get("/runs/r1", headers={**HTMX, "HX-Target": "run_live"})
    assert poll.status_code == 286
    assert 'data-status="completed"' in poll.text
    assert "hx-trigger" not in poll.text


def test_step_panel_shows_inputs_records_result_and_error(client: Client) -> None:
    """The panel fragment shows a step's captured values and its error with traceback."""
    ingest(client, recent_run("r1", fail=True))
    panel = {**HTMX, "HX-Target": "step_panel"}
    retrieve = client.get("/runs/r1", params={"step": "answer.retrieve"}, headers=panel)
    rerank = client.get("/runs/r1", params={"step": "answer.rerank"}, headers=panel)
    assert "<html" not in retrieve.text
    assert "&#34;k&#34;: 3" in retrieve.text
    assert "&#34;n_docs&#34;: 2" in retrieve.text
    assert "&#34;d1&#34;" in retrieve.text
    assert ("ValueError" in rerank.text, "bad doc" in rerank.text) == (True, True)
    assert "Traceback ..." in rerank.text
    page = client.get("/runs/r1", params={"step": "answer.rerank"}).text
    assert "Traceback ..." in page


def test_step_panel_of_a_running_step_polls_until_the_step_ends(client: Client) -> None:
    """A running step's panel refreshes itself; once the step ended the poll gets 286."""
    running, rest = running_run("r1")
    ingest(client, running)
    params = {"step": "answer.retrieve"}
    live = client.get("/runs/r1", params=params, headers={**HTMX, "HX-Target": "step_panel"})
    assert (live.status_code, 'hx-trigger="every 2s' in live.text) == (200, True)
    ingest(client, rest)
    done = client.get("/runs/r1", params=params, headers={**HTMX, "HX-Target": "step_panel"})
    assert (done.status_code, "hx-trigger" in done.text) == (286, False)
    assert "completed" in done.text


def test_unknown_step_says_so(client: Client) -> None:
    """A step key the run does not have is named in the panel."""
    ingest(client, recent_run("r1"))
    page = client.get("/runs/r1", params={"step": "answer.nope"})
    assert (page.status_code, "This run has no step answer.nope" in page.text) == (200, True)


def test_a_run_sent_by_the_seeds_client_is_shown_like_ours(client: Client) -> None:
    """The seed's real-time ingest shapes give the same chart, tree and panel as our events."""
    start_ms = time.time_ns() // MS - 1000

    def step(key: str, start: int, end: int, **extra: Any) -> dict[str, Any]:
        timing = {"startTs": start_ms + start, "endTs": start_ms + end, "timeUsageMs": end - start}
        return {"name": key.rsplit(".", 1)[-1], "key": key, "time": timing, **extra}

    root = step("demo", 0, 300, result="done", records={})
    child = step("demo.child", 10, 110, result=[1, 2], records={"n": 2})
    pipeline = {**root, "logVersion": 1, "runId": "seed-run", "steps": [root, child]}
    for path, body in [
        ("/api/ingestion/pipeline/start", {**pipeline, "steps": [root]}),
        ("/api/ingestion/step/start", {"runId": "seed-run", "step": child}),
        ("/api/ingestion/step/finish", {"runId": "seed-run", "step": child}),
        ("/api/ingestion/pipeline/finish", {"pipelineMeta": pipeline, "status": "completed"}),
    ]:
        assert client.post(path, json=body).status_code < 300
    html = client.get("/runs/seed-run").text
    bars = re.findall(r'<rect class="bar (\w+)" data-key="([^"]+)"', html)
    assert bars == [("completed", "demo"), ("completed", "demo.child")]
    assert "<title>demo.child\ncompleted · 100.0 ms" in html
    panel = client.get(
        "/runs/seed-run", params={"step": "demo.child"}, headers={**HTMX, "HX-Target": "step_panel"}
    ).text
    assert ("&#34;n&#34;: 2" in panel, "1,\n  2" in panel) == (True, True)
    overview = table_rows(client.get("/").text)
    assert [row[:5] for row in overview] == [["demo", "1", "0", "0", "0.0 %"]]


def test_user_supplied_text_is_escaped(client: Client) -> None:
    """A step named like a script tag, and a result holding HTML, are shown as text."""
    name = "<script>alert(1)</script>"
    ingest(client, step_named("evil", name))
    page = client.get("/runs/evil").text
    panel = client.get(
        "/runs/evil", params={"step": name}, headers={**HTMX, "HX-Target": "step_panel"}
    ).text
    assert "<script>alert" not in page + panel
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in panel


def test_unknown_run_is_an_html_404(client: Client) -> None:
    """A run id nobody sent is a 404 page naming it."""
    response = client.get("/runs/nope")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "nope" in response.text


def test_vendored_htmx_and_css_are_served(client: Client) -> None:
    """The pinned htmx and the stylesheet come from this server, never a CDN."""
    htmx = client.get(f"/static/{HTMX_FILE}")
    css = client.get("/static/pipelens.css")
    page = client.get("/").text
    assert (htmx.status_code, css.status_code) == (200, 200)
    assert 'version:"2.0.11"' in htmx.text
    assert "prefers-color-scheme: dark" in css.text
    assert f'<script src="/static/{HTMX_FILE}"' in page
    assert "https://" not in page


def test_times_are_shown_in_the_browsers_zone_with_its_name(client: Client) -> None:
    """The tz cookie chooses the zone; the page names it."""
    ingest(client, recent_run("r1"))
    client.cookies.set("tz", "Asia/Tokyo")
    html = client.get("/runs/r1").text
    assert "Times in Asia/Tokyo" in html
    assert " JST" in html


@pytest.fixture
def guarded(database_url: str) -> Iterator[Client]:
    """A client of an app started with a token."""
    with TestClient(
        create_app(Settings(database_url=database_url, token=TOKEN)), base_url=LOCAL
    ) as test_client:
        yield test_client


def test_pages_need_a_login_when_a_token_is_set(guarded: Client) -> None:
    """Without a session a page redirects to /login (htmx: HX-Redirect); static files stay open."""
    page = guarded.get("/pipelines/rag/runs?range=1h", follow_redirects=False)
    fragment = guarded.get("/runs/r1", headers=HTMX, follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (
        303,
        "/login?next=%2Fpipelines%2Frag%2Fruns%3Frange%3D1h",
    )
    assert (fragment.status_code, fragment.headers["hx-redirect"]) == (
        401,
        "/login?next=%2Fruns%2Fr1",
    )
    assert guarded.get("/static/pipelens.css").status_code == 200


def _log_in(client: Client, token: str = TOKEN, target: str = "/") -> httpx.Response:
    data = {"token": token, "next": target, "csrf_token": form_token(client, "/login")}
    return client.post("/login", data=data, follow_redirects=False)


def test_login_sets_an_httponly_strict_cookie_holding_a_random_session(guarded: Client) -> None:
    """The right token logs in and returns to the page; the cookie is neither the token nor
    derived from it (two logins get two sessions)."""
    wrong = _log_in(guarded, "guess")
    assert wrong.status_code == 401
    assert "not the server" in wrong.text
    right = _log_in(guarded, target="/runs/r1")
    assert (right.status_code, right.headers["location"]) == (303, "/runs/r1")
    cookie = right.headers["set-cookie"]
    assert TOKEN not in cookie
    assert ("httponly" in cookie.lower(), "samesite=strict" in cookie.lower()) == (True, True)
    assert guarded.get("/", follow_redirects=False).status_code == 200
    first = guarded.cookies[COOKIE]
    _log_in(guarded)
    assert first != guarded.cookies[COOKIE]


def test_logout_ends_the_session(guarded: Client) -> None:
    """After 'Log out' the pages ask for the token again."""
    _log_in(guarded)
    page = guarded.get("/", follow_redirects=False)
    assert (page.status_code, 'action="/logout"' in page.text) == (200, True)
    logout = guarded.post(
        "/logout", data={"csrf_token": form_token(guarded, "/")}, follow_redirects=False
    )
    assert logout.status_code == 303
    assert guarded.get("/", follow_redirects=False).status_code == 303


def test_logout_revokes_the_session_on_the_server(guarded: Client) -> None:
    """A copy of the cookie taken before logout opens nothing after it."""
    _log_in(guarded)
    stolen = guarded.cookies[COOKIE]
    guarded.post("/logout", data={"csrf_token": form_token(guarded, "/")})
    guarded.cookies.set(COOKIE, stolen)
    assert guarded.get("/", follow_redirects=False).status_code == 303


def test_a_session_of_another_token_is_refused(database_url: str, guarded: Client) -> None:
    """A server restarted with a new token knows none of the old sessions."""
    _log_in(guarded)
    cookie = guarded.cookies[COOKIE]
    app = create_app(Settings(database_url=database_url, token="another-token"))
    with TestClient(app, base_url=LOCAL) as other:
        other.cookies.set(COOKIE, cookie)
        assert other.get("/", follow_redirects=False).status_code == 303


def test_failed_logins_are_limited_per_address(guarded: Client) -> None:
    """After 5 wrong tokens in a minute even the right one gets 429 with Retry-After."""
    assert [_log_in(guarded, "guess").status_code for _ in range(5)] == [401] * 5
    refused = _log_in(guarded)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "Too many wrong tokens" in refused.text
    assert COOKIE not in guarded.cookies


def test_a_login_that_failed_fewer_times_than_the_limit_succeeds(guarded: Client) -> None:
    """4 typos, then the right token: logged in, and the count starts again."""
    for _ in range(4):
        _log_in(guarded, "typo")
    assert _log_in(guarded).status_code == 303
    assert [_log_in(guarded, "typo").status_code for _ in range(4)] == [401] * 4


@pytest.mark.parametrize("path", ["/login", "/logout"])
def test_login_and_logout_need_the_forms_csrf_token(guarded: Client, path: str) -> None:
    """A POST without the form's token is a 403 page saying to reload; no session is opened."""
    response = guarded.post(path, data={"token": TOKEN, "next": "/"}, follow_redirects=False)
    assert response.status_code == 403
    assert "reload the page" in response.text
    assert "text/html" in response.headers["content-type"]
    assert COOKIE not in guarded.cookies


def test_a_forged_session_cookie_is_refused(guarded: Client) -> None:
    """A cookie that is no live session (here: the token itself) does not log in."""
    guarded.cookies.set(COOKIE, TOKEN)
    assert guarded.get("/", follow_redirects=False).status_code == 303

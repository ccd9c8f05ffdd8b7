"""The dashboard's small pictures in a real headless Chromium: the runs page's timeline (points
where the data puts them, a click opens its run, a drag filters the list), the overview's
sparklines and totals, the run page's time strip, the step statistics page's histogram and
regressions. Fixtures as in ``test_server_pages_browser.py``; screenshots go to
``tests/output/screenshots/``."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from _browser_kit import TIMEOUT_MS, ingest, shot
from _dashboard_kit import MS, SECOND, at
from _pg_testkit import run_events
from playwright.sync_api import Browser, Page, expect
from test_server_llm_pages import llm_run

pytestmark = pytest.mark.browser

#: The timeline's plot in viewBox units (``_pages._pictures``).
LEFT, RIGHT, TOP, BOTTOM, WIDTH, HEIGHT = 76, 12, 10, 26, 1000, 200


@pytest.fixture
def page(browser: Browser, site: str) -> Iterator[Page]:
    """A fresh tab in Paris's time zone (the zone cookie already set), 1280 px wide."""
    context = browser.new_context(
        timezone_id="Europe/Paris", viewport={"width": 1280, "height": 900}
    )
    context.add_cookies([{"name": "tz", "value": "Europe/Paris", "url": site}])
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    yield tab
    context.close()


def _six_runs(site: str) -> dict[str, tuple[int, int]]:
    """Six runs of ``rag`` 40 s apart, the i-th ``i`` times as long as the first (run-3 fails);
    each one's start and duration."""
    now = time.time_ns()
    runs = {}
    for i in range(1, 7):
        start = now - (250 - i * 40) * SECOND
        ingest(site, at(run_events(f"run-{i}", fail=i == 3), start, i * MS))
        runs[f"run-{i}"] = (start, 300 * i * MS)
    return runs


def test_timeline_points_sit_where_their_runs_are_and_open_them(site: str, page: Page) -> None:
    """Each run is one point: x its start in the range, y its duration against the slowest,
    coloured by status; a click on a point opens its run."""
    runs = _six_runs(site)
    page.goto(f"{site}/pipelines/rag/runs?range=5m")
    chart = page.locator("svg.timeline")
    expect(chart.locator("circle.point")).to_have_count(6)
    lo, hi = (
        int(chart.get_attribute("data-lo-ns") or 0),
        int(chart.get_attribute("data-hi-ns") or 0),
    )
    slowest = max(d for _, d in runs.values())
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    for run_id, (start, duration) in runs.items():
        dot = chart.locator(f'circle[data-run="{run_id}"]')
        cx, cy = float(dot.get_attribute("cx") or 0), float(dot.get_attribute("cy") or 0)
        assert cx == pytest.approx(LEFT + (start - lo) / (hi - lo) * plot_w, abs=0.11)
        assert cy == pytest.approx(TOP + plot_h - duration / slowest * plot_h, abs=0.11)
    expect(chart.locator("circle.point.failed")).to_have_count(1)
    expect(chart.locator('circle.point.failed[data-run="run-3"]')).to_have_count(1)
    expect(chart).to_have_accessible_description(
        re.compile(r"^6 runs from .*, 1 failed; slowest 1,800\.0 ms")
    )
    shot(page, "runs-timeline")
    chart.locator('circle[data-run="run-4"]').click()
    expect(page).to_have_url(f"{site}/runs/run-4")


def test_dragging_across_the_timeline_filters_the_list_and_keeps_the_url(
    site: str, page: Page
) -> None:
    """A drag from just before run-2 to just after run-4 shows those three runs alone, with the
    custom range in the URL; a reload shows the same."""
    _six_runs(site)
    page.goto(f"{site}/pipelines/rag/runs?range=5m")
    rows = page.locator("#runs_table tbody tr td:first-child")
    expect(rows).to_have_count(6)
    chart = page.locator("svg.timeline")
    expect(chart.locator("circle.point")).to_have_count(6)
    a = chart.locator('circle[data-run="run-2"]').bounding_box()
    b = chart.locator('circle[data-run="run-4"]').bounding_box()
    box = chart.bounding_box()
    assert a is not None
    assert b is not None
    assert box is not None
    y = box["y"] + box["height"] * 0.05  # above every point: the drag starts on no link
    page.mouse.move(a["x"] - 20, y)
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] + 20, y, steps=8)
    page.mouse.up()
    expect(page).to_have_url(re.compile(r"range=custom&from=[^&]+&to=[^&]+"))
    expect(rows).to_have_text(["run-4", "run-3", "run-2"])
    expect(chart.locator("circle.point")).to_have_count(3)
    shot(page, "runs-timeline-brushed")
    page.reload()
    expect(rows).to_have_text(["run-4", "run-3", "run-2"])
    expect(page.locator("#range")).to_have_value("custom")


def test_the_timeline_brush_works_with_the_keyboard_alone(site: str, page: Page) -> None:
    """Tab reaches the chart; Home, 19 arrow steps of a fiftieth and 17 with Shift pick 38 % to
    72 % of the range (run-2 to run-4 of 30 % ... 97 %), drawn as the brush and told in the live
    line; Escape drops a pick (Enter then does nothing); Enter applies one: the list shows those
    three runs, the URL keeps the custom range, and the focus is back on the redrawn chart."""
    _six_runs(site)
    page.goto(f"{site}/pipelines/rag/runs?range=5m")
    rows = page.locator("#runs_table tbody tr td:first-child")
    expect(rows).to_have_count(6)
    chart = page.locator("svg.timeline")
    expect(chart.locator("circle.point")).to_have_count(6)
    for _ in range(60):
        if page.evaluate("document.activeElement.matches('svg.timeline')"):
            break
        page.keyboard.press("Tab")
    expect(chart).to_be_focused()
    brush = chart.locator(".brush")
    status = page.locator(".brush-status")
    page.keyboard.press("Home")
    page.keyboard.press("Shift+ArrowRight")
    expect(status).to_have_text(re.compile(r"^Picked .* Enter shows its runs, Escape clears\.$"))
    page.keyboard.press("Escape")
    expect(status).to_have_text(re.compile(r"^At "))
    page.keyboard.press("Enter")  # nothing picked: nothing applied
    expect(page).to_have_url(f"{site}/pipelines/rag/runs?range=5m")
    plot_w = WIDTH - LEFT - RIGHT
    page.keyboard.press("Home")
    for _ in range(19):
        page.keyboard.press("ArrowRight")
    for _ in range(17):
        page.keyboard.press("Shift+ArrowRight")
    assert float(brush.get_attribute("x") or 0) == pytest.approx(LEFT + 0.38 * plot_w)
    assert float(brush.get_attribute("width") or 0) == pytest.approx(0.34 * plot_w)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"range=custom&from=[^&]+&to=[^&]+"))
    expect(rows).to_have_text(["run-4", "run-3", "run-2"])
    expect(chart.locator("circle.point")).to_have_count(3)
    expect(chart).to_be_focused()
    shot(page, "runs-timeline-keyboard")


def _in_bucket(now: int, index: int, range_s: int = 3600, buckets: int = 24) -> int:
    """A start time in the middle of the ``index``-th sparkline bucket of a range ending now."""
    width = range_s * SECOND // buckets
    return now - range_s * SECOND + index * width + width // 2


def test_overview_sparklines_stack_failures_totals_add_up_and_it_refreshes_live(
    site: str, page: Page
) -> None:
    """Per pipeline, a bar per time bucket with runs (one scale for all rows), its failures
    stacked in red on top, and a p95 point per bucket; the totals line counts the range's runs,
    failures and LLM cost; a run sent meanwhile shows up without a reload."""
    now = time.time_ns()
    ingest(site, at(run_events("a1"), _in_bucket(now, 10), MS))
    ingest(site, at(run_events("a2", fail=True), _in_bucket(now, 10) + SECOND, MS))
    ingest(site, at(run_events("a3"), _in_bucket(now, 20), 2 * MS))
    ingest(site, at(run_events("b1", "etl"), _in_bucket(now, 20), MS))
    ingest(site, llm_run("rag", [("gpt-4o", "gpt-4o-2024-08-06", 1_200, 0, 80)], ago_s=1200))
    page.goto(f"{site}/?range=1h")
    totals = page.locator(".totals strong")
    expect(totals).to_have_text(["5", "1", "$0.0038"])
    rag = page.locator("tr", has=page.get_by_role("link", name="rag", exact=True))
    runs = rag.locator('svg[data-kind="runs"]')
    expect(runs).to_have_accessible_name("Runs of rag over the range")
    # Bucket 10: one completed run (green, bottom half) and one failed (red, top half); the
    # busiest bucket of all rows holds 2 runs, so one run is half the 28 px height.
    slot = 144 / 24
    bars = [
        (r.get_attribute("class"), *(float(r.get_attribute(a) or 0) for a in ("x", "y", "height")))
        for r in runs.locator("rect").all()
    ]
    assert [(c, round(x / slot), y, h) for c, x, y, h in bars[:2]] == [
        ("ok", 10, 14.0, 14.0),
        ("failed", 10, 0.0, 14.0),
    ]
    assert [c for c, *_ in bars] == ["ok", "failed", "ok", "ok"]  # bucket 20: a3 and the LLM run
    expect(runs.locator("rect.failed title")).to_have_text([re.compile(r": 2 runs, 1 failed$")])
    p95 = rag.locator('svg[data-kind="p95"] circle.mark')
    expect(p95).to_have_count(3)
    etl = page.locator("tr", has=page.get_by_role("link", name="etl", exact=True))
    expect(etl.locator('svg[data-kind="runs"] rect')).to_have_count(1)
    shot(page, "overview-sparklines")
    page.emulate_media(color_scheme="dark")
    shot(page, "overview-sparklines-dark")
    page.emulate_media(color_scheme="light")
    ingest(site, at(run_events("b2", "etl", fail=True), _in_bucket(now, 22), MS))
    expect(totals).to_have_text(["6", "2", "$0.0038"])  # the poll, no reload
    expect(etl.locator('svg[data-kind="runs"] rect.failed')).to_have_count(1)


def test_step_histogram_bars_and_the_change_against_the_previous_period(
    site: str, page: Page
) -> None:
    """Beside the time series, a bar per duration bin holding the steps of that duration (three
    of 200 ms in the first bin, one of 600 ms in the last); above, this hour's p50 and p95
    against the hour before, a slowdown marked."""
    now = time.time_ns()
    for i, scale in enumerate((2, 2, 2, 6)):
        ingest(site, at(run_events(f"now-{i}"), now - (600 + i * 60) * SECOND, scale * MS))
    for i in range(2):
        ingest(site, at(run_events(f"before-{i}"), now - (4000 + i * 60) * SECOND, MS))
    page.goto(f"{site}/pipelines/rag/steps/answer.retrieve?range=1h")
    chart = page.get_by_role(
        "img", name="Durations of answer.retrieve: how many steps took how long"
    )
    bars = chart.locator("rect")
    expect(bars).to_have_count(2)
    left, slot, plot_h = 56, (420 - 56 - 8) / 24, 200 - 10 - 26
    drawn = [
        (
            round((float(b.get_attribute("x") or 0) - 0.5 - left) / slot),
            float(b.get_attribute("height") or 0),
        )
        for b in bars.all()
    ]
    assert drawn == [(0, plot_h), (23, round(plot_h / 3, 2))]
    expect(bars.first.locator("title")).to_have_text("200.0 ms to 216.7 ms: 3 steps, 0 failed")
    expect(chart).to_have_accessible_description(
        re.compile(r"^4 finished steps from 200\.0 ms to 600\.0 ms")
    )
    changes = page.locator("#changes li")
    expect(changes.nth(0)).to_have_text(
        re.compile(r"p50 200\.0 ms against 100\.0 ms:\s+\+100\.0 % slower")
    )
    expect(changes.nth(1)).to_have_text(
        re.compile(r"p95 540\.0 ms against 100\.0 ms:\s+\+440\.0 % slower")
    )
    expect(changes.locator(".worse")).to_have_count(2)
    shot(page, "step-stats-histogram")


def test_run_strip_splits_the_time_by_kind_and_shows_the_llm_cost(site: str, page: Page) -> None:
    """A 300 ms run whose root waits 100 ms between a 100 ms step and a 100 ms LLM call: three
    equal parts, each its width of the strip; a run with a priced LLM call names its cost."""
    ingest(site, at(run_events("split"), time.time_ns() - 30 * SECOND, MS))
    page.goto(f"{site}/runs/split")
    strip = page.get_by_role("img", name="Step time by kind")
    parts = strip.locator("rect")
    expect(parts).to_have_count(3)
    drawn = [
        (
            p.get_attribute("data-kind"),
            float(p.get_attribute("x") or 0),
            float(p.get_attribute("width") or 0),
        )
        for p in parts.all()
    ]
    assert drawn == [("llm", 0, 33.33), ("steps", 33.33, 33.33), ("idle", 66.66, 33.33)]
    expect(strip).to_have_accessible_description(
        "LLM calls 100.0 ms (33.3 %); other steps 100.0 ms (33.3 %); "
        "in parents, no child running 100.0 ms (33.3 %)."
    )
    shot(page, "run-strip")
    llm = llm_run("rag", [("gpt-4o", "gpt-4o-2024-08-06", 1_200, 0, 80)], ago_s=20)
    ingest(site, llm)
    page.goto(f"{site}/runs/{llm[0].run_id}")
    expect(page.locator(".time-strip figcaption")).to_have_text(
        "Where the time went · LLM cost $0.0038"
    )

"""A run too big to draw whole: it starts collapsed, subtrees open and close, the poll keeps the
view and asks less often."""

from __future__ import annotations

import re
import time

import msgspec
import pytest
from _dashboard_kit import MS, ingest
from litestar import Litestar
from litestar.testing import TestClient

from pipelens.events import Event, RunStarted, StepFinished, StepStarted
from pipelens_server._pages import _gantt, _runs

Client = TestClient[Litestar]
HTMX_LIVE = {"HX-Request": "true", "HX-Target": "run_live"}
CHILDREN = 40
BUDGET = 10


def _wide_run(run_id: str) -> list[Event]:
    """A running run: a root step ``loop`` (still running) with CHILDREN finished children."""
    start = time.time_ns() - 5_000 * MS
    events: list[Event] = [
        RunStarted(run_id=run_id, pipeline="etl", start_ns=start),
        StepStarted(run_id=run_id, step_id="root", key="loop", name="loop", start_ns=start),
    ]
    for i in range(CHILDREN):
        key, begin = f"loop.item___{i}", start + i * MS
        fields = {"run_id": run_id, "step_id": f"s{i}", "parent_id": "root", "key": key}
        events.append(StepStarted(**fields, name="item", start_ns=begin))
        events.append(
            StepFinished(
                **fields,
                name="item",
                start_ns=begin,
                end_ns=begin + MS,
                duration_ns=MS,
                status="completed",
            )
        )
    return events


@pytest.fixture(autouse=True)
def _small_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget of BUDGET rows, so that a run of CHILDREN steps counts as big."""
    monkeypatch.setattr(_gantt, "ROW_BUDGET", BUDGET)


def _bars(html: str) -> list[str]:
    return re.findall(r'<rect class="bar \w+(?: growing)?" data-key="([^"]+)"', html)


def _toggle(html: str) -> tuple[str, str]:
    found = re.search(r'<a class="toggle" href="([^"]+)"[^>]*aria-label="([^"]+)"', html)
    assert found is not None, html
    return found.group(1).replace("&amp;", "&"), found.group(2)


def test_a_big_run_starts_collapsed_and_says_how_much_is_hidden(client: Client) -> None:
    """A root whose children exceed the budget is one row with an Expand toggle and a count."""
    ingest(client, _wide_run("wide"))
    html = client.get("/runs/wide").text
    assert _bars(html) == ["loop"]
    assert _toggle(html) == ("/runs/wide?expand=loop", "Expand loop")
    assert f'<span class="muted">+{CHILDREN}</span>' in html
    assert f"{CHILDREN + 1} steps, 1 shown" in html


def test_the_toggle_opens_the_subtree_and_the_poll_keeps_it_open(client: Client) -> None:
    """Following Expand draws every child; the live part then polls the expanded view, and its
    toggle collapses the subtree again."""
    ingest(client, _wide_run("wide"))
    opened = client.get("/runs/wide", params={"expand": "loop"}, headers=HTMX_LIVE)
    assert (opened.status_code, "<html" in opened.text) == (200, False)
    assert _bars(opened.text) == ["loop", *(f"loop.item___{i}" for i in range(CHILDREN))]
    assert 'id="run_live" hx-get="/runs/wide?expand=loop"' in opened.text
    assert _toggle(opened.text) == ("/runs/wide?collapse=loop", "Collapse loop")
    closed = client.get("/runs/wide", params={"collapse": "loop"}, headers=HTMX_LIVE)
    assert _bars(closed.text) == ["loop"]


def test_the_selected_step_is_shown_even_inside_a_collapsed_subtree(client: Client) -> None:
    """Opening ``?step=`` of a hidden step opens its ancestors, so its row and bar are there."""
    ingest(client, _wide_run("wide"))
    html = client.get("/runs/wide", params={"step": f"loop.item___{CHILDREN - 1}"}).text
    assert f"loop.item___{CHILDREN - 1}" in _bars(html)


def test_a_huge_running_run_polls_less_often(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past LARGE_RUN_STEPS steps the live part polls every LARGE_RUN_POLL_S seconds, not 2."""
    ingest(client, _wide_run("wide"))
    small = client.get("/runs/wide").text
    monkeypatch.setattr(_runs, "LARGE_RUN_STEPS", CHILDREN)
    huge = client.get("/runs/wide").text
    assert 'hx-trigger="every 2s"' in small
    assert f'hx-trigger="every {_runs.LARGE_RUN_POLL_S}s"' in huge


def test_a_long_loop_shows_its_ends_and_a_gap_that_shows_all(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past CHILD_CAP children the root opens with its first and last ones and a gap row whose
    link shows every child, and the poll then keeps showing them all."""
    monkeypatch.setattr(_gantt, "ROW_BUDGET", 20)
    monkeypatch.setattr(_gantt, "CHILD_CAP", 10)
    ingest(client, _wide_run("wide"))
    html = client.get("/runs/wide").text
    ends = [*range(5), *range(CHILDREN - 5, CHILDREN)]
    assert _bars(html) == ["loop", *(f"loop.item___{i}" for i in ends)]
    gap = re.search(r'<a class="toggle" href="([^"]+)"[^>]*>… (\d+) more steps: show all', html)
    assert gap is not None, html
    assert (gap.group(1), gap.group(2)) == ("/runs/wide?all=loop", str(CHILDREN - 10))
    assert f"{CHILDREN + 1} steps, 11 shown" in html
    whole = client.get("/runs/wide", params={"all": "loop"}, headers=HTMX_LIVE).text
    assert len(_bars(whole)) == CHILDREN + 1
    assert 'id="run_live" hx-get="/runs/wide?all=loop"' in whole


def test_the_critical_path_is_read_and_marked_even_inside_a_gap(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop whose middle child ends last: its bar is read (though in the gap between the
    first and last children shown), outlined, and named by the text alternative."""
    monkeypatch.setattr(_gantt, "ROW_BUDGET", 20)
    monkeypatch.setattr(_gantt, "CHILD_CAP", 10)
    events = _wide_run("wide")
    slow = next(e for e in events if isinstance(e, StepFinished) and e.key == "loop.item___20")
    events[events.index(slow)] = msgspec.structs.replace(
        slow, end_ns=slow.start_ns + 4_000 * MS, duration_ns=4_000 * MS
    )
    ingest(client, events)
    html = client.get("/runs/wide").text
    assert "loop.item___20" in _bars(html)
    critical = re.findall(
        r'<rect class="bar [^"]+" data-key="([^"]+)"[^>]* data-critical="true"', html
    )
    assert critical == ["loop", "loop.item___20"]
    assert '<span class="critical-step">loop.item___20 (4,000.0 ms)</span>' in html

"""Helpers for the dashboard tests: runs at chosen times, and tables read back from HTML."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from html.parser import HTMLParser
from typing import Any

import msgspec
from _pg_testkit import MSGPACK, T0, msgpack_body, run_events
from litestar import Litestar
from litestar.testing import TestClient

from pipelens.events import Event, RunFinished, RunStarted, StepFinished, StepStarted

SECOND = 1_000_000_000
MS = 1_000_000


def at(events: Sequence[Event], start_ns: int, scale: int = 1) -> list[Event]:
    """``events`` (built at ``T0``) moved so that the run starts at ``start_ns``, their times
    after the start and their durations multiplied by ``scale``."""
    moved = []
    for event in events:
        fields = {
            name: start_ns + (getattr(event, name) - T0) * scale
            for name in ("start_ns", "end_ns")
            if getattr(event, name, None) is not None
        }
        if (duration := getattr(event, "duration_ns", None)) is not None:
            fields["duration_ns"] = duration * scale
        moved.append(msgspec.structs.replace(event, **fields))
    return moved


def recent_run(
    run_id: str, pipeline: str = "rag", *, fail: bool = False, ago_s: float = 60
) -> list[Event]:
    """A finished run that started ``ago_s`` seconds ago and took 300 ms: a root step and two
    children of 100 ms (retrieve at +10 ms, rerank at +120 ms; rerank fails when ``fail``)."""
    start = time.time_ns() - int(ago_s * SECOND)
    return at(run_events(run_id, pipeline, fail=fail), start, scale=MS)


def running_run(run_id: str, pipeline: str = "rag") -> tuple[list[Event], list[Event]]:
    """A run started 3 s ago: the events of it running (root step and first child started),
    and the events that finish it."""
    events = recent_run(run_id, pipeline, ago_s=3)
    return events[:3], events[3:]


def step_named(run_id: str, name: str) -> list[Event]:
    """A finished one-step run whose step is called ``name``."""
    start = time.time_ns() - SECOND
    return [
        StepStarted(run_id=run_id, step_id="s1", key=name, name=name, start_ns=start),
        StepFinished(
            run_id=run_id,
            step_id="s1",
            key=name,
            name=name,
            start_ns=start,
            end_ns=start + 5,
            duration_ns=5,
            status="completed",
            result='"<b>bold</b>"',
        ),
    ]


def form_token(client: TestClient[Litestar], page: str = "/settings") -> str:
    """The CSRF token of ``page``'s forms (the client keeps the cookie that goes with it)."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(page).text)
    assert match is not None, f"{page} has no form with a CSRF token"
    return match.group(1)


def with_who(events: list[Event], *, started: bool = True, **who: Any) -> list[Event]:
    """``events`` with ``who`` (``tags``, ``user_id``, ``session_id``, ``attributes``) on the
    run's finish, and on its start unless ``started=False`` (what a client sets mid-run)."""
    out = []
    for event in events:
        if isinstance(event, RunFinished) or (started and isinstance(event, RunStarted)):
            event = msgspec.structs.replace(event, **who)
        out.append(event)
    return out


def ingest(client: TestClient[Litestar], events: Sequence[Event]) -> None:
    """Store ``events`` through the ingest API."""
    response = client.post("/api/v1/events", content=msgpack_body(events), headers=MSGPACK)
    assert response.status_code == 202, response.text


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append([])
        elif tag == "td" and self._in_body:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_rows(html: str) -> list[list[str]]:
    """The text of every body cell of every table in ``html``, row by row."""
    parser = _Tables()
    parser.feed(html)
    return parser.rows

"""Litestar: the plugin (or the middleware) makes each request one run, through a real app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar, get
from litestar.background_tasks import BackgroundTask
from litestar.exceptions import NotFoundException
from litestar.middleware import DefineMiddleware
from litestar.params import FromPath
from litestar.response import Stream
from litestar.testing import TestClient

import pipelens
import pipelens.litestar
from pipelens.events import RunFinished, StepFinished
from pipelens.testing import CapturedEvents


@pipelens.step
def score(tag: str) -> str:
    return tag


@pipelens.step
async def fetch(tag: str) -> str:
    for _ in range(3):  # let concurrent requests interleave
        await asyncio.sleep(0)
    return score(tag)


@get("/sync/{tag:str}", sync_to_thread=True)
def sync_handler(tag: FromPath[str]) -> str:
    return score(tag)


@get("/async/{tag:str}")
async def async_handler(tag: FromPath[str]) -> str:
    return await fetch(tag)


@get("/later", background=BackgroundTask(score, "task"))
async def later() -> str:
    return "accepted"


@get("/stream")
async def stream() -> Stream:
    async def body() -> AsyncIterator[str]:
        for i in range(3):
            yield await fetch(f"c{i}")

    return Stream(body())


@get("/missing")
async def missing() -> None:
    raise NotFoundException("no such item")


@get("/boom", sync_to_thread=False)
def boom() -> None:
    score("before")
    raise RuntimeError("handler broke")


HANDLERS = [sync_handler, async_handler, later, stream, missing, boom]


def records(step: StepFinished) -> dict[str, Any]:
    return {} if step.records is None else dict(msgspec.json.decode(step.records))


def root_of(events: CapturedEvents, run: RunFinished) -> StepFinished:
    return next(s for s in events.steps(run.run_id) if s.parent_id is None)


def test_the_plugin_makes_each_request_a_run_named_after_its_route(
    events: CapturedEvents,
) -> None:
    """Sync and async handlers, a background task and a stream's body nest in their request's
    run, named after its method and route; the root records method, path, route and status."""
    app = Litestar(HANDLERS, plugins=[pipelens.litestar.PipelensPlugin()])
    with TestClient(app) as client:
        assert [client.get(p).text for p in ("/sync/a", "/async/b", "/later", "/stream")] == [
            "a",
            "b",
            "accepted",
            "c0c1c2",
        ]
    assert {r.pipeline: sorted(s.key for s in events.steps(r.run_id)) for r in events.runs()} == {
        "GET /sync/{tag}": ["GET /sync/{tag}", "GET /sync/{tag}.score"],
        "GET /async/{tag}": [
            "GET /async/{tag}",
            "GET /async/{tag}.fetch",
            "GET /async/{tag}.fetch.score",
        ],
        "GET /later": ["GET /later", "GET /later.score"],
        "GET /stream": [
            "GET /stream",
            "GET /stream.fetch",
            "GET /stream.fetch.score",
            "GET /stream.fetch___1",
            "GET /stream.fetch___1.score",
            "GET /stream.fetch___2",
            "GET /stream.fetch___2.score",
        ],
    }
    assert records(root_of(events, events.runs()[0])) == {
        "http.method": "GET",
        "http.path": "/sync/a",
        "http.route": "/sync/{tag}",
        "http.status_code": 200,
    }


def test_errors_keep_litestar_responses_and_mark_the_run(events: CapturedEvents) -> None:
    """A 404 completes the run with its status, a handler's exception fails it with 500, and
    the responses are those of the same app without PipeLens."""

    def responses(app: Litestar) -> list[tuple[int, str]]:
        with TestClient(app) as client:
            return [(r.status_code, r.text) for r in (client.get("/missing"), client.get("/boom"))]

    plain = responses(Litestar(HANDLERS))
    traced = responses(Litestar(HANDLERS, plugins=[pipelens.litestar.PipelensPlugin("err")]))
    assert traced == plain
    missing_run, boom_run = [r for r in events.runs() if r.pipeline == "err"]
    assert [
        (r.status, records(root_of(events, r))["http.status_code"]) for r in (missing_run, boom_run)
    ] == [("completed", 404), ("failed", 500)]
    assert sorted(s.key for s in events.steps(boom_run.run_id)) == ["err", "err.score"]


async def test_twenty_concurrent_requests_never_mix(events: CapturedEvents) -> None:
    """20 requests at once, through the middleware named by ``DefineMiddleware``: each run
    holds only the steps its own request called."""
    app = Litestar(
        HANDLERS,
        middleware=[DefineMiddleware(pipelens.litestar.PipelensMiddleware, pipeline="tags")],  # type: ignore[arg-type]
    )
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        paths = [f"/{'async' if i % 2 else 'sync'}/t{i}" for i in range(20)]
        bodies = [r.text for r in await asyncio.gather(*(client.get(p) for p in paths))]
    assert bodies == [f"t{i}" for i in range(20)]
    assert len(events.runs()) == 20
    for run in events.runs():
        tag = records(root_of(events, run))["http.path"].rsplit("/", 1)[1]
        started = [s for s in events.steps_started(run.run_id) if s.parent_id is not None]
        assert [msgspec.json.decode(s.inputs or "")["tag"] for s in started] == [tag] * len(started)
        assert len(started) >= 1


def test_a_bad_pipeline_name_is_refused_with_the_value() -> None:
    """The plugin refuses a pipeline name that is not a non-empty string."""
    with pytest.raises(pipelens.ConfigurationError, match="got ''"):
        pipelens.litestar.PipelensPlugin("")

"""FastAPI: one run per request, through a real app (TestClient, httpx.AsyncClient, raw ASGI).

Every ``@step`` a request calls — in an async or sync handler or dependency, a background task,
or the body of a ``StreamingResponse`` — lands in that request's run, and nowhere else.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import httpx
import msgspec
import pytest
from fastapi import (
    BackgroundTasks,
    Depends,
    FastAPI,
    HTTPException,
    Request,
    Response,
    WebSocket,
)
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient

import pipelens
import pipelens.fastapi
from pipelens.events import RunFinished, StepFinished
from pipelens.testing import CapturedEvents

_WAIT = 10.0  # seconds a wait lasts before the test fails instead of hanging


@pipelens.step
def score(tag: str) -> str:
    return tag


@pipelens.step
async def fetch(tag: str) -> str:
    for _ in range(3):  # let concurrent requests interleave
        await asyncio.sleep(0)
    return score(tag)


def records(step: StepFinished) -> dict[str, Any]:
    """A finished step's records as Python values."""
    return {} if step.records is None else msgspec.json.decode(step.records)


def root_of(events: CapturedEvents, run: RunFinished) -> StepFinished:
    return next(s for s in events.steps(run.run_id) if s.parent_id is None)


def keys_by_run(events: CapturedEvents) -> dict[str, list[str]]:
    """Each finished run's pipeline name and its steps' keys, sorted."""
    return {r.pipeline: sorted(s.key for s in events.steps(r.run_id)) for r in events.runs()}


def tag_app() -> FastAPI:
    """An app whose every route calls steps with the request's tag as their argument."""
    app = FastAPI()

    def sync_dependency(tag: str) -> str:
        return score(tag)

    async def async_dependency(tag: str) -> str:
        return await fetch(tag)

    @app.get(
        "/async/{tag}",
        dependencies=[Depends(pipelens.fastapi.run()), Depends(async_dependency)],
    )
    async def async_handler(tag: str) -> str:
        return await fetch(tag)

    @app.get(
        "/sync/{tag}", dependencies=[Depends(pipelens.fastapi.run()), Depends(sync_dependency)]
    )
    def sync_handler(tag: str) -> str:
        return score(tag)

    return app


def assert_steps_belong_to_their_request(events: CapturedEvents, expected_runs: int) -> None:
    """Every step of every run was called with the tag of that run's request path."""
    runs = events.runs()
    assert expected_runs == len(runs)
    for run in runs:
        tag = str(records(root_of(events, run))["http.path"]).rsplit("/", 1)[1]
        children = [s for s in events.steps_started(run.run_id) if s.parent_id is not None]
        assert len(children) >= 2
        assert [tag] * len(children) == [
            msgspec.json.decode(s.inputs or "")["tag"] for s in children
        ]
        assert len(children) + 1 == len(events.steps(run.run_id))


# --- the dependency -----------------------------------------------------------------------------


def test_sync_handler_and_sync_dependency_nest_under_the_request_run(
    events: CapturedEvents,
) -> None:
    """A sync handler and a sync dependency (worker threads) call steps of the request's run."""
    with TestClient(tag_app()) as client:
        assert client.get("/sync/a").json() == "a"
    assert keys_by_run(events) == {
        "GET /sync/{tag}": ["GET /sync/{tag}", "GET /sync/{tag}.score", "GET /sync/{tag}.score___1"]
    }


def test_async_handler_and_async_dependency_nest_under_the_request_run(
    events: CapturedEvents,
) -> None:
    """An async handler and an async dependency call steps of the request's run."""
    with TestClient(tag_app()) as client:
        assert client.get("/async/b").json() == "b"
    assert keys_by_run(events) == {
        "GET /async/{tag}": [
            "GET /async/{tag}",
            "GET /async/{tag}.fetch",
            "GET /async/{tag}.fetch.score",
            "GET /async/{tag}.fetch___1",
            "GET /async/{tag}.fetch___1.score",
        ]
    }


def test_method_path_route_and_status_are_records_of_the_root(events: CapturedEvents) -> None:
    """The root step records the request's method, path, route template and status."""
    with TestClient(tag_app()) as client:
        client.get("/sync/x")
    (run,) = events.runs()
    assert records(root_of(events, run)) == {
        "http.method": "GET",
        "http.path": "/sync/x",
        "http.route": "/sync/{tag}",
        "http.status_code": 200,
    }


def test_pipeline_name_and_the_yielded_run(events: CapturedEvents) -> None:
    """``run("qa")`` names the runs "qa" and yields the request's ``Run`` to the handler."""
    app = FastAPI()

    @app.post("/ask", status_code=201)
    def ask(run: Annotated[pipelens.Run, Depends(pipelens.fastapi.run("qa"))]) -> str:
        return run.id

    with TestClient(app) as client:
        response = client.post("/ask")
    (run,) = events.runs()
    assert ("qa", run.run_id, 201) == (run.pipeline, response.json(), response.status_code)
    assert records(root_of(events, run))["http.status_code"] == 201


def test_status_set_on_the_injected_response_is_recorded(events: CapturedEvents) -> None:
    """A status the handler sets on FastAPI's ``Response`` parameter is the one recorded."""
    app = FastAPI(dependencies=[Depends(pipelens.fastapi.run("created"))])

    @app.put("/item")
    def put(response: Response) -> dict[str, bool]:
        response.status_code = 202
        return {"ok": True}

    with TestClient(app) as client:
        assert client.put("/item").status_code == 202
    assert records(root_of(events, events.runs()[0]))["http.status_code"] == 202


async def test_twenty_concurrent_async_requests_never_mix(events: CapturedEvents) -> None:
    """20 requests at once through httpx's ASGI transport: each run holds only its own steps."""
    transport = httpx.ASGITransport(app=tag_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        responses = await asyncio.gather(
            *(client.get(f"/{'async' if i % 2 else 'sync'}/t{i}") for i in range(20))
        )
    assert [f"t{i}" for i in range(20)] == [r.json() for r in responses]
    assert_steps_belong_to_their_request(events, 20)


def test_concurrent_requests_from_threads_never_mix(events: CapturedEvents) -> None:
    """Requests sent from 8 threads through one TestClient: each run holds only its own steps."""
    with TestClient(tag_app()) as client, ThreadPoolExecutor(max_workers=8) as pool:
        paths = [f"/{'async' if i % 2 else 'sync'}/t{i}" for i in range(24)]
        bodies = list(pool.map(lambda path: client.get(path).json(), paths))
    assert [f"t{i}" for i in range(24)] == bodies
    assert_steps_belong_to_their_request(events, 24)


def test_background_tasks_nest_in_the_request_run(events: CapturedEvents) -> None:
    """Sync and async background tasks run after the response, still in the request's run."""
    app = FastAPI()

    @app.get("/later", dependencies=[Depends(pipelens.fastapi.run("later"))])
    def later(tasks: BackgroundTasks) -> str:
        tasks.add_task(score, "sync-task")
        tasks.add_task(fetch, "async-task")
        return "accepted"

    with TestClient(app) as client:
        assert client.get("/later").json() == "accepted"
    assert keys_by_run(events) == {
        "later": ["later", "later.fetch", "later.fetch.score", "later.score"]
    }
    (run,) = events.runs()
    assert run.status == "completed"


def stream_app(route_dependencies: list[Any], middleware: bool, chunks: int = 3) -> FastAPI:
    """An app streaming ``chunks`` chunks, each produced by a step, sync or async."""
    app = FastAPI()
    if middleware:
        app.add_middleware(pipelens.fastapi.PipelensMiddleware, pipeline="stream")

    @app.get("/sync", dependencies=route_dependencies)
    def sync_stream() -> StreamingResponse:
        def body() -> Iterator[str]:
            for i in range(chunks):
                yield score(f"s{i}")

        return StreamingResponse(body())

    @app.get("/async", dependencies=route_dependencies)
    async def async_stream() -> StreamingResponse:
        async def body() -> AsyncIterator[str]:
            for i in range(chunks):
                yield await fetch(f"a{i}")

        return StreamingResponse(body())

    return app


@pytest.mark.parametrize("middleware", [False, True], ids=["dependency", "middleware"])
def test_streaming_response_steps_stay_in_the_run_which_ends_after_the_stream(
    events: CapturedEvents, middleware: bool
) -> None:
    """Steps producing a stream's chunks belong to the run, which finishes after the last one."""
    dependencies = [] if middleware else [Depends(pipelens.fastapi.run("stream"))]
    with TestClient(stream_app(dependencies, middleware)) as client:
        assert client.get("/sync").text == "s0s1s2"
        assert client.get("/async").text == "a0a1a2"
    sync_run, async_run = events.runs()
    assert sorted(s.key for s in events.steps(sync_run.run_id)) == [
        "stream",
        "stream.score",
        "stream.score___1",
        "stream.score___2",
    ]
    assert len(events.steps(async_run.run_id)) == 7
    for run in (sync_run, async_run):
        # the run's end comes after every step it holds ended, in time and in event order
        steps = events.steps(run.run_id)
        assert [True] * len(steps) == [s.end_ns <= run.end_ns for s in steps]
        assert events.events.index(run) > max(events.events.index(s) for s in steps)


async def _stream_until_disconnect(app: FastAPI) -> list[bytes]:
    """Drive ``app`` as an ASGI server would, disconnecting after the second body chunk."""
    chunks: list[bytes] = []
    two_chunks = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await two_chunks.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            chunks.append(message["body"])
            if len(chunks) == 2:
                two_chunks.set()
        await asyncio.sleep(0)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/async",
        "raw_path": b"/async",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), _WAIT)
    return chunks


@pytest.mark.parametrize("middleware", [False, True], ids=["dependency", "middleware"])
async def test_a_client_disconnecting_mid_stream_ends_the_run(
    events: CapturedEvents, middleware: bool
) -> None:
    """A client gone halfway through an endless-looking stream ends the run and its steps."""
    dependencies = [] if middleware else [Depends(pipelens.fastapi.run("stream"))]
    chunks = await _stream_until_disconnect(stream_app(dependencies, middleware, chunks=10_000))
    (run,) = events.runs()
    steps = events.steps(run.run_id)
    assert 2 <= len(chunks) < 10_000
    assert len(steps) < 2 * 10_000
    # every step that started also finished: the one cut off mid-chunk too
    assert {s.step_id for s in events.steps_started(run.run_id)} == {s.step_id for s in steps}
    if middleware:
        assert records(root_of(events, run))["http.client_disconnected"] is True


def error_app(dependency: bool, middleware: bool) -> FastAPI:
    """An app whose routes raise; with or without PipeLens."""
    app = FastAPI(dependencies=[Depends(pipelens.fastapi.run("err"))] if dependency else [])
    if middleware:
        app.add_middleware(pipelens.fastapi.PipelensMiddleware, pipeline="err")

    @app.get("/boom")
    def boom() -> None:
        score("before")
        raise RuntimeError("handler broke")

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(status_code=404, detail="no such item")

    @app.get("/number/{n}")
    def number(n: int) -> int:
        return n

    return app


def _responses(app: FastAPI) -> list[tuple[int, str]]:
    with TestClient(app, raise_server_exceptions=False) as client:
        return [
            (r.status_code, r.text)
            for r in (client.get(p) for p in ("/boom", "/missing", "/number/x"))
        ]


@pytest.mark.parametrize("form", ["dependency", "middleware"])
def test_errors_keep_fastapi_responses_and_mark_the_run(events: CapturedEvents, form: str) -> None:
    """A handler's exception fails the run (status 500); a 404 or 422 completes it with the
    status; FastAPI's error responses are byte for byte those of the same app without PipeLens."""
    traced = error_app(form == "dependency", form == "middleware")
    assert _responses(error_app(False, False)) == _responses(traced)
    # (the app without PipeLens made a run of its own, "score", from its step)
    boom, missing, invalid = [r for r in events.runs() if r.pipeline == "err"]
    assert [
        (r.status, records(root_of(events, r))["http.status_code"])
        for r in (boom, missing, invalid)
    ] == [("failed", 500), ("completed", 404), ("completed", 422)]
    assert boom.error is not None
    assert (boom.error.type, boom.error.message) == ("RuntimeError", "handler broke")
    assert sorted(s.key for s in events.steps(boom.run_id)) == ["err", "err.score"]


def test_a_user_exception_passes_through_unchanged(events: CapturedEvents) -> None:
    """With server exceptions raised (TestClient's default), the handler's own exception
    object reaches the caller."""
    raised = RuntimeError("mine")
    app = FastAPI(dependencies=[Depends(pipelens.fastapi.run("err"))])

    @app.get("/")
    def handler() -> None:
        raise raised

    with TestClient(app) as client, pytest.raises(RuntimeError) as caught:
        client.get("/")
    assert raised is caught.value
    assert [r.status for r in events.runs()] == ["failed"]


# --- the middleware -----------------------------------------------------------------------------


def test_middleware_traces_every_route_named_after_it(events: CapturedEvents) -> None:
    """Without a pipeline name, each request's run is named after its method and route, and the
    status is the one actually sent, even from a response the handler built."""
    app = FastAPI()
    app.add_middleware(pipelens.fastapi.PipelensMiddleware)

    @app.post("/items/{item_id}")
    async def create(item_id: str) -> JSONResponse:
        await fetch(item_id)
        return JSONResponse({"id": item_id}, status_code=201)

    @app.get("/health")
    def health() -> str:
        return score("ok")

    with TestClient(app) as client:
        assert client.post("/items/7").status_code == 201
        assert client.get("/health").status_code == 200
        assert client.get("/nowhere").status_code == 404
    assert keys_by_run(events) == {
        "POST /items/{item_id}": [
            "POST /items/{item_id}",
            "POST /items/{item_id}.fetch",
            "POST /items/{item_id}.fetch.score",
        ],
        "GET /health": ["GET /health", "GET /health.score"],
        "GET <no route>": ["GET <no route>"],
    }
    created = root_of(events, events.runs()[0])
    assert records(created) == {
        "http.method": "POST",
        "http.path": "/items/7",
        "http.route": "/items/{item_id}",
        "http.status_code": 201,
    }
    assert records(root_of(events, events.runs()[2]))["http.status_code"] == 404


async def test_middleware_keeps_twenty_concurrent_requests_apart(events: CapturedEvents) -> None:
    """20 requests at once through the middleware: each run holds only its own steps."""
    app = FastAPI()
    app.add_middleware(pipelens.fastapi.PipelensMiddleware, pipeline="tags")

    @app.get("/tag/{tag}")
    async def handler(tag: str) -> str:
        await fetch(tag)
        return score(tag)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        responses = await asyncio.gather(*(client.get(f"/tag/t{i}") for i in range(20)))
    assert [f"t{i}" for i in range(20)] == [r.json() for r in responses]
    assert_steps_belong_to_their_request(events, 20)


def test_middleware_and_dependency_make_one_run(events: CapturedEvents) -> None:
    """With both, the middleware opens the run and the dependency yields that same run."""
    app = FastAPI()
    app.add_middleware(pipelens.fastapi.PipelensMiddleware, pipeline="both")

    @app.get("/")
    def handler(run: Annotated[pipelens.Run, Depends(pipelens.fastapi.run("ignored"))]) -> str:
        score("x")
        return run.id

    with TestClient(app) as client:
        run_id = client.get("/").json()
    assert [("both", run_id)] == [(r.pipeline, r.run_id) for r in events.runs()]
    assert sorted(s.key for s in events.steps(run_id)) == ["both", "both.score"]


def test_middleware_leaves_lifespan_and_websockets_alone(events: CapturedEvents) -> None:
    """Only HTTP requests become runs: app start-up, shutdown and websockets do not."""
    app = FastAPI()
    app.add_middleware(pipelens.fastapi.PipelensMiddleware, pipeline="web")

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(score("hi"))
        await websocket.close()

    with TestClient(app) as client, client.websocket_connect("/ws") as socket:
        assert socket.receive_text() == "hi"
    # the websocket's step is a run of its own: no "web" run wraps it
    assert [r.pipeline for r in events.runs()] == ["score"]


def test_a_bad_pipeline_name_is_refused_with_the_value() -> None:
    """``run()`` and the middleware refuse a pipeline name that is not a non-empty string."""
    with pytest.raises(pipelens.ConfigurationError, match="got ''"):
        pipelens.fastapi.run("")
    with pytest.raises(pipelens.ConfigurationError, match="got 3"):
        pipelens.fastapi.PipelensMiddleware(FastAPI(), pipeline=3)  # type: ignore[arg-type]


def test_importing_pipelens_imports_neither_fastapi_nor_structlog() -> None:
    """The client package imports integrations' libraries only when their module is imported."""
    code = (
        "import sys, pipelens; "
        "print(sorted(m for m in ('fastapi', 'starlette', 'structlog') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("form", ["dependency", "middleware"])
async def test_the_request_step_does_not_leak_into_the_caller(
    events: CapturedEvents, form: str
) -> None:
    """httpx's ASGI transport runs the app in the caller's task: once the response is back,
    no step is current there, and a step called next is a run of its own."""
    app = tag_app()
    if form == "middleware":
        app.add_middleware(pipelens.fastapi.PipelensMiddleware, pipeline="tags")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get("/async/a")
        await client.get("/sync/b")
    assert pipelens.current_step() is None
    score("alone")
    assert [r.pipeline for r in events.runs()][-1] == "score"


async def test_a_finished_request_run_is_not_kept_alive_by_a_worker_thread(
    events: CapturedEvents,
) -> None:
    """anyio's worker threads, spawned while a request's step is current, do not keep its run
    (and every step of it) alive once the request is over."""
    app = FastAPI(dependencies=[Depends(pipelens.fastapi.run("held"))])
    runs: list[weakref.ref[pipelens.Run]] = []

    @app.get("/")
    def handler() -> str:  # a sync handler: served by an anyio worker thread
        run = pipelens.current_run()
        assert run is not None
        runs.append(weakref.ref(run))
        return threading.current_thread().name

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/")).json() != threading.current_thread().name
        # The worker thread hands the answer back a moment before it lets go of the call's
        # context: give it that moment (a run kept for good still fails after two seconds).
        deadline = time.monotonic() + 2.0
        while True:
            gc.collect()
            if runs[0]() is None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        assert [ref() for ref in runs] == [None]


def test_middleware_fails_the_run_on_a_5xx_answer_and_on_a_stream_breaking(
    events: CapturedEvents,
) -> None:
    """A handled ``HTTPException(503)`` fails the run with its status; a stream raising after
    its first chunk fails the run, which keeps the status that was sent."""
    app = FastAPI()
    app.add_middleware(pipelens.fastapi.PipelensMiddleware, pipeline="fragile")

    @app.get("/busy")
    def busy() -> None:
        raise HTTPException(status_code=503, detail="try later")

    @app.get("/broken-stream")
    def broken_stream() -> StreamingResponse:
        def body() -> Iterator[str]:
            yield score("first")
            raise ValueError("stream broke")

        return StreamingResponse(body())

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/busy").status_code == 503
        assert client.get("/broken-stream").status_code == 200
    busy_run, stream_run = events.runs()
    assert [(r.status, records(root_of(events, r))["http.status_code"]) for r in events.runs()] == [
        ("failed", 503),
        ("failed", 200),
    ]
    assert busy_run.error is not None
    assert "HTTP 503" in busy_run.error.message
    assert stream_run.error is not None
    assert (stream_run.error.type, stream_run.error.message) == ("ValueError", "stream broke")


@pytest.mark.parametrize("form", ["dependency", "middleware"])
def test_a_base_http_middleware_of_the_app_keeps_steps_in_the_run(
    events: CapturedEvents, form: str
) -> None:
    """The app's own ``BaseHTTPMiddleware`` (which runs the app in another task) changes
    nothing: handler, stream and background-task steps stay in the request's run."""
    app = FastAPI(
        dependencies=[Depends(pipelens.fastapi.run("mw"))] if form == "dependency" else []
    )

    @app.middleware("http")
    async def add_header(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["x-checked"] = "1"
        return response

    if form == "middleware":  # outermost: it opens the run before the app's middleware runs
        app.add_middleware(pipelens.fastapi.PipelensMiddleware, pipeline="mw")

    @app.get("/")
    async def handler(tasks: BackgroundTasks) -> StreamingResponse:
        tasks.add_task(score, "task")

        async def body() -> AsyncIterator[str]:
            yield await fetch("chunk")

        return StreamingResponse(body())

    with TestClient(app) as client:
        response = client.get("/")
    assert (response.text, response.headers["x-checked"]) == ("chunk", "1")
    assert keys_by_run(events) == {"mw": ["mw", "mw.fetch", "mw.fetch.score", "mw.score"]}

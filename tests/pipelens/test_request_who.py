"""Who a request's run is for: the FastAPI dependency's, the ASGI middleware's and the Litestar
plugin's ``user_id_header``, ``session_id_header``, ``tags`` and ``identify`` options, through
real apps and their test clients."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from litestar import Litestar, get
from litestar.testing import TestClient as LitestarClient

import pipelens
import pipelens.fastapi
import pipelens.litestar
from pipelens._core import containment
from pipelens.events import MAX_RUN_ID_BYTES, TRUNCATED_MARK
from pipelens.testing import CapturedEvents


@pipelens.step
def work() -> str:
    return "done"


def fastapi_app(**options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/ask", dependencies=[Depends(pipelens.fastapi.run("qa", **options))])
    def ask() -> str:
        return work()

    return app


def test_the_dependency_reads_user_and_session_from_headers(events: CapturedEvents) -> None:
    """``user_id_header``/``session_id_header`` and ``tags``: the run carries the headers' values
    (any case) and the tags; a request without the headers has no user or session."""
    app = fastapi_app(user_id_header="X-User", session_id_header="x-session", tags=["api"])
    with TestClient(app) as client:
        assert client.get("/ask", headers={"x-user": "ana", "X-Session": "conv-1"}).is_success
        assert client.get("/ask").is_success
    first, second = events.runs()
    assert (first.user_id, first.session_id, first.tags) == ("ana", "conv-1", ["api"])
    assert (second.user_id, second.session_id, second.tags) == (None, None, ["api"])


def test_the_dependency_asks_identify_with_the_request(events: CapturedEvents) -> None:
    """``identify`` gets the FastAPI request; its answer wins over the header, its metadata is
    redacted like ``set_run``'s and a long user id is cut with the mark."""

    def identify(request: Request) -> dict[str, Any]:
        return {
            "user_id": request.query_params["u"],
            "tags": ["from-identify"],
            "metadata": {"plan": "pro", "api_key": "sk-hidden"},
        }

    app = fastapi_app(user_id_header="X-User", identify=identify)
    with TestClient(app) as client:
        assert client.get("/ask", params={"u": "bo"}, headers={"X-User": "ana"}).is_success
        assert client.get("/ask", params={"u": "x" * (MAX_RUN_ID_BYTES + 50)}).is_success
    first, second = events.runs()
    assert (first.user_id, first.tags) == ("bo", ["from-identify"])
    assert first.attributes == {"plan": "pro", "api_key": "[REDACTED]"}
    assert second.user_id is not None
    assert second.user_id.endswith(TRUNCATED_MARK)
    assert len(second.user_id.encode()) <= MAX_RUN_ID_BYTES


@pytest.mark.parametrize(
    "identify",
    [
        lambda request: 1 / 0,
        lambda request: {"user": "ana"},
        lambda request: {"tags": "one-str"},
        lambda request: ["not", "a", "dict"],
    ],
    ids=["raises", "unknown-key", "tags-as-str", "not-a-dict"],
)
def test_a_failing_identify_never_breaks_the_request(
    events: CapturedEvents, caplog: pytest.LogCaptureFixture, identify: Any
) -> None:
    """An ``identify`` that raises or answers wrongly: the request is answered, its run is sent
    without that answer, and one warning says why."""
    containment._once._seen.discard("request.identify")
    app = fastapi_app(identify=identify, tags=["kept"])
    with caplog.at_level(logging.WARNING, "pipelens"), TestClient(app) as client:
        assert [client.get("/ask").json() for _ in range(2)] == ["done", "done"]
    assert [(r.status, r.user_id, r.tags) for r in events.runs()] == [
        ("completed", None, ["kept"]),
        ("completed", None, ["kept"]),
    ]
    warnings = [r for r in caplog.records if "identify()" in r.getMessage()]
    assert len(warnings) == 1


def test_the_middleware_takes_the_same_options(events: CapturedEvents) -> None:
    """The pure ASGI middleware reads the headers and gives ``identify`` the ASGI scope."""
    app = FastAPI()
    app.add_middleware(
        pipelens.fastapi.PipelensMiddleware,
        pipeline="web",
        user_id_header="X-User",
        identify=lambda scope: {"session_id": f"path:{scope['path']}"},
    )

    @app.get("/hello")
    def hello() -> str:
        return work()

    with TestClient(app) as client:
        assert client.get("/hello", headers={"X-User": "ana"}).is_success
    (run,) = events.runs()
    assert (run.pipeline, run.user_id, run.session_id) == ("web", "ana", "path:/hello")


def test_the_litestar_plugin_takes_the_same_options(events: CapturedEvents) -> None:
    """``PipelensPlugin(user_id_header=..., tags=...)`` sets them on each request's run."""

    @get("/hello", sync_to_thread=False)
    def hello() -> str:
        return work()

    plugin = pipelens.litestar.PipelensPlugin(user_id_header="X-User", tags=["lite"])
    with LitestarClient(Litestar([hello], plugins=[plugin])) as client:
        assert client.get("/hello", headers={"X-User": "cy"}).is_success
    (run,) = events.runs()
    assert (run.user_id, run.tags) == ("cy", ["lite"])


def test_the_litestar_plugin_takes_tags_from_a_generator_for_every_request(
    events: CapturedEvents,
) -> None:
    """Tags given as a generator are read once, at set-up, and go on every request's run."""

    @get("/hello", sync_to_thread=False)
    def hello() -> str:
        return work()

    plugin = pipelens.litestar.PipelensPlugin(tags=(tag for tag in ["lite", "gen"]))
    with LitestarClient(Litestar([hello], plugins=[plugin])) as client:
        assert client.get("/hello").is_success
        assert client.get("/hello").is_success
    assert [run.tags for run in events.runs()] == [["lite", "gen"], ["lite", "gen"]]


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"user_id_header": ""}, "user_id_header=''"),
        ({"session_id_header": "X: y"}, "session_id_header='X: y'"),
        ({"tags": "api"}, "tags='api'"),
        ({"tags": [3]}, "3"),
        ({"identify": "me"}, "identify='me'"),
    ],
)
def test_bad_options_are_refused_naming_them(options: dict[str, Any], named: str) -> None:
    """Each integration refuses a bad option at set-up, naming it and its value."""
    for make in (
        lambda: pipelens.fastapi.run(**options),
        lambda: pipelens.fastapi.PipelensMiddleware(FastAPI(), **options),
        lambda: pipelens.litestar.PipelensPlugin(**options),
    ):
        with pytest.raises(pipelens.ConfigurationError) as refused:
            make()
        assert named in str(refused.value)

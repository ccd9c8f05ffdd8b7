"""With a token, every /api endpoint needs ``Authorization: Bearer <token>``; probes stay open."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest
from _pg_testkit import LOCAL, MSGPACK, msgpack_body, read_rows, run_events
from litestar import Litestar
from litestar.testing import TestClient

from pipelens_server import Settings, create_app
from pipelens_server._api._auth import token_matches

TOKEN = "s3cret-token"


@pytest.fixture
def guarded(database_url: str) -> Iterator[TestClient[Litestar]]:
    """A client of an app started with a token."""
    with TestClient(
        create_app(Settings(database_url=database_url, token=TOKEN)), base_url=LOCAL
    ) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/events"),
        ("GET", "/api/v1/runs"),
        ("GET", "/api/v1/runs/r1"),
        ("POST", "/api/ingestion/batch"),
        ("POST", "/api/ingestion/pipeline/start"),
        ("POST", "/api/ingestion/step/finish"),
        ("GET", "/api/dashboard/pipelines"),
        ("GET", "/api/dashboard/runs/r1"),
        ("GET", "/api/dashboard/pipelines/p/steps/s/time-series"),
        ("POST", "/api/dashboard/pipelines/p/settings"),
        ("POST", "/api/dashboard/import"),
    ],
)
def test_api_without_the_token_is_a_401(
    guarded: TestClient[Litestar], method: str, path: str
) -> None:
    """Every API endpoint refuses a request with no token, saying how to send one."""
    response = guarded.request(method, path, content=b"[]", headers=MSGPACK)
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["detail"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_wrong_token_is_a_401_and_writes_nothing(
    guarded: TestClient[Litestar], database_url: str
) -> None:
    """A wrong token is refused before the body is read: nothing is stored."""
    response = guarded.post(
        "/api/v1/events",
        content=msgpack_body(run_events("r1")),
        headers={**MSGPACK, "authorization": "Bearer s3cret-tokem"},
    )
    assert response.status_code == 401
    assert read_rows(database_url)["runs"] == []


def test_right_token_is_accepted(guarded: TestClient[Litestar]) -> None:
    """With the token, ingest and reads work as without authentication."""
    auth = {"authorization": f"Bearer {TOKEN}"}
    posted = guarded.post(
        "/api/v1/events", content=msgpack_body(run_events("r1")), headers={**MSGPACK, **auth}
    )
    assert posted.status_code == 202
    assert guarded.get("/api/v1/runs/r1", headers=auth).json()["run"]["run_id"] == "r1"


def test_health_probes_need_no_token(guarded: TestClient[Litestar]) -> None:
    """Load balancers probe without credentials."""
    assert (guarded.get("/healthz").status_code, guarded.get("/readyz").status_code) == (200, 200)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),
        (f"Basic {TOKEN}", False),
        (TOKEN, False),
        ("Bearer ", False),
        (None, False),
        (f"Bearer {TOKEN}x", False),
    ],
)
def test_token_matching(header: str | None, expected: bool) -> None:
    """Only the bearer scheme with the exact token matches."""
    assert token_matches(header, TOKEN) is expected


def test_every_guard_is_a_coroutine_so_no_request_waits_for_a_thread(database_url: str) -> None:
    """Litestar runs a plain function guard in a thread pool, a hop on every request: the token
    guard, the database guard and any other guard of any route are coroutines."""
    app = create_app(Settings(database_url=database_url, token=TOKEN))
    guards = {
        guard.__qualname__: inspect.iscoroutinefunction(guard)
        for route in app.routes
        for handler in getattr(route, "route_handlers", [])
        for guard in handler.resolve_guards()
    }
    assert {"require_database", "require_token"} <= guards.keys()
    assert [name for name, is_coroutine in guards.items() if not is_coroutine] == []

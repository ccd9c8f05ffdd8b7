"""What no page of another site may do: write through the user's browser (CSRF), reach the
server by a rebound DNS name, frame the dashboard; and what every answer says about it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import psycopg
import pytest
from _dashboard_kit import form_token
from _pg_testkit import (
    JSON,
    LOCAL,
    MSGPACK,
    json_body,
    live_server,
    msgpack_body,
    read_rows,
    run_events,
)
from litestar import Litestar
from litestar.testing import TestClient

from pipelens_server import Settings, create_app

Client = TestClient[Litestar]
SEED_START = (
    b'{"name": "seed", "key": "seed", "runId": "s1", "time": {"startTs": 1}, "records": {}}'
)


def _retention(database_url: str) -> int | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT days FROM retention_default").fetchone()
    return None if row is None else int(row[0])


# -- cross-site writes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},  # a page on another port of the same host
        {"origin": "http://127.0.0.1:9999"},
        {"origin": "https://127.0.0.1"},
        {"origin": "null"},
        {"origin": "http://evil.example"},
    ],
)
def test_a_write_from_another_site_changes_no_setting(
    client: Client, database_url: str, headers: dict[str, str]
) -> None:
    """A form another site's page posts to /settings is a 403 saying why; retention stays."""
    before = _retention(database_url)
    response = client.post("/settings", data={"days": "1"}, headers=headers)
    assert response.status_code == 403
    assert "another site" in response.text or "not from this server" in response.text
    assert before == _retention(database_url)


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/api/v1/events", msgpack_body(run_events("r1")), MSGPACK),
        ("/api/v1/events", json_body(run_events("r1")), JSON),
        ("/api/ingestion/pipeline/start", SEED_START, JSON),
        ("/api/ingestion/batch", b"[]", JSON),
    ],
)
def test_ingest_from_another_site_is_refused_and_writes_nothing(
    client: Client, database_url: str, path: str, body: bytes, headers: dict[str, str]
) -> None:
    """An ingest a browser sends from another origin is a 403 and stores nothing."""
    for other in ({"origin": "http://127.0.0.1:8000"}, {"sec-fetch-site": "same-site"}):
        response = client.post(path, content=body, headers={**headers, **other})
        assert response.status_code == 403, response.text
        assert (
            "Origin" in response.json()["detail"] or "Sec-Fetch-Site" in response.json()["detail"]
        )
    assert read_rows(database_url)["runs"] == []


def test_writes_from_this_server_and_from_clients_without_origin_pass(
    client: Client, database_url: str
) -> None:
    """Our own origin, ``Sec-Fetch-Site: same-origin`` or no header at all (SDKs) are accepted."""
    for index, extra in enumerate(
        [
            {},
            {"origin": LOCAL},
            {"origin": "http://127.0.0.1:80"},
            {"sec-fetch-site": "same-origin"},
        ]
    ):
        response = client.post(
            "/api/v1/events",
            content=msgpack_body(run_events(f"r{index}")),
            headers={**MSGPACK, **extra},
        )
        assert response.status_code == 202, response.text
    assert len(read_rows(database_url)["runs"]) == 4


@pytest.mark.parametrize("token", [None, "", "x" * 43])
def test_a_settings_form_without_its_csrf_token_changes_nothing(
    client: Client, database_url: str, token: str | None
) -> None:
    """Same-origin but without the page's token (or with another one): 403, retention stays."""
    form_token(client)  # the browser has its cookie
    before = _retention(database_url)
    data = {"days": "1"} if token is None else {"days": "1", "csrf_token": token}
    response = client.post("/settings", data=data, headers={"origin": LOCAL})
    assert response.status_code == 403
    assert "reload the page" in response.text
    assert "text/html" in response.headers["content-type"]
    assert before == _retention(database_url)


def test_a_settings_form_with_its_csrf_token_is_saved(client: Client, database_url: str) -> None:
    """The page's own form, from our origin, still saves."""
    data = {"days": "9", "csrf_token": form_token(client)}
    response = client.post(
        "/settings", data=data, headers={"origin": LOCAL}, follow_redirects=False
    )
    assert response.status_code == 303
    assert _retention(database_url) == 9


def test_an_import_without_its_csrf_token_imports_nothing(
    client: Client, database_url: str
) -> None:
    """``/import`` checks the form's token before reading any file."""
    upload = ("run.jsonl", json_body(run_events("imp")), "application/json")
    response = client.post("/import", files=[("files", upload)])
    assert response.status_code == 403
    assert read_rows(database_url)["runs"] == []


# -- Host (DNS rebinding) ---------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:3000", "127.0.0.1.evil.example"])
def test_a_rebound_host_name_is_refused_on_a_loopback_server(client: Client, host: str) -> None:
    """Bound to 127.0.0.1, a request for another Host is a 400 that names the fix."""
    for method, path in (("GET", "/"), ("GET", "/api/v1/runs"), ("POST", "/api/v1/events")):
        response = client.request(method, path, headers={"host": host, **MSGPACK}, content=b"")
        assert response.status_code == 400
        assert "--allowed-hosts" in response.json()["detail"]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:3000", "localhost:8123", "[::1]:3000"])
def test_loopback_names_are_answered_on_any_port(client: Client, host: str) -> None:
    """``127.0.0.1``, ``localhost`` and ``[::1]``, with or without a port, are this server."""
    assert client.get("/api/v1/runs", headers={"host": host}).status_code == 200


@pytest.mark.parametrize(
    ("settings", "host", "status"),
    [
        ({"allowed_hosts": ("pipelens.lan",)}, "pipelens.lan:3000", 200),
        ({"allowed_hosts": ("*.lan",)}, "box.lan", 200),
        ({"allowed_hosts": ("*.lan",)}, "box.example", 400),
        ({"allowed_hosts": ("*",)}, "anything.example", 200),
        ({"host": "0.0.0.0", "token": "t"}, "anything.example", 200),
        ({"host": "10.0.0.5", "token": "t"}, "box.example", 200),
        ({"host": "10.0.0.5", "token": "t", "allowed_hosts": ("box.lan",)}, "box.example", 400),
        ({"host": "10.0.0.5", "token": "t", "allowed_hosts": ("box.lan",)}, "10.0.0.5:3000", 200),
    ],
)
def test_allowed_hosts_widen_the_loopback_default(
    database_url: str, settings: dict[str, object], host: str, status: int
) -> None:
    """``allowed_hosts`` adds names; a server bound elsewhere answers any name unless it is set."""
    app = create_app(Settings(database_url=database_url, **settings))  # type: ignore[arg-type]
    with TestClient(app, base_url=LOCAL) as test_client:
        response = test_client.get("/healthz", headers={"host": host})
    assert status == response.status_code


def test_allowed_hosts_come_from_the_environment() -> None:
    """``PIPELENS_ALLOWED_HOSTS`` is a comma-separated list."""
    settings = Settings.from_env({"PIPELENS_ALLOWED_HOSTS": "a.lan, B.lan"})
    assert settings.allowed_hosts == ("a.lan", "b.lan")


# -- headers on every answer ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/settings", "/import", "/login", "/api/v1/runs", "/static/pipelens.css", "/nope"]
)
def test_every_answer_carries_the_security_headers(client: Client, path: str) -> None:
    """CSP (same origin only, no framing), X-Frame-Options, nosniff, Referrer-Policy."""
    headers = client.get(path).headers
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert (headers["x-frame-options"], headers["x-content-type-options"]) == ("DENY", "nosniff")
    assert headers["referrer-policy"] == "same-origin"


def test_a_refused_host_gets_the_headers_too(client: Client) -> None:
    """Even the 400 for a rebound name cannot be framed or sniffed."""
    headers = client.get("/", headers={"host": "evil.example"}).headers
    assert (headers["x-frame-options"], headers["x-content-type-options"]) == ("DENY", "nosniff")


# -- a real server ----------------------------------------------------------------------------


@pytest.fixture
def served(database_url: str) -> Iterator[str]:
    """A real server (uvicorn) on the test's own database."""
    with live_server(create_app(Settings(database_url=database_url))) as url:
        yield url


def test_a_real_server_refuses_cross_origin_ingest_and_rebound_hosts(
    served: str, database_url: str
) -> None:
    """Over real HTTP: another origin's ingest is a 403, a rebound Host a 400, ours a 202."""
    body = msgpack_body(run_events("real"))
    other = httpx.post(
        f"{served}/api/v1/events", content=body, headers={**MSGPACK, "origin": "http://localhost:1"}
    )
    rebound = httpx.get(f"{served}/", headers={"host": "attacker.example"})
    ours = httpx.post(
        f"{served}/api/v1/events", content=body, headers={**MSGPACK, "origin": served}
    )
    assert (other.status_code, rebound.status_code, ours.status_code) == (403, 400, 202)
    assert [r["run_id"] for r in read_rows(database_url)["runs"]] == ["real"]


# -- ingest content types ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/ingestion/pipeline/start",
        "/api/ingestion/pipeline/finish",
        "/api/ingestion/step/start",
        "/api/ingestion/step/finish",
        "/api/ingestion/batch",
    ],
)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_seed_endpoints_refuse_bodies_a_page_can_send_without_preflight(
    client: Client, database_url: str, path: str, content_type: str | None
) -> None:
    """A seed body that is not declared JSON is a 415 naming application/json; nothing stored."""
    headers = {} if content_type is None else {"content-type": content_type}
    response = client.post(path, content=SEED_START, headers=headers)
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]
    assert read_rows(database_url)["runs"] == []


def test_seed_endpoints_take_json_with_a_charset(client: Client, database_url: str) -> None:
    """``application/json; charset=utf-8`` (what fetch and aiohttp may send) still works."""
    headers = {"content-type": "application/json; charset=utf-8"}
    response = client.post("/api/ingestion/pipeline/start", content=SEED_START, headers=headers)
    assert response.status_code == 201
    assert [r["run_id"] for r in read_rows(database_url)["runs"]] == ["s1"]


def test_our_ingest_refuses_text_plain(client: Client, database_url: str) -> None:
    """``POST /api/v1/events`` reads msgpack and JSON only."""
    response = client.post("/api/v1/events", content=json_body(run_events("r1")))
    assert response.status_code == 415
    assert read_rows(database_url)["runs"] == []

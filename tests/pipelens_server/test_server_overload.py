"""When the database cannot keep up the server answers 429 with Retry-After, never a queue."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import psycopg
from _pg_testkit import MSGPACK, live_server, msgpack_body, read_rows, run_events

from pipelens_server import Settings, create_app


def _wait_for(condition: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_ingests_beyond_the_in_flight_limit_get_429(database_url: str) -> None:
    """With every ingest slot taken (a client still sending its body), the next gets 429 and
    ``Retry-After``; the slow request still completes once its body arrives."""
    app = create_app(Settings(database_url=database_url, max_inflight_ingests=1, retry_after_s=3))
    body = msgpack_body(run_events("slow"))
    with live_server(app) as url:
        address = urlsplit(url)
        slow = socket.create_connection((address.hostname, address.port))
        head = (
            "POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/msgpack\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        slow.sendall(head.encode() + body[:10])
        _wait_for(lambda: app.state.limiter.inflight == 1, "the slow request to hold its slot")
        refused = httpx.post(
            f"{url}/api/v1/events", content=msgpack_body(run_events("fast")), headers=MSGPACK
        )
        slow.sendall(body[10:])
        answer = slow.recv(4096).decode()
        slow.close()
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "3")
    assert answer.startswith("HTTP/1.1 202")
    assert [r["run_id"] for r in read_rows(database_url)["runs"]] == ["slow"]


def test_ingest_waiting_too_long_for_a_connection_gets_429(database_url: str) -> None:
    """With the pool's only connection stuck behind a lock, the next ingest gets 429 after
    ``pool_timeout_s`` instead of waiting without bound."""
    settings = Settings(
        database_url=database_url, pool_min_size=1, pool_max_size=1, pool_timeout_s=0.2
    )
    app = create_app(settings)
    with live_server(app) as url, psycopg.connect(database_url) as blocker:
        blocker.execute("LOCK TABLE runs IN EXCLUSIVE MODE")  # held until commit
        first: list[httpx.Response] = []
        sender = threading.Thread(
            target=lambda: first.append(
                httpx.post(
                    f"{url}/api/v1/events",
                    content=msgpack_body(run_events("first")),
                    headers=MSGPACK,
                    timeout=30,
                )
            )
        )
        sender.start()
        _wait_for(
            lambda: (
                blocker.execute(
                    "SELECT count(*) FROM pg_locks "
                    "WHERE NOT granted AND relation = 'runs'::regclass"
                ).fetchone()
                == (1,)
            ),
            "the first ingest to wait for the lock",
        )
        second = httpx.post(
            f"{url}/api/v1/events", content=msgpack_body(run_events("second")), headers=MSGPACK
        )
        blocker.commit()
        sender.join(30)
    assert (second.status_code, second.headers["retry-after"]) == (429, "1")
    assert "retry later" in second.json()["detail"]
    assert first[0].status_code == 202
    assert [r["run_id"] for r in read_rows(database_url)["runs"]] == ["first"]

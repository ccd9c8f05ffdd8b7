"""Back-pressure: ingest requests beyond the in-flight limit wait in a bounded queue; a full
queue, a wait too long or a database that cannot keep up answers 429 with Retry-After."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import psycopg
from _pg_testkit import MSGPACK, live_server, msgpack_body, read_rows, run_events
from litestar import Litestar

from pipelens_server import Settings, create_app


def _wait_for(condition: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def _slot_held(app: Litestar, url: str, run_id: str) -> Iterator[Callable[[], str]]:
    """A client holds the only ingest slot (it is still sending its body) for the block; the
    callable sends the rest and returns the server's answer."""
    body = msgpack_body(run_events(run_id))
    address = urlsplit(url)
    slow = socket.create_connection((address.hostname, address.port))
    head = (
        f"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/msgpack\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    slow.sendall(head.encode() + body[:10])
    _wait_for(lambda: app.state.limiter.inflight == 1, "the slow request to hold its slot")

    def finish() -> str:
        slow.sendall(body[10:])
        return slow.recv(4096).decode()

    try:
        yield finish
    finally:
        slow.close()


def _post(url: str, run_id: str) -> httpx.Response:
    return httpx.post(
        f"{url}/api/v1/events",
        content=msgpack_body(run_events(run_id)),
        headers=MSGPACK,
        timeout=30,
    )


def test_an_ingest_beyond_the_in_flight_limit_waits_and_succeeds(database_url: str) -> None:
    """With every ingest slot taken, the next request waits in the queue (no 429) and is stored
    once the slot frees."""
    app = create_app(Settings(database_url=database_url, max_inflight_ingests=1))
    with live_server(app) as url, _slot_held(app, url, "slow") as finish_slow:
        queued: list[httpx.Response] = []
        sender = threading.Thread(target=lambda: queued.append(_post(url, "queued")))
        sender.start()
        _wait_for(lambda: app.state.limiter.waiting == 1, "the next request to queue")
        answer = finish_slow()
        sender.join(30)
    assert answer.startswith("HTTP/1.1 202")
    assert queued[0].status_code == 202
    assert sorted(r["run_id"] for r in read_rows(database_url)["runs"]) == ["queued", "slow"]


def test_an_ingest_beyond_a_full_queue_gets_429_naming_the_settings(database_url: str) -> None:
    """With the slot taken and the queue full, the next request gets 429 and ``Retry-After``,
    and the answer names the limits and the settings that raise them; the slow request still
    completes."""
    settings = Settings(
        database_url=database_url, max_inflight_ingests=1, ingest_queue=0, retry_after_s=3
    )
    app = create_app(settings)
    with live_server(app) as url, _slot_held(app, url, "slow") as finish_slow:
        refused = _post(url, "fast")
        answer = finish_slow()
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "3")
    detail = refused.json()["detail"]
    assert "the 1 ingest slots are busy and the queue of 0 waiting requests is full" in detail
    assert "--ingest-queue (PIPELENS_INGEST_QUEUE)" in detail
    assert answer.startswith("HTTP/1.1 202")
    assert [r["run_id"] for r in read_rows(database_url)["runs"]] == ["slow"]


def test_an_ingest_that_waits_too_long_for_a_slot_gets_429(database_url: str) -> None:
    """A queued request that gets no slot within ``ingest_wait_s`` gets 429 naming the wait and
    its setting, and writes nothing."""
    settings = Settings(database_url=database_url, max_inflight_ingests=1, ingest_wait_s=0.3)
    app = create_app(settings)
    with live_server(app) as url, _slot_held(app, url, "slow") as finish_slow:
        refused = _post(url, "late")
        answer = finish_slow()
    assert refused.status_code == 429
    detail = refused.json()["detail"]
    assert "none of the 1 ingest slots freed up in 0.3 s" in detail
    assert "--ingest-wait (PIPELENS_INGEST_WAIT)" in detail
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

"""The client's HttpTransport and a real ``pipelens serve`` together: runs arrive whole, once,
across a server that starts late or is killed mid-send."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _pg_testkit import free_port, serve

import pipelens

TOKEN = "e2e-secret-token"
CHILDREN = 20
FAILING = 7


@pipelens.step
def child(i: int) -> int:
    if i == FAILING:
        raise ValueError("bad doc")
    return i


@pipelens.step
def pipeline(n: int) -> str:
    run = pipelens.current_run()
    assert run is not None
    for i in range(n):
        with contextlib.suppress(ValueError):
            child(i)
    return run.id


def _expected_steps() -> dict[str, str]:
    """Key -> status of every step of one ``pipeline(CHILDREN)`` run."""
    keys = {"pipeline": "completed"}
    for i in range(CHILDREN):
        key = "pipeline.child" if i == 0 else f"pipeline.child___{i}"
        keys[key] = "failed" if i == FAILING else "completed"
    return keys


@contextlib.contextmanager
def _serve(port: int, database_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """``pipelens serve`` with the token, on ``port`` and ``database_url``, once ready."""
    with serve("--database-url", database_url, "--token", TOKEN, port=port) as (process, _):
        yield process


@pytest.fixture
def transport(tmp_path: Path) -> tuple[pipelens.HttpTransport, str]:
    """An HttpTransport with short intervals to a free port nobody listens on yet, configured."""
    url = f"http://127.0.0.1:{free_port()}"
    http = pipelens.HttpTransport(
        url,
        TOKEN,
        spool_dir=tmp_path / "spool",
        interval=0.05,
        backoff=0.02,
        max_backoff=0.2,
        timeout=5.0,
    )
    pipelens.configure(transport=http)  # tests/conftest.py closes it afterwards
    return http, url


def _read(url: str, run_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{url}/api/v1/runs/{run_id}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


def _assert_arrived_once(url: str, run_id: str) -> None:
    detail = _read(url, run_id)
    keys = [step["key"] for step in detail["steps"]]
    assert sorted(keys) == sorted(set(keys))  # no step twice
    assert _expected_steps() == {step["key"]: step["status"] for step in detail["steps"]}
    assert (detail["run"]["status"], detail["run"]["step_count"]) == ("completed", CHILDREN + 1)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_a_run_arrives_whole_through_the_transport(
    transport: tuple[pipelens.HttpTransport, str], database_url: str
) -> None:
    """Every step of a run, the failed child too, is readable after flush returns True."""
    http, url = transport
    with _serve(_port(url), database_url):
        run_id = pipeline(CHILDREN)
        assert pipelens.flush(30) is True
        _assert_arrived_once(url, run_id)
    assert http.stats().dropped == 0


def test_steps_sent_while_the_server_is_down_arrive_once_it_is_up(
    transport: tuple[pipelens.HttpTransport, str], database_url: str
) -> None:
    """Runs made before the server starts are all delivered once it does, none twice."""
    http, url = transport
    run_ids = [pipeline(CHILDREN), pipeline(CHILDREN)]
    time.sleep(0.3)  # let the sender fail and retry against the closed port
    with _serve(_port(url), database_url):
        assert pipelens.flush(30) is True
        for run_id in run_ids:
            _assert_arrived_once(url, run_id)
    stats = http.stats()
    assert (stats.retried > 0, stats.dropped) == (True, 0)  # the outage was hit, nothing lost


def test_a_server_killed_mid_send_loses_and_duplicates_nothing(
    transport: tuple[pipelens.HttpTransport, str], database_url: str
) -> None:
    """SIGKILL of serve while runs are being sent, then a restart on the same port and
    database: every run arrives whole, each step once."""
    http, url = transport
    with _serve(_port(url), database_url) as first:
        run_ids = [pipeline(CHILDREN)]
        time.sleep(0.05)  # the sender is posting the first run
        run_ids.append(pipeline(CHILDREN))
        first.kill()
        first.wait(30)
    run_ids.append(pipeline(CHILDREN))  # made while nothing listens
    with _serve(_port(url), database_url):
        assert pipelens.flush(30) is True
        for run_id in run_ids:
            _assert_arrived_once(url, run_id)
    stats = http.stats()
    assert (stats.retried > 0, stats.dropped) == (True, 0)  # the outage was hit, nothing lost

"""Runs that cross processes: a pipeline calling a FastAPI service through httpx (both
traced, both sending to one real ``pipelens serve``) is one run, nested across the two."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _pg_testkit import free_port, serve

import pipelens

TOKEN = "cross-process-token"
HERE = Path(__file__).resolve().parent


@contextlib.contextmanager
def _service(pipelens_url: str) -> Iterator[str]:
    """``_traced_service.py`` under uvicorn in a process of its own, reporting to
    ``pipelens_url``; stopped (SIGTERM: it flushes its events at shutdown) when the block
    ends."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELENS_")}
    env |= {
        "PIPELENS_URL": pipelens_url,
        "PIPELENS_TOKEN": TOKEN,
        "PIPELENS_RAISE_INTERNAL_ERRORS": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "_traced_service:app", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[1].decode()
            assert time.monotonic() < deadline, "the service did not start"
            # A connection, not a request: a request would be a run of its own.
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        # uvicorn ends by raising the signal it caught again, once shut down.
        assert process.returncode in (0, -signal.SIGTERM), err.decode()
        assert b"Application shutdown complete" in err, err.decode()
        assert b"Traceback" not in err, err.decode()


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A real ``pipelens serve``; this process reports to it, httpx carrying the current step."""
    with serve("--database-url", database_url, "--token", TOKEN) as (_, url):
        pipelens.configure(transport=pipelens.HttpTransport(url, TOKEN, spool=False, interval=0.05))
        pipelens.auto_patch("httpx")
        try:
            yield url
        finally:
            pipelens.unpatch("httpx")


def _read(url: str, path: str) -> Any:
    response = httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_pipeline_calling_a_service_is_one_run_nested_across_both_processes(
    server: str,
) -> None:
    """The service's request steps nest under the client step that called it, in the client's
    run; two calls from one step get a key each; the server holds one run."""

    with _service(server) as service:

        @pipelens.step
        def ask(question: str) -> str:
            with httpx.Client() as client:
                first = client.get(f"{service}/answer", params={"question": question})
                second = client.get(f"{service}/answer", params={"question": "again"})
            return f"{first.json()['answer']} {second.json()['answer']}"

        @pipelens.step
        def pipeline(question: str) -> str:
            run = pipelens.current_run()
            assert run is not None
            assert ask(question) == "HELLO WORLD AGAIN"
            return run.id

        run_id = pipeline("hello world")
    assert pipelens.flush(30) is True  # the service flushed when it stopped

    runs = _read(server, "/api/v1/runs")
    assert [r["run_id"] for r in runs["runs"]] == [run_id]
    detail = _read(server, f"/api/v1/runs/{run_id}")
    assert (detail["run"]["pipeline"], detail["run"]["status"]) == ("pipeline", "completed")
    steps = {s["key"]: s for s in detail["steps"]}
    by_id = {s["step_id"]: s for s in detail["steps"]}
    ask_step = steps["pipeline.ask"]
    requests = [s for s in detail["steps"] if s["name"] == "GET /answer"]
    assert len(requests) == 2
    for request in requests:
        assert request["parent_id"] == ask_step["step_id"]
        assert request["key"] == f"pipeline.ask.GET /answer___{request['step_id']}"
        assert request["status"] == "completed"
    children = {
        (by_id[s["parent_id"]]["name"], s["name"])
        for s in detail["steps"]
        if s["parent_id"] in by_id and by_id[s["parent_id"]]["name"] != "pipeline"
    }
    assert children == {
        ("ask", "GET /answer"),
        ("GET /answer", "answer_step"),
        ("answer_step", "lookup"),
    }
    lookups = [s for s in detail["steps"] if s["name"] == "lookup"]
    assert len(lookups) == 3  # hello, world, again
    assert len(detail["steps"]) == 2 + 2 * 2 + 3

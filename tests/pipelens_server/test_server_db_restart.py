"""The embedded PostgreSQL dies under a real ``pipelens serve``: the server says so (503) and
restarts it, and a client sending steps throughout loses none of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _pg_testkit import MSGPACK, data_dir, serve

from pipelens_server import EmbeddedPostgres

DEADLINE_S = 60.0


def _poll(what: str, probe: Callable[[], Any], deadline_s: float = DEADLINE_S) -> Any:
    """``probe()``'s first truthy answer, or a failure naming ``what`` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if answer := probe():
                return answer
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _client(url: str, stop: Path) -> subprocess.Popen[str]:
    """Our client, ``pipelens.configure(url=...)``: one run of one step after another until
    ``stop`` exists; then it flushes and prints how many steps it ran."""
    script = "\n".join(
        [
            "import os, time",
            "import pipelens",
            f"pipelens.configure(url={url!r})",
            "@pipelens.step",
            "def tick(i):",
            "    time.sleep(0.01)",
            "@pipelens.step",
            "def ticker():",
            "    n = 0",
            f"    while not os.path.exists({str(stop)!r}):",
            "        tick(n)",
            "        n += 1",
            "    return n",
            "n = ticker()",
            "print(n, pipelens.flush(120), flush=True)",
        ]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELENS_")}
    return subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )


def _stored_steps(url: str) -> int:
    runs = httpx.get(f"{url}/api/v1/runs", params={"pipeline": "ticker"}, timeout=10)
    if runs.status_code != 200 or not runs.json()["runs"]:
        return 0
    run_id = runs.json()["runs"][0]["run_id"]
    detail = httpx.get(f"{url}/api/v1/runs/{run_id}", timeout=10)
    return len(detail.json()["steps"]) if detail.status_code == 200 else 0


def test_a_killed_postmaster_is_restarted_and_no_step_is_lost() -> None:
    """SIGKILL of the embedded postmaster: /healthz, /readyz and ingest answer 503 with
    Retry-After, a new postmaster serves the same data dir, and every step the client sent
    while it was down lands."""
    with data_dir() as directory:
        embedded = EmbeddedPostgres(directory)
        try:
            _kill_postmaster_and_send_throughout(directory, embedded)
        finally:
            if (pid := embedded.running_pid()) is not None:  # a failed test left it running
                os.kill(pid, signal.SIGQUIT)


def _kill_postmaster_and_send_throughout(directory: Path, embedded: EmbeddedPostgres) -> None:
    with serve("--data-dir", str(directory)) as (server, url):
        stop = directory / "stop-client"
        client = _client(url, stop)
        try:
            _poll("the first steps", lambda: _stored_steps(url) > 5)
            old = embedded.running_pid()
            assert old is not None
            os.kill(old, signal.SIGKILL)
            down = _poll(
                "/healthz to answer 503",
                lambda: (r := httpx.get(f"{url}/healthz")).status_code == 503 and r,
                deadline_s=10,
            )
            assert down.headers["retry-after"]
            assert "restarting" in down.json()["detail"]
            _poll("a new postmaster", lambda: embedded.running_pid() not in (None, old))
            _poll("/healthz to answer 200", lambda: httpx.get(f"{url}/healthz").status_code == 200)
            assert httpx.get(f"{url}/readyz").status_code == 200
            resumed_at = _stored_steps(url)
            _poll("ingest to resume", lambda: _stored_steps(url) > resumed_at + 5)
            stop.touch()
            assert client.stdout is not None
            out, _ = client.communicate(timeout=180)
        finally:
            if client.poll() is None:
                client.kill()
            client.wait(30)
            if client.stdout is not None:
                client.stdout.close()
        ran, flushed = out.split()
        assert (client.returncode, flushed) == (0, "True")
        run = httpx.get(f"{url}/api/v1/runs", params={"pipeline": "ticker"}).json()["runs"][0]
        detail = httpx.get(f"{url}/api/v1/runs/{run['run_id']}").json()
        assert run["status"] == "completed"
        assert len(detail["steps"]) == int(ran) + 1  # every tick and the root
        assert server.poll() is None  # the server itself lived through it
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
    assert embedded.running_pid() is None  # the restarted postmaster stopped with the server


def test_an_external_database_that_goes_away_is_waited_for_and_nothing_is_lost() -> None:
    """A ``--database-url`` PostgreSQL (a second, separate server) stopped under a running
    ``pipelens serve``: ``/healthz`` and ingest answer 503 naming the database, the client keeps
    its steps; started again, the server recovers by itself and every step lands."""
    with data_dir() as directory:
        external = EmbeddedPostgres(directory / "external")
        conninfo = external.start()
        try:
            with serve("--database-url", conninfo) as (server, url):
                stop = directory / "stop-client"
                client = _client(url, stop)
                try:
                    _poll("the first steps", lambda: _stored_steps(url) > 5)
                    external.stop()
                    down = _poll(
                        "/healthz to answer 503",
                        lambda: (r := httpx.get(f"{url}/healthz")).status_code == 503 and r,
                        deadline_s=20,
                    )
                    assert down.headers["retry-after"]
                    assert "does not answer" in down.json()["detail"]
                    ingest = httpx.post(
                        f"{url}/api/v1/events", content=b"\x80", headers=MSGPACK, timeout=30
                    )
                    assert ingest.status_code == 503
                    assert external.start() == conninfo
                    _poll(
                        "/healthz to answer 200",
                        lambda: httpx.get(f"{url}/healthz").status_code == 200,
                    )
                    resumed_at = _stored_steps(url)
                    _poll("ingest to resume", lambda: _stored_steps(url) > resumed_at + 5)
                    stop.touch()
                    assert client.stdout is not None
                    out, _ = client.communicate(timeout=180)
                finally:
                    if client.poll() is None:
                        client.kill()
                    client.wait(30)
                    if client.stdout is not None:
                        client.stdout.close()
                ran, flushed = out.split()
                assert (client.returncode, flushed) == (0, "True")
                runs = httpx.get(f"{url}/api/v1/runs", params={"pipeline": "ticker"}).json()
                detail = httpx.get(f"{url}/api/v1/runs/{runs['runs'][0]['run_id']}").json()
                assert runs["runs"][0]["status"] == "completed"
                assert len(detail["steps"]) == int(ran) + 1  # every tick and the root
                assert server.poll() is None
        finally:
            external.stop()

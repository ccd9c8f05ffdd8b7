"""Helpers for the server tests: events of realistic runs, request bodies, rows read back, and
a real uvicorn server in a thread."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import httpx
import msgspec
import psycopg
import uvicorn
from litestar import Litestar
from psycopg.rows import dict_row

from pipelens.events import (
    Batch,
    ErrorInfo,
    Event,
    RunFinished,
    RunStarted,
    StepFinished,
    StepStarted,
    encode_json,
    encode_msgpack,
)

T0 = 1_700_000_000_000_000_000
MSGPACK = {"content-type": "application/msgpack"}
JSON = {"content-type": "application/json"}
#: The base URL of Litestar's test clients: a loopback name, the only Host a server bound to
#: 127.0.0.1 answers (Litestar's default ``testserver.local`` would be refused).
LOCAL = "http://127.0.0.1"


def run_events(run_id: str, pipeline: str = "rag", *, fail: bool = False) -> list[Event]:
    """A run with a root step and two children (the second fails when ``fail``), in emit order."""
    root, a, b = f"{run_id}-root", f"{run_id}-a", f"{run_id}-b"
    error = (
        ErrorInfo(type="ValueError", message="bad doc", traceback="Traceback ...") if fail else None
    )
    status = "failed" if fail else "completed"
    return [
        RunStarted(run_id=run_id, pipeline=pipeline, start_ns=T0, attributes={"env": "test"}),
        StepStarted(run_id=run_id, step_id=root, key="answer", name="answer", start_ns=T0,
                    inputs='{"query":"q"}'),
        StepStarted(run_id=run_id, step_id=a, parent_id=root, key="answer.retrieve",
                    name="retrieve", start_ns=T0 + 10, inputs='{"k":3}'),
        StepFinished(run_id=run_id, step_id=a, parent_id=root, key="answer.retrieve",
                     name="retrieve", start_ns=T0 + 10, end_ns=T0 + 110, duration_ns=100,
                     status="completed", result='["d1","d2"]', records='{"n_docs":2}',
                     inputs='{"k":3}'),
        StepStarted(run_id=run_id, step_id=b, parent_id=root, key="answer.rerank",
                    name="rerank", kind="llm", start_ns=T0 + 120),
        StepFinished(run_id=run_id, step_id=b, parent_id=root, key="answer.rerank",
                     name="rerank", kind="llm", start_ns=T0 + 120, end_ns=T0 + 220,
                     duration_ns=100, status=status, error=error,
                     result=None if fail else '"d1"'),
        StepFinished(run_id=run_id, step_id=root, key="answer", name="answer", start_ns=T0,
                     end_ns=T0 + 300, duration_ns=300, status=status, error=error,
                     result=None if fail else '"the answer"', inputs='{"query":"q"}'),
        RunFinished(run_id=run_id, pipeline=pipeline, start_ns=T0, end_ns=T0 + 300,
                    duration_ns=300, status=status, error=error, step_count=3),
    ]  # fmt: skip


def msgpack_body(events: Sequence[Event]) -> bytes:
    """A msgpack request body carrying ``events``."""
    return encode_msgpack(Batch(events=list(events)))


def json_body(events: Sequence[Event]) -> bytes:
    """A JSON request body carrying ``events``."""
    return encode_json(Batch(events=list(events)))


def json_with(events: Sequence[Event], index: int, **fields: Any) -> bytes:
    """A JSON body whose event ``index`` has ``fields`` replaced (to send what no Struct allows)."""
    batch = msgspec.json.decode(json_body(events))
    batch["events"][index].update(fields)
    return msgspec.json.encode(batch)


def read_rows(conninfo: str, run_id: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every stored run and step (of ``run_id`` when given), in key order, without timestamps."""
    where = "" if run_id is None else "WHERE run_id = %(run_id)s"
    with psycopg.connect(conninfo, row_factory=dict_row) as conn:
        runs = conn.execute(
            f"SELECT * FROM runs {where} ORDER BY run_id", {"run_id": run_id}
        ).fetchall()
        steps = conn.execute(
            f"SELECT * FROM steps {where} ORDER BY run_id, key", {"run_id": run_id}
        ).fetchall()
        pipelines = conn.execute("SELECT name FROM pipelines ORDER BY name").fetchall()
    for run in runs:
        del run["created_at"], run["updated_at"], run["last_seen_ns"]  # server clocks
    return {"runs": runs, "steps": steps, "pipelines": pipelines}


@contextlib.contextmanager
def data_dir() -> Iterator[Path]:
    """A fresh data directory for an embedded PostgreSQL, removed afterwards.

    Not under pytest's ``tmp_path``: as root PostgreSQL runs as another OS user that must be
    able to reach it, and pytest resets its base directory to mode 0700 whenever a session
    starts (ours or a concurrent one).
    """
    directory = Path(tempfile.mkdtemp(prefix="pipelens-test-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def live_server(app: Litestar) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on a free 127.0.0.1 port; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", ws="none", http="h11", loop="asyncio"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextlib.contextmanager
def serve(
    *args: str, port: int | None = None, stderr: IO[bytes] | None = None, ready_s: float = 60
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Run ``pipelens serve`` (without the test's PIPELENS_* environment) on ``port`` (a free
    one by default) until the block ends; yield the process once it is ready, with its URL.
    Its log goes to ``stderr`` when given (a file the test reads afterwards); it has ``ready_s``
    seconds to become ready."""
    port = free_port() if port is None else port
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELENS_") and k != "PORT"}
    url = f"http://127.0.0.1:{port}"
    with contextlib.nullcontext(stderr) if stderr else tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelens", "serve", "--port", str(port), *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            _wait_ready(process, url, log, ready_s)
            yield process, url
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(30)


@contextlib.contextmanager
def serve_at_once(
    count: int, *args: str, ready_s: float = 120
) -> Iterator[list[tuple[subprocess.Popen[bytes], str, IO[bytes]]]]:
    """Start ``count`` ``pipelens serve`` processes (each on a free port, with ``args``) at the
    same moment, so that their start-ups overlap; yield each once all are ready, with its URL
    and its log (a file to read afterwards)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELENS_") and k != "PORT"}
    with contextlib.ExitStack() as stack:
        started = []
        for _ in range(count):
            log = stack.enter_context(tempfile.TemporaryFile())
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, "-m", "pipelens", "serve", "--port", str(port), *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            stack.callback(process.wait, 30)
            stack.callback(lambda p=process: p.poll() is None and p.kill())
            started.append((process, f"http://127.0.0.1:{port}", log))
        for process, url, log in started:
            _wait_ready(process, url, log, ready_s)
        yield started


def log_events(log: IO[bytes]) -> list[dict[str, Any]]:
    """The JSON log lines a server wrote to ``log`` so far."""
    log.seek(0)
    lines = log.read().decode(errors="replace").splitlines()
    return [msgspec.json.decode(line) for line in lines if line.startswith("{")]


def _wait_ready(
    process: subprocess.Popen[bytes], url: str, log: IO[bytes], ready_s: float = 60
) -> None:
    deadline = time.monotonic() + ready_s
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            raise AssertionError(f"serve did not become ready: {log.read().decode()}")
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)

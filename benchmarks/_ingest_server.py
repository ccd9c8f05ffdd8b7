"""The server ``benchmarks.ingest`` measures: an embedded PostgreSQL in a temporary directory and
``pipelens serve`` on a free port against it, and the CPU time both have used."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_READY_TIMEOUT_S = 120


@contextmanager
def running_server(directory: Path) -> Iterator[Server]:
    """An embedded PostgreSQL and ``pipelens serve`` on it."""
    import httpx

    from pipelens_server import EmbeddedPostgres
    from pipelens_server._logging import configure_logging

    configure_logging()  # the embedded PostgreSQL's messages to stderr: stdout is the report
    database = EmbeddedPostgres(directory / "data")
    conninfo = database.start()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELENS_") and k != "PORT"}
    url = f"http://127.0.0.1:{port}"
    log = (directory / "serve.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelens",
            "serve",
            "--port",
            str(port),
            "--database-url",
            conninfo,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    "pipelens serve did not become ready:\n"
                    + (directory / "serve.log").read_text(errors="replace")
                )
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield Server(url, conninfo, process.pid, database.running_pid())
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        database.stop()


@dataclass(frozen=True)
class Server:
    """The running server: its URL, its database, and the pids whose CPU time is counted."""

    url: str
    conninfo: str
    pid: int
    postmaster: int | None

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds used so far by the server process and by PostgreSQL (postmaster and
        backends alive now); zeros where ``/proc`` cannot tell."""
        postgres = 0.0
        if self.postmaster is not None:
            for stat in Path("/proc").glob("[0-9]*/stat"):
                fields = _proc_stat(stat)
                if fields and (
                    int(stat.parent.name) == self.postmaster or fields[1] == self.postmaster
                ):
                    postgres += fields[0]
        server = _proc_stat(Path(f"/proc/{self.pid}/stat"))
        return (server[0] if server else 0.0), postgres


def _proc_stat(path: Path) -> tuple[float, int] | None:
    """(CPU seconds, parent pid) from a ``/proc/<pid>/stat`` file, or ``None``."""
    try:
        text = path.read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks, int(fields[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def empty_tables(conninfo: str) -> None:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        # CASCADE: tables that refer to pipelines (retention, migration 0006) are emptied too.
        conn.execute("TRUNCATE runs, steps, pipelines CASCADE")


def finished_steps(conninfo: str, pipeline: str | None = None) -> int:
    """The finished steps stored, or only ``pipeline``'s (through its index: millions of others
    may be stored)."""
    import psycopg

    query = "SELECT count(*) FROM steps WHERE status <> 'running'"
    with psycopg.connect(conninfo) as conn:
        if pipeline is None:
            row = conn.execute(query).fetchone()
        else:
            row = conn.execute(query + " AND pipeline = %s", (pipeline,)).fetchone()
    return int(row[0]) if row else 0

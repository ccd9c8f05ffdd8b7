"""A small real ingest server for transport tests: stdlib HTTP on a free 127.0.0.1 port.

It decodes ``POST /api/v1/events`` bodies with the wire contract's decoder and keeps the
batches. Tests script its next answers (``server.plan(500, Reply(429, retry_after="1"),
KILL)``), stop it (closing open keep-alive connections too) and start it again on the same
port. :class:`BlackHole` accepts connections and never answers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

import msgspec

from pipelens.events import Batch, Event, StepFinished, StepStarted, decode_msgpack

#: Close the connection after reading the request, before storing it or answering.
KILL = "kill"
#: Store the batch, then close the connection without answering (the client must resend).
KILL_AFTER_STORE = "kill-after-store"


class Reply(NamedTuple):
    """Answer the next request with ``status`` (and maybe ``Retry-After``), storing nothing."""

    status: int
    retry_after: str | None = None


Action = int | Reply | str


class Request(NamedTuple):
    """What one request looked like, and how it was answered (``0``: connection killed)."""

    path: str
    content_type: str | None
    authorization: str | None
    client_port: int
    size: int
    events: int
    runs: frozenset[str]
    status: int
    at: float


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds (``True``) or ``timeout`` seconds pass (``False``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def event_key(event: Event) -> tuple[str, str, str | None]:
    """What identifies an event: its type, run and step."""
    return (type(event).__name__, event.run_id, getattr(event, "step_id", None))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: IngestServer) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        super().__init__(("127.0.0.1", owner.port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # killed and reset connections are the point of these tests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # headers and body are written apart
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        owner = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(owner.delay)
        action = owner._next_action()
        batch: Batch | None = None
        error = ""
        try:
            batch = decode_msgpack(body)
        except msgspec.DecodeError as exc:
            error = str(exc)

        def note(status: int) -> None:
            owner._note(
                Request(
                    self.path,
                    self.headers.get("Content-Type"),
                    self.headers.get("Authorization"),
                    self.client_address[1],
                    len(body),
                    0 if batch is None else len(batch.events),
                    frozenset() if batch is None else frozenset(e.run_id for e in batch.events),
                    status,
                    time.monotonic(),
                )
            )

        if action == KILL:
            note(0)
            self._kill()
        elif isinstance(action, int | Reply):
            reply = action if isinstance(action, Reply) else Reply(action)
            note(reply.status)
            self._answer(reply.status, {"error": "planned"}, reply.retry_after)
        elif self.path != "/api/v1/events":
            note(404)
            self._answer(404, {"error": f"no route {self.path}"})
        elif self.headers.get("Content-Type") != "application/msgpack":
            note(415)
            self._answer(415, {"error": "expected application/msgpack"})
        elif batch is None:
            note(400)
            self._answer(400, {"error": error})
        else:
            owner._store(batch)
            if action == KILL_AFTER_STORE:
                note(0)
                self._kill()
            else:
                note(202)
                self._answer(202, {"accepted": len(batch.events)})

    def _answer(self, status: int, payload: object, retry_after: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.end_headers()
        self.wfile.write(data)

    def _kill(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            return


class IngestServer:
    """A real HTTP ingest server in a thread; ``start()``/``stop()`` keep the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.batches: list[Batch] = []
        self.requests: list[Request] = []
        self._plan: deque[Action] = deque()
        #: Seconds each request takes before it is answered: a server slower than the program.
        self.delay = 0.0
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> IngestServer:
        server = self._server = _Server(self)
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection: the server is down."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for conn in list(server.connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                continue
        assert self._thread is not None
        self._thread.join()

    def plan(self, *actions: Action) -> None:
        """Answer the next requests with these actions, then normally again."""
        with self._lock:
            self._plan.extend(actions)

    def clear_plan(self) -> None:
        """Forget the answers still planned: the next requests are served normally."""
        with self._lock:
            self._plan.clear()

    def events(self) -> list[Event]:
        """Every event the program emitted, as stored, in arrival order (a resent batch appears
        twice): a finish the transport sent in place of its step's start too
        (``pipelens._transports.coalesce``) stands for both, the start just before it."""
        wire = self.wire_events()
        started = {e.step_id for e in wire if isinstance(e, StepStarted)}
        events: list[Event] = []
        for e in wire:
            if isinstance(e, StepFinished) and e.step_id not in started:
                events.append(
                    StepStarted(
                        run_id=e.run_id,
                        step_id=e.step_id,
                        parent_id=e.parent_id,
                        key=e.key,
                        name=e.name,
                        kind=e.kind,
                        start_ns=e.start_ns,
                        inputs=e.inputs,
                    )
                )
            events.append(e)
        return events

    def wire_events(self) -> list[Event]:
        """Every event as it came over the wire, in arrival order."""
        with self._lock:
            return [e for b in self.batches for e in b.events]

    def statuses(self) -> list[int]:
        with self._lock:
            return [r.status for r in self.requests]

    def _next_action(self) -> Action | None:
        with self._lock:
            return self._plan.popleft() if self._plan else None

    def _note(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _store(self, batch: Batch) -> None:
        with self._lock:
            self.batches.append(batch)

    def __enter__(self) -> IngestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class BlackHole:
    """A port that accepts TCP connections (in the kernel's backlog) and never answers."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> BlackHole:
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

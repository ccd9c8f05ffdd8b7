"""A local HTTP server speaking enough of Anthropic's Messages API for the real ``anthropic``
client.

``POST /v1/messages`` (and Vertex's ``...:rawPredict`` / ``:streamRawPredict``, Bedrock's
``/model/<model>/invoke``): a JSON message, or with ``stream: true`` the SSE events
``message_start``, ``content_block_start`` / ``content_block_delta`` (``text_delta``,
``input_json_delta``) / ``content_block_stop``, ``message_delta`` (stop reason and output
tokens) and ``message_stop``, with a ``ping`` among them. A request with ``tools`` is answered
with a text block and a ``tool_use`` block. Every answer has a ``request-id`` header. The model
name picks a failure: ``error-429``, ``error-500`` and ``error-529`` answer with that status and
an error body, ``midstream-error`` sends an ``error`` event after the first text delta, ``slow``
waits before answering (for client timeouts). Every request body is kept in ``requests``.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEXT_PARTS = ("Hello", ", ", "world", "!")
TEXT = "".join(TEXT_PARTS)
TOOL_TEXT = "Let me check."
#: The API starts a tool's arguments with an empty piece.
TOOL_ARGS_PARTS = ("", '{"city": ', '"Paris"}')
TOOL_INPUT = {"city": "Paris"}
SLOW_SECONDS = 0.6
#: Vertex and Bedrock put the model in the path, not the body.
_VERTEX = re.compile(r"/models/([^/:]+):(?:rawPredict|streamRawPredict)$")
_BEDROCK = re.compile(r"/model/([^/]+)/invoke(-with-response-stream)?$")
#: Anthropic's counts: input_tokens leaves out the cache reads and writes.
USAGE = {
    "input_tokens": 10,
    "cache_creation_input_tokens": 3,
    "cache_read_input_tokens": 5,
    "output_tokens": 4,
    "output_tokens_details": {"thinking_tokens": 1},
}
_ERRORS = {
    "error-429": (429, "rate_limit_error", "Number of requests has exceeded your rate limit"),
    "error-500": (500, "api_error", "Internal server error"),
    "error-529": (529, "overloaded_error", "Overloaded"),
}


def response_model(model: str) -> str:
    """The dated model name the stub answers with."""
    return f"{model}-20250514"


def _content(tools: bool) -> list[dict[str, Any]]:
    if tools:
        return [
            {"type": "text", "text": TOOL_TEXT},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": TOOL_INPUT},
        ]
    return [{"type": "text", "text": TEXT}]


def _message(model: str, tools: bool) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": response_model(model),
        "content": _content(tools),
        "stop_reason": "tool_use" if tools else "end_turn",
        "stop_sequence": None,
        "usage": USAGE,
    }


def _events(model: str, tools: bool) -> list[dict[str, Any]]:
    start = {**_message(model, tools), "content": [], "stop_reason": None}
    start["usage"] = {**USAGE, "output_tokens": 1}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    parts = (TOOL_TEXT,) if tools else TEXT_PARTS
    for i, part in enumerate(parts):
        events.append(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": part},
            }
        )
        if i == 0 and model == "midstream-error":
            events.append(
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            )
            return events
    events.append({"type": "content_block_stop", "index": 0})
    if tools:
        block = {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}
        events.append({"type": "content_block_start", "index": 1, "content_block": block})
        events.extend(
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": part},
            }
            for part in TOOL_ARGS_PARTS
        )
        events.append({"type": "content_block_stop", "index": 1})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use" if tools else "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": USAGE["output_tokens"]},
        }
    )
    events.append({"type": "message_stop"})
    return events


def event_kinds(tools: bool = False) -> list[str]:
    """The ``type`` of every event a stream gives the caller (the SDK drops the ``ping``)."""
    return [e["type"] for e in _events("m", tools) if e["type"] != "ping"]


#: The headers of a Bedrock stream's event messages.
_AWS_HEADERS = {
    ":event-type": "chunk",
    ":message-type": "event",
    ":content-type": "application/json",
}


def _aws_frame(payload: bytes) -> bytes:
    """One message of AWS's event-stream framing: lengths, a CRC32 of them, string headers, the
    payload, and a CRC32 of all that."""
    headers = b"".join(
        bytes([len(name)])
        + name.encode()
        + b"\x07"
        + struct.pack(">H", len(value))
        + value.encode()
        for name, value in _AWS_HEADERS.items()
    )
    prelude = struct.pack(">II", 12 + len(headers) + len(payload) + 4, len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


class _Handler(BaseHTTPRequestHandler):
    server: StubServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _head(self, status: int, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("request-id", f"req_{self.server.count}")

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self._head(status, "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_sse(self, events: list[dict[str, Any]]) -> None:
        self._head(200, "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for event in events:
                self.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client closed a stream halfway: what the tests of that do

    def _send_aws_events(self, events: list[dict[str, Any]]) -> None:
        """A Bedrock stream: each event a ``chunk`` of AWS's binary event-stream framing."""
        self._head(200, "application/vnd.amazon.eventstream")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for event in events:
                payload = json.dumps(
                    {"bytes": base64.b64encode(json.dumps(event).encode()).decode()}
                )
                self.wfile.write(_aws_frame(payload.encode()))
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        with self.server.lock:
            self.server.count += 1
            self.server.requests.append((self.path, body))
        path = self.path.split("?")[0]
        routed = _VERTEX.search(path) or _BEDROCK.search(path)
        if routed is None and path != "/v1/messages":
            self._send_json(404, {"type": "error", "error": {"type": "not_found_error"}})
            return
        model = routed.group(1) if routed is not None else str(body.get("model", ""))
        if model in _ERRORS:
            status, kind, message = _ERRORS[model]
            error = {"type": kind, "message": message}
            self._send_json(status, {"type": "error", "error": error})
            return
        if model == "slow":
            time.sleep(SLOW_SECONDS)
        tools = bool(body.get("tools"))
        if routed is not None and routed.re is _BEDROCK and routed.group(2):
            self._send_aws_events(_events(model, tools))  # Bedrock says "stream" by its path
        elif body.get("stream") is True:
            self._send_sse(_events(model, tools))
        else:
            self._send_json(200, _message(model, tools))


class StubServer(ThreadingHTTPServer):
    """The stub, serving on a free port of 127.0.0.1 from a daemon thread."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.count = 0
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """The ``base_url`` to give ``anthropic.Anthropic``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> StubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)

"""A local HTTP server speaking enough of the OpenAI API for the real ``openai`` client.

``/v1/chat/completions`` (plain and SSE-streamed, with a usage chunk — and ``"usage": null`` on
every other chunk, as OpenAI sends — when the request's ``stream_options.include_usage`` asks
for it, tool calls when ``tools`` are given),
``/v1/responses`` (plain and streamed, with the output item and content part events the SDK's
``responses.stream`` helper needs) and ``/v1/embeddings``. A request for structured output (a
``json_schema`` response format, as ``parse`` and the stream helpers send) is answered with
``STRUCTURED``. The model name picks a failure: ``error-429`` and ``error-500`` answer with that
status, ``slow`` waits before answering (for client timeouts), ``filtered`` starts a stream with
an empty-``choices`` chunk (as Azure's content filter does), ``bad-json`` answers plain text even
to a structured request, ``length`` stops for the length limit. Every request body is kept in
``requests``.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEXT_PARTS = ("Hello", ", ", "world", "!")
TEXT = "".join(TEXT_PARTS)
STRUCTURED_PARTS = ('{"answer": ', '"Hello, world!"}')
STRUCTURED = "".join(STRUCTURED_PARTS)
TOOL_ARGS_PARTS = ('{"city": ', '"Paris"}')
SLOW_SECONDS = 0.6
USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 4,
    "total_tokens": 16,
    "prompt_tokens_details": {"cached_tokens": 2},
    "completion_tokens_details": {"reasoning_tokens": 1},
}


def _structured(model: str, response_format: Any) -> bool:
    """Whether the answer is JSON: asked for by a ``json_schema`` format, and not ``bad-json``."""
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    return kind == "json_schema" and model != "bad-json"


def _finish(model: str, tools: bool) -> str:
    return "length" if model == "length" else "tool_calls" if tools else "stop"


def _chat_body(model: str, tools: bool, structured: bool) -> dict[str, Any]:
    if tools:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": "".join(TOOL_ARGS_PARTS)},
                }
            ],
        }
    else:
        message = {"role": "assistant", "content": STRUCTURED if structured else TEXT}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": f"{model}-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _finish(model, tools),
                "logprobs": None,
            }
        ],
        "usage": USAGE,
    }


def _chunk(
    model: str, choices: list[Any], usage: Any = None, *, with_usage: bool
) -> dict[str, Any]:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": f"{model}-2024-08-06",
        "choices": choices,
    }
    if with_usage:  # as OpenAI does: "usage" on every chunk once asked for, null but the last
        chunk["usage"] = usage
    return chunk


def _chat_chunks(model: str, tools: bool, usage: bool, structured: bool) -> list[dict[str, Any]]:
    chunks = []
    if model == "filtered":
        chunks.append(_chunk(model, [], with_usage=usage))
    chunks.append(_chunk(model, [{"index": 0, "delta": {"role": "assistant"}}], with_usage=usage))
    if tools:
        for i, part in enumerate(TOOL_ARGS_PARTS):
            call: dict[str, Any] = {"index": 0, "function": {"arguments": part}}
            if i == 0:
                call.update(id="call_1", type="function")
                call["function"]["name"] = "weather"
            chunks.append(
                _chunk(model, [{"index": 0, "delta": {"tool_calls": [call]}}], with_usage=usage)
            )
    else:
        parts = STRUCTURED_PARTS if structured else TEXT_PARTS
        chunks.extend(
            _chunk(model, [{"index": 0, "delta": {"content": part}}], with_usage=usage)
            for part in parts
        )
    finish = _finish(model, tools)
    chunks.append(
        _chunk(model, [{"index": 0, "delta": {}, "finish_reason": finish}], with_usage=usage)
    )
    if usage:
        chunks.append(_chunk(model, [], USAGE, with_usage=True))
    return chunks


def _message(text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if text else []
    return {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def _response_body(model: str, structured: bool) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "model": f"{model}-2024-08-06",
        "status": "completed",
        "output": [_message(STRUCTURED if structured else TEXT, "completed")],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 20,
            "output_tokens": 5,
            "total_tokens": 25,
            "input_tokens_details": {"cached_tokens": 10},
            "output_tokens_details": {"reasoning_tokens": 3},
        },
    }


def _response_events(model: str, structured: bool) -> list[dict[str, Any]]:
    """The events of a streamed response, in the order (and with the fields) the API sends."""
    body = _response_body(model, structured)
    text = STRUCTURED if structured else TEXT
    started = {**body, "status": "in_progress", "output": [], "usage": None}
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": text, "annotations": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": _message("", "in_progress"),
        },
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
    ]
    events.extend(
        {"type": "response.output_text.delta", **where, "delta": delta, "logprobs": []}
        for delta in (STRUCTURED_PARTS if structured else TEXT_PARTS)
    )
    events += [
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": _message(text, "completed"),
        },
        {"type": "response.completed", "response": body},
    ]
    return [{**event, "sequence_number": i} for i, event in enumerate(events)]


class _Handler(BaseHTTPRequestHandler):
    server: StubServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", f"req_{self.server.count}")
        self.end_headers()
        self.wfile.write(data)

    def _send_sse(self, events: list[dict[str, Any]], named: bool) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("x-request-id", f"req_{self.server.count}")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for event in events:
                head = f"event: {event['type']}\n" if named else ""
                self.wfile.write(f"{head}data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
            if not named:
                self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client closed a stream halfway: what the tests of that do

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        with self.server.lock:
            self.server.count += 1
            self.server.requests.append((self.path, body))
        model = str(body.get("model", ""))
        if model == "error-429":
            error = {"message": "Rate limit reached", "type": "requests", "code": "rate_limit"}
            self._send_json(429, {"error": error})
            return
        if model == "error-500":
            self._send_json(500, {"error": {"message": "boom", "type": "server_error"}})
            return
        if model == "slow":
            time.sleep(SLOW_SECONDS)
        stream = body.get("stream") is True
        path = self.path.split("?")[0]
        if path.endswith("/chat/completions"):  # Azure adds /deployments/<model> before it
            tools = bool(body.get("tools"))
            structured = _structured(model, body.get("response_format"))
            if stream:
                with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                self._send_sse(_chat_chunks(model, tools, with_usage, structured), named=False)
            else:
                self._send_json(200, _chat_body(model, tools, structured))
        elif path.endswith("/responses"):
            structured = _structured(model, (body.get("text") or {}).get("format"))
            if stream:
                self._send_sse(_response_events(model, structured), named=True)
            else:
                self._send_json(200, _response_body(model, structured))
        elif path.endswith("/embeddings"):
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [
                {"object": "embedding", "index": i, "embedding": [0.5, 0.25, 0.125]}
                for i in range(len(inputs))
            ]
            usage = {"prompt_tokens": 6, "total_tokens": 6}
            self._send_json(200, {"object": "list", "data": data, "model": model, "usage": usage})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_GET(self) -> None:
        """``GET /responses/{id}``: a stored response (``?stream=true``: its events again)."""
        with self.server.lock:
            self.server.count += 1
            self.server.requests.append((self.path, {}))
        path, _, query = self.path.partition("?")
        if "/responses/" not in path:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
        elif "stream=true" in query:
            self._send_sse(_response_events("gpt-4o", False), named=True)
        else:
            self._send_json(200, _response_body("gpt-4o", False))


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
        """The ``base_url`` to give ``openai.OpenAI``."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> StubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)

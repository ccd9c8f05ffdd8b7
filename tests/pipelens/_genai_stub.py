"""A local HTTP server speaking enough of the Gemini REST API for the real ``google-genai`` client.

``POST /v1/models/{model}:generateContent`` (the client picks the version) answers one response, and
``:streamGenerateContent?alt=sse`` the same text in SSE chunks, usage on the last. The model name
picks a failure: ``error-429`` and ``error-500`` answer with that status in Google's error shape.
Every request (path and body) is kept in ``requests``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TEXT_PARTS = ("Hello", ", ", "world", "!")
TEXT = "".join(TEXT_PARTS)
USAGE = {
    "promptTokenCount": 12,
    "candidatesTokenCount": 4,
    "cachedContentTokenCount": 2,
    "thoughtsTokenCount": 3,
    "totalTokenCount": 19,
}
_STATUS = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}


def _response(model: str, text: str, finish: str | None, usage: bool) -> dict[str, Any]:
    content = {"role": "model", "parts": [{"text": text}]}
    candidate: dict[str, Any] = {"content": content, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    body: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": f"{model}-001",
        "responseId": "resp-1",
    }
    if usage:
        body["usageMetadata"] = USAGE
    return body


class _Handler(BaseHTTPRequestHandler):
    server: GenaiStub

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        with self.server.lock:
            self.server.requests.append((self.path, body))
        path = self.path.split("?")[0]
        model, _, method = path.rsplit("/", 1)[-1].partition(":")
        if model.startswith("error-"):
            code = int(model.removeprefix("error-"))
            error = {"code": code, "message": "boom", "status": _STATUS.get(code, "UNKNOWN")}
            self._send_json(code, {"error": error})
            return
        if method == "generateContent":
            self._send_json(200, _response(model, TEXT, "STOP", usage=True))
            return
        if method != "streamGenerateContent":
            self._send_json(404, {"error": {"code": 404, "message": f"no route {self.path}"}})
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        last = len(TEXT_PARTS) - 1
        try:
            for i, part in enumerate(TEXT_PARTS):
                chunk = _response(model, part, "STOP" if i == last else None, usage=i == last)
                self.wfile.write(f"data: {json.dumps(chunk)}\r\n\r\n".encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client closed a stream halfway


class GenaiStub(ThreadingHTTPServer):
    """The stub, serving on a free port of 127.0.0.1 from a daemon thread."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """The ``base_url`` of ``types.HttpOptions``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> GenaiStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)

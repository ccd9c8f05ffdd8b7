"""``auto_patch(httpx)``, ``auto_patch(requests)``: outbound requests carry the current step.

Each client's one sending method (``httpx.Client.send``, ``httpx.AsyncClient.send``,
``requests.Session.send``: every request, redirects included, goes through it) is replaced on
its class by a wrapper that adds :func:`~pipelens.propagation_headers` to the request when a
step is current and the request has no ``traceparent`` yet (the caller's own, or an OTel
instrumentation's, wins; a ``tracestate`` of the request's own keeps its other entries), then
calls the original with the same arguments and returns what it returned. Outside a step the
wrapper costs one context-variable read. Lazy (the library is imported only by ``auto_patch``),
idempotent and undoable, like the LLM patches.
"""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Callable, MutableMapping
from typing import Any, NamedTuple

from pipelens._core import containment
from pipelens._core.context import current_step_var
from pipelens._otel.trace_context import TRACEPARENT, TRACESTATE, step_headers


class _Method(NamedTuple):
    module: str
    class_name: str
    method: str
    is_async: bool


#: Library name → the methods every request of it goes through.
CLIENTS: dict[str, tuple[_Method, ...]] = {
    "httpx": (
        _Method("httpx", "Client", "send", is_async=False),
        _Method("httpx", "AsyncClient", "send", is_async=True),
    ),
    "requests": (_Method("requests", "Session", "send", is_async=False),),
}

_lock = threading.Lock()
_patched: dict[str, list[tuple[type, str, Any]]] = {}


def _inject(headers: MutableMapping[str, str]) -> None:
    try:
        step = current_step_var.get()
        if step is not None and TRACEPARENT not in headers:  # both libraries' ignore case
            # A tracestate of the request's own keeps its other vendors' entries; ours is
            # added or updated.
            headers.update(step_headers(step, headers.get(TRACESTATE)))
    except Exception as exc:
        containment.internal_error("auto_patch.propagation", exc)


def _wrap(original: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
    get = current_step_var.get
    if is_async:

        @functools.wraps(original)
        async def async_send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            if get() is not None:
                _inject(request.headers)
            return await original(self, request, *args, **kwargs)

        return async_send

    @functools.wraps(original)
    def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if get() is not None:
            _inject(request.headers)
        return original(self, request, *args, **kwargs)

    return send


def patch(name: str) -> None:
    """Patch library ``name`` (one of :data:`CLIENTS`); raises ``ImportError`` if not installed."""
    with _lock:
        if name in _patched:
            return
        replaced: list[tuple[type, str, Any]] = []
        for method in CLIENTS[name]:
            cls: type = getattr(importlib.import_module(method.module), method.class_name)
            original = cls.__dict__[method.method]
            setattr(cls, method.method, _wrap(original, method.is_async))
            replaced.append((cls, method.method, original))
        _patched[name] = replaced


def unpatch(name: str) -> None:
    """Put library ``name``'s original methods back (nothing if it is not patched)."""
    with _lock:
        for cls, attr, original in _patched.pop(name, []):
            setattr(cls, attr, original)


def patched() -> list[str]:
    """The libraries patched now."""
    return list(_patched)

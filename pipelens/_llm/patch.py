"""Patching LLM client libraries: generic, lazy, idempotent and undoable.

``auto_patch(openai)`` replaces each endpoint method on its *class* (so clients made before and
after are covered) by a wrapper that opens a ``kind="llm"`` step, calls the original with the
caller's arguments, and returns exactly what the original returned. A streamed result is the same
stream object, its iterator swapped for one that watches the chunks go by. ``unpatch(openai)``
puts the originals back.

A stream's step ends with the stream, by one rule:

- exhausted: ``completed``; the stream raised: ``failed`` with that error;
- its HTTP response closed before the end: ``cancelled`` at that moment, ``stream_closed_early``
  set. Every way of closing reaches the response: ``stream.close()``, leaving a ``with`` block
  (a consumer's exception or ``break`` included), the SDK's stream helpers and raw responses;
- dropped unclosed: ``cancelled`` when it is garbage-collected (a stream and its generator form a
  reference cycle, so that is the next collection, when the SDK itself lets the connection go).
  A litellm stream ends as the caller lets go of it (:func:`pipelens._llm.litellm.attach_stream`).

A sync method answering with a coroutine (litellm's ``completion(..., acompletion=True)``) ends
its step when that is awaited, the step current again meanwhile.

A raw result (``with_raw_response`` / ``with_streaming_response``) of a streamed call is watched
from the moment the caller parses its stream; a body the caller reads itself ends the step when
the response closes. The stream shape is the one Stainless-made SDKs (openai, anthropic) share:
``stream._iterator`` and ``stream.response``; a raw result's ``parse()`` and ``http_response``.

What to patch and what to read is the provider module's business (``openai``), through the typed
contract of :mod:`pipelens._llm.provider`: this module knows nothing of any provider's types.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import importlib.util
import inspect
import sys
import threading
import types
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import Token
from typing import Any

import wrapt

from pipelens._core import containment
from pipelens._core.clock import perf_ns
from pipelens._core.context import current_step_var
from pipelens._core.errors import ConfigurationError
from pipelens._core.llm_record import LLMCall
from pipelens._core.settings import settings
from pipelens._core.step import Step
from pipelens._llm import anthropic, google_genai, litellm, openai
from pipelens._llm.call import close_llm_step, open_llm_step
from pipelens._llm.provider import AttachStream, EndpointConfig, Provider, StreamState

#: Library name → the provider module that knows it.
_PROVIDERS: dict[str, Provider] = {
    "openai": openai,
    "anthropic": anthropic,
    "litellm": litellm,
    "google.genai": google_genai,  # ``from google import genai``: the module's own name
}

# Re-entrant: patching one library imports its modules, which may import another library whose
# post-import hook patches it on the same thread (litellm imports openai).
_lock = threading.RLock()
#: Library name → the (class, attribute, original) triples it replaced.
_patched: dict[str, list[tuple[type, str, Any]]] = {}
#: Installed libraries ``auto_patch()`` patches when the program imports them.
_pending: set[str] = set()


def _library_name(library: types.ModuleType | str, caller: str = "auto_patch") -> str:
    name = library if isinstance(library, str) else getattr(library, "__name__", None)
    if name not in _PROVIDERS:
        raise ConfigurationError(
            f"{caller}({library!r}): PipeLens patches {sorted(_PROVIDERS)}; "
            "record other clients with pipelens.llm_call(...)"
        )
    return name


def _installed(name: str) -> bool:
    try:  # finds the module without importing it (``google.genai`` imports ``google`` only)
        return importlib.util.find_spec(name) is not None
    except ImportError:  # ``google.genai`` without any ``google`` package
        return False


def auto_patch(*libraries: types.ModuleType | str) -> list[str]:
    """Trace every call of the given LLM libraries (default: every supported one installed).

    With no argument, a library the program has imported is patched now, and an installed one
    it has not is patched when it is imported (importing litellm takes seconds: PipeLens does not
    do it for you). Idempotent; returns the names of the libraries patched now, before, or on
    their import.

    Raises:
        ConfigurationError: for a library PipeLens does not support, or one not installed.
    """
    if libraries:
        names = [_library_name(lib) for lib in libraries]
        for name in names:
            _patch(name)
        return names
    names = [name for name in _PROVIDERS if _installed(name)]
    for name in names:
        if name in sys.modules:
            _patch(name)
        else:
            _patch_when_imported(name)
    return names


def _patch(name: str) -> None:
    """Replace the endpoints of library ``name`` (importing it), all or none."""
    with _lock:
        _pending.discard(name)
        if name in _patched:
            return
        provider = _PROVIDERS[name]
        replaced: list[tuple[Any, str, Any]] = []
        try:
            for endpoint in provider.ENDPOINTS:
                cls = _installed_owner(endpoint)
                if cls is None:  # an older library without it
                    continue
                attr = endpoint.method
                original = cls.__dict__[attr]
                wrapper = _make_wrapper(original, provider, endpoint)
                setattr(cls, attr, wrapper)
                replaced.append((cls, attr, original))
        except BaseException:
            for cls, attr, original in replaced:  # all or nothing
                setattr(cls, attr, original)
            raise
        if not replaced:
            raise ConfigurationError(
                f"auto_patch({name!r}): {name} is not installed; pip install 'pipelens[{name}]'"
            )
        _patched[name] = replaced


def _patch_when_imported(name: str) -> None:
    with _lock:
        if name in _patched or name in _pending:
            return
        _pending.add(name)
    # Called at once if the module was imported in the meantime.
    wrapt.register_post_import_hook(_imported, name)


def _imported(module: types.ModuleType) -> None:
    """The post-import hook: patch a pending library the program has just imported."""
    name = module.__name__
    with _lock:
        if name not in _pending:  # unpatched since, or patched by name
            return
    try:
        _patch(name)
    except Exception as exc:  # never break the program's ``import``
        containment.internal_error("auto_patch.on_import", exc)


def unpatch(*libraries: types.ModuleType | str) -> None:
    """Restore the original methods (default: of every patched library, and patch no library
    on its import any more)."""
    names = [_library_name(lib, "unpatch") for lib in libraries] if libraries else list(_patched)
    with _lock:
        if not libraries:
            _pending.clear()
        for name in names:
            _pending.discard(name)
            for cls, attr, original in _patched.pop(name, []):
                setattr(cls, attr, original)


def is_patched(library: types.ModuleType | str) -> bool:
    """Whether ``library`` is patched now."""
    return _library_name(library, "is_patched") in _patched


def _installed_owner(endpoint: EndpointConfig) -> Any:
    """The class (or module) holding ``endpoint`` in the installed library, ``None`` if none."""
    try:
        module = importlib.import_module(endpoint.module)
        owner = getattr(module, endpoint.class_name) if endpoint.class_name else module
    except (ImportError, AttributeError):  # an older library without this endpoint
        return None
    return owner if endpoint.method in owner.__dict__ else None


_Started = tuple[Step, LLMCall, dict[str, Any], "_Watch | None", Token[Step | None]]


def _make_wrapper(
    original: Callable[..., Any], provider: Provider, endpoint: EndpointConfig
) -> Any:
    trace_later = endpoint.trace_later
    if trace_later is None:
        return _traced(original, provider, endpoint)

    @functools.wraps(original)
    def lazy(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if settings.enabled:
            later = functools.partial(_trace_pending, provider, endpoint, kwargs)
            _contained(trace_later, result, later)
        return result

    return lazy


def _trace_pending(
    provider: Provider, endpoint: EndpointConfig, kwargs: dict[str, Any], request: Any
) -> Any:
    """The traced twin of a pending ``request`` (a callable or an awaitable), a call of ``kwargs``.

    The request is sent through the same traced wrapper as a plain method's, so the step opens
    when the result sends it (``__enter__``), under the step current then.
    """
    if inspect.isawaitable(request):

        async def send_awaited(_self: Any, **_kwargs: Any) -> Any:
            return await request

        return _traced(send_awaited, provider, endpoint)(None, **kwargs)

    def send(_self: Any, **_kwargs: Any) -> Any:
        return request()

    return functools.partial(_traced(send, provider, endpoint), None, **kwargs)


def _traced(original: Callable[..., Any], provider: Provider, endpoint: EndpointConfig) -> Any:
    operation = endpoint.operation
    name = f"{provider.NAME}_{operation}"
    positional = endpoint.positional
    skip = 1 if endpoint.class_name else 0  # a method's ``self``
    # A stream helper's request, and a method such as ``generate_content_stream``, always stream.
    always_streams = endpoint.streams or endpoint.trace_later is not None
    only_streams = endpoint.only_streams

    def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Started | None:
        """Open the call's step and make it current; ``None``: call the original untraced."""
        if only_streams and kwargs.get("stream") is not True:
            return None
        parent = current_step_var.get()
        if parent is not None and parent.llm is not None:
            # A library calling another underneath (litellm → openai): one call, one step.
            return None
        try:
            request = kwargs
            if len(args) > skip:
                request = {**dict(zip(positional, args[skip:], strict=False)), **kwargs}
            call = provider.request_call(operation, request)
            if always_streams:
                call.stream = True
            resource = args[0] if skip and args else None  # the method's ``self``
            send = kwargs
            watch = None
            if call.stream:
                swallow = False
                ask = endpoint.ask_stream_usage
                mode = settings.llm_stream_usage
                if ask is not None and mode is not False:
                    with_usage = ask(kwargs, resource, mode is True)
                    if with_usage is not None:
                        send, swallow = with_usage, True
                watch = _Watch(endpoint.new_stream_state(swallow), provider, endpoint)
            step = open_llm_step(call, name)
        except Exception as exc:
            containment.internal_error("auto_patch.start", exc)
            return None
        return step, call, send, watch, current_step_var.set(step)

    def finish(started: _Started, result: Any, kwargs: dict[str, Any]) -> Any:
        """Read ``result`` and return it; a stream is handed to the watch, which ends the step
        later (and may hand the caller a watching generator of the same items)."""
        step, call, _, watch, _ = started
        try:
            mode = provider.raw_mode(kwargs)
            if mode is not None:
                provider.read_raw(call, result, mode)
                if watch is not None:  # a raw stream: the step ends with the stream, not here
                    watch.attach_raw(step, call, result, provider.stream_types())
                    return result
            elif watch is not None and isinstance(result, provider.stream_types()):
                return watch.attach(step, call, result, endpoint.attach_stream)
            else:
                provider.read_response(call, result)
        except Exception:
            if step.status == "running":  # a PipeLens bug: the call succeeded, so does its step
                close_llm_step(step)
            raise
        output = call.output
        close_llm_step(step, None, None if output is None else output.text)
        return result

    def fail(started: _Started, exc: BaseException) -> None:
        step, call = started[0], started[1]
        try:
            provider.read_error(call, exc)
        finally:
            close_llm_step(step, exc)

    if _is_async(original):

        @functools.wraps(original)
        async def async_create(*args: Any, **kwargs: Any) -> Any:
            started = start(args, kwargs) if settings.enabled else None
            if started is None:
                return await original(*args, **kwargs)
            try:
                result = await original(*args, **started[2])
            except BaseException as exc:
                current_step_var.reset(started[4])
                _contained(fail, started, exc)
                raise
            current_step_var.reset(started[4])
            return _finished(finish, started, result, kwargs)

        return async_create

    async def awaited(started: _Started, pending: Any, kwargs: dict[str, Any]) -> Any:
        """The answer of a sync method's coroutine (litellm's ``completion(acompletion=True)``),
        awaited with the step current again, so the call ends when the answer comes."""
        token = current_step_var.set(started[0])
        try:
            result = await pending
        except BaseException as exc:
            current_step_var.reset(token)
            _contained(fail, started, exc)
            raise
        current_step_var.reset(token)
        return _finished(finish, started, result, kwargs)

    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        started = start(args, kwargs) if settings.enabled else None
        if started is None:
            return original(*args, **kwargs)
        try:
            result = original(*args, **started[2])
        except BaseException as exc:
            current_step_var.reset(started[4])
            _contained(fail, started, exc)
            raise
        current_step_var.reset(started[4])
        if type(result) is types.CoroutineType:
            return awaited(started, result, kwargs)
        return _finished(finish, started, result, kwargs)

    return create


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(inspect.unwrap(fn))


def _contained(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:
        containment.internal_error("auto_patch", exc)


def _finished(fn: Callable[..., Any], started: _Started, result: Any, kwargs: Any) -> Any:
    """What ``finish`` hands the caller; on a PipeLens bug, the original result itself."""
    try:
        return fn(started, result, kwargs)
    except Exception as exc:
        containment.internal_error("auto_patch", exc)
        return result


class _StreamClosed(GeneratorExit):
    """Why a streamed call's step was cancelled: its consumer closed or dropped the stream first."""


# Stored as the step's error type (module + qualname), like ``pipelens._GeneratorClosed``.
_StreamClosed.__module__ = "pipelens"
_CLOSED_MESSAGE = "the consumer closed or dropped the stream before its end"


def _suspended(gen: Any) -> bool:
    """Whether the (async) generator ``gen`` waits at a ``yield``: neither running nor done."""
    if hasattr(gen, "ag_frame"):
        return gen.ag_frame is not None and not gen.ag_running
    return getattr(gen, "gi_frame", None) is not None and not gen.gi_running


#: The watches of streams not yet ended, with a weak reference to the object the caller holds,
#: by the reference's id (a referent may be unhashable, or equal to another): dropped unclosed,
#: it ends its step as it is collected, or at exit. ``weakref.finalize`` does the same at
#: 3.1 µs a stream; a weak reference kept here, 0.6 (timeit).
_UNENDED: dict[int, tuple[weakref.ref[Any], _Watch]] = {}
_exit_armed = False


def _dropped(ref: weakref.ref[Any]) -> None:
    held = _UNENDED.pop(id(ref), None)
    if held is not None:
        held[1].end(True)


def _end_unended() -> None:
    while _UNENDED:
        _, (_, watch) = _UNENDED.popitem()
        watch.end(True)


def _end_when_dropped(obj: Any, watch: _Watch) -> None:
    global _exit_armed
    if not _exit_armed:  # armed on first use, as finalize arms its own: the same exit order
        _exit_armed = True
        atexit.register(_end_unended)
    watch.held = ref = weakref.ref(obj, _dropped)
    _UNENDED[id(ref)] = (ref, watch)


class _Watch:
    """Watches a stream's items on their way to the caller and ends the step with the stream."""

    __slots__ = (
        "__weakref__",
        "assembler",
        "call",
        "chunks",
        "ended",
        "first_ns",
        "held",
        "inner",
        "read_error",
        "record_chunk",
        "request_id_header",
        "step",
        "watching",
    )

    def __init__(
        self, assembler: StreamState, provider: Provider, endpoint: EndpointConfig
    ) -> None:
        self.assembler = assembler
        self.record_chunk = assembler.record_chunk  # once: it is called for every item
        self.read_error = provider.read_error
        self.request_id_header = endpoint.request_id_header
        self.chunks = 0
        self.first_ns: int | None = None
        self.ended = False
        # A weak reference: the finalizer holds this watch, which must not keep the stream alive.
        self.inner: weakref.ref[Any] | None = None
        self.watching = False  # the items go through :meth:`iterate` (else: a raw body)
        self.held: weakref.ref[Any] | None = None  # what the caller holds (_end_when_dropped)

    def attach(self, step: Step, call: LLMCall, stream: Any, hook: AttachStream | None) -> Any:
        """Watch ``stream`` (by the provider's ``hook``, else its items and its response's
        close, the object staying the same); what the caller gets."""
        self.step = step
        self.call = call
        if hook is None:
            self._watch_close(getattr(stream, "response", None))
            self._watch_items(stream)
            given = stream
        else:
            given = hook(self, call, stream)
        _end_when_dropped(given, self)
        return given

    def attach_raw(
        self, step: Step, call: LLMCall, raw: Any, stream_types: tuple[type, ...]
    ) -> None:
        """Watch a raw result: its response's close now, its stream once the caller parses it."""
        self.step = step
        self.call = call
        response = raw.http_response
        self._watch_close(response)
        # Whether parsed or not, the response lives as long as anything can still read it.
        _end_when_dropped(response, self)
        parse = raw.parse

        def parsed(result: Any) -> None:
            if not self.watching and not self.ended and isinstance(result, stream_types):
                try:
                    self._watch_items(result)
                except Exception as exc:
                    containment.internal_error("auto_patch.raw_stream", exc)

        if _is_async(parse):

            async def aparse(*args: Any, **kwargs: Any) -> Any:
                result = await parse(*args, **kwargs)
                parsed(result)
                return result

            raw.parse = aparse
        else:

            def sparse(*args: Any, **kwargs: Any) -> Any:
                result = parse(*args, **kwargs)
                parsed(result)
                return result

            raw.parse = sparse

    def _watch_items(self, stream: Any) -> None:
        """Swap ``stream``'s iterator for one that watches the items go by."""
        inner = stream._iterator
        self.inner = weakref.ref(inner)
        if hasattr(inner, "__anext__"):
            stream._iterator = self.aiterate(inner)
        else:
            stream._iterator = self.iterate(inner)

    def _watch_close(self, response: Any) -> None:
        """Learn of ``response``'s close (every way of closing a stream ends there); read its
        request id."""
        if response is None:
            return
        headers = getattr(response, "headers", None)
        if headers is not None:
            self.call.request_id = headers.get(self.request_id_header) or self.call.request_id
        close = response.close
        aclose = getattr(response, "aclose", None)

        def sclose() -> None:
            try:
                close()
            finally:
                self.closed()

        response.close = sclose
        if aclose is not None:

            async def saclose() -> None:
                try:
                    await aclose()
                finally:
                    self.closed()

            response.aclose = saclose

    def closed(self) -> None:
        """The response was closed: by the stream's own generator (running or done: at the end
        or on an error, which the iteration reports), else by the consumer, early."""
        ref = self.inner
        if not self.watching:  # a raw body the caller read itself: the call ends with it
            self.end(False)
        elif ref is not None and _suspended(ref()):
            self.end(True)

    def item(self, item: Any) -> bool:
        """Note one item; whether the caller gets it (only a requested usage chunk is kept)."""
        try:
            deliver, content = self.record_chunk(self.call, item)
        except Exception as exc:
            containment.internal_error("auto_patch.stream", exc)
            return True
        if content and self.first_ns is None:
            self.first_ns = perf_ns()
        if deliver:
            self.chunks += 1
            return True
        return False

    def end(self, early: bool, exc: BaseException | None = None) -> None:
        """End the step once: exhausted, closed early, abandoned, or failed with ``exc``."""
        if self.ended:
            return
        self.ended = True
        if self.held is not None:
            _UNENDED.pop(id(self.held), None)
        try:
            call, step = self.call, self.step
            now = perf_ns()
            call.latency_ns = now - step._t0
            if self.watching:
                call.chunks = self.chunks
            if early and exc is None:
                call.stream_closed_early = True
                exc = _StreamClosed(_CLOSED_MESSAGE)
            self.assembler.finish(call)  # first: it may put the usage on the call
            if self.first_ns is not None:
                call.time_to_first_token_ns = self.first_ns - step._t0
                usage = call.usage
                if usage is not None and usage.output_tokens and now > self.first_ns:
                    call.tokens_per_second = round(
                        usage.output_tokens / ((now - self.first_ns) / 1e9), 3
                    )
            if exc is not None:  # an error event mid-stream: its status and type
                self.read_error(call, exc)
            output = call.output
            close_llm_step(step, exc, None if output is None else output.text)
        except Exception as internal:
            containment.internal_error("auto_patch.stream_end", internal)

    def iterate(self, inner: Iterator[Any]) -> Iterator[Any]:
        """``inner``'s items, each recorded on its way to the caller; the step ends with it."""
        self.watching = True
        return self._iterate(inner)

    def aiterate(self, inner: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """The same for an async ``inner``."""
        self.watching = True
        return self._aiterate(inner)

    def _iterate(self, inner: Iterator[Any]) -> Iterator[Any]:
        note = self.item  # bound once: a stream's items are the hot path of a streamed call
        try:
            for item in inner:
                if note(item):
                    yield item
        except GeneratorExit:
            self.end(True)
            raise
        except BaseException as exc:
            self.end(False, exc)
            raise
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                close()
        self.end(False)

    async def _aiterate(self, inner: AsyncIterator[Any]) -> AsyncIterator[Any]:
        try:
            note = self.item
            async for item in inner:
                if note(item):
                    yield item
        except GeneratorExit:
            self.end(True)
            raise
        except BaseException as exc:
            self.end(False, exc)
            raise
        finally:
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()
        self.end(False)

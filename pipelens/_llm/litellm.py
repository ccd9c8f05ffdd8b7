"""litellm, as pure functions: its module-level calls and what to read of them — a
:class:`~pipelens._llm.provider.Provider` (this module is one).

litellm answers in OpenAI's shapes (``ModelResponse``, ``ModelResponseStream``,
``EmbeddingResponse``), so its answers are read by the OpenAI readers; what is litellm's own is
where the call went (``custom_llm_provider``, which becomes the call's ``provider``) and its
stream wrapper. For ``openai/...`` models litellm calls the OpenAI SDK underneath: with both
patched, the engine sees this module's LLM step current and does not record that call again.
``litellm`` is imported only when the user patches it.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

from pipelens._core.llm_record import LLMCall
from pipelens._llm import openai
from pipelens._llm.openai_compat import read_response as read_openai_response
from pipelens._llm.openai_compat import usage_from_openai
from pipelens._llm.provider import EndpointConfig, Watch

__all__ = [
    "ENDPOINTS",
    "NAME",
    "LiteLLMStream",
    "attach_stream",
    "raw_mode",
    "read_error",
    "read_raw",
    "read_response",
    "request_call",
    "stream_types",
]

NAME: str = "litellm"
#: The request argument that holds each operation's input.
_INPUT = {"chat": "messages", "embeddings": "input"}
#: Request arguments that are not the call's parameters: the input, where to send it, litellm's
#: own plumbing. Anything naming a credential is left out too (:func:`_is_param`).
_NOT_PARAMS = frozenset(
    (
        "model",
        "messages",
        "input",
        "stream",
        "api_base",
        "base_url",
        "extra_headers",
        "headers",
        "timeout",
        "client",
        "litellm_logging_obj",
        "acompletion",
        "shared_session",
    )
)
_SECRET_WORDS = ("key", "token", "secret", "password", "credential")
#: litellm's answer for a stream whose provider reported no usage (its zeros mean unknown).
_UNREPORTED = "UnreportedUsage"


def stream_types() -> tuple[type, ...]:
    """The class of a streamed result (litellm's one wrapper serves sync and async)."""
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

    return (CustomStreamWrapper,)


def raw_mode(kwargs: dict[str, Any]) -> str | None:
    """litellm has no raw mode."""
    return None


@functools.lru_cache(maxsize=1024)  # a program passes the same few names on every call
def _is_param(name: str) -> bool:
    return name not in _NOT_PARAMS and not any(word in name for word in _SECRET_WORDS)


def request_call(operation: str, kwargs: dict[str, Any]) -> LLMCall:
    """The :class:`LLMCall` of a request, before it is sent (its provider: litellm's answer)."""
    messages = kwargs.get(_INPUT[operation])
    if isinstance(messages, list):
        messages = list(messages)  # the caller may append the next turn while a stream runs
    model = kwargs.get("model")
    provider = kwargs.get("custom_llm_provider")
    return LLMCall(
        provider=provider if isinstance(provider, str) else NAME,
        operation=operation,
        request_model=model if isinstance(model, str) else None,
        params={k: v for k, v in kwargs.items() if v is not None and _is_param(k)},
        messages=messages,
        stream=kwargs.get("stream") is True,
    )


def _hidden_params(answer: Any) -> Any:
    """litellm's ``_hidden_params`` of a response or chunk: a pydantic private attribute, read
    from pydantic's private dict (``getattr`` goes through ``BaseModel.__getattr__``, 1.7 µs a
    read, once a call and once a streamed chunk); from the attribute on anything else."""
    private = getattr(answer, "__pydantic_private__", None)
    if isinstance(private, dict) and "_hidden_params" in private:
        return private["_hidden_params"]
    return getattr(answer, "_hidden_params", None)


def read_response(call: LLMCall, response: Any) -> None:
    """Fill ``call`` from a complete response, and where litellm sent it."""
    read_openai_response(call, response)
    hidden = _hidden_params(response)
    if not isinstance(hidden, dict):
        return
    _read_provider(call, hidden.get("custom_llm_provider"))
    if call.response_model is None:
        call.response_model = hidden.get("provider_response_model")
    _read_request_id(call, hidden)


def _read_request_id(call: LLMCall, hidden: Any) -> None:
    """The provider's ``x-request-id``, which litellm keeps among its response headers."""
    headers = hidden.get("additional_headers") if isinstance(hidden, dict) else None
    if isinstance(headers, dict):
        request_id = headers.get("llm_provider-x-request-id")
        if isinstance(request_id, str):
            call.request_id = request_id


def _read_provider(call: LLMCall, provider: Any) -> None:
    if isinstance(provider, str) and provider:
        call.provider = provider


def read_raw(call: LLMCall, raw: Any, mode: str | None) -> None:
    """litellm has no raw mode: nothing to read."""


def read_error(call: LLMCall, exc: BaseException) -> None:
    """Fill ``call`` from a litellm error (OpenAI's error types, with the provider named)."""
    openai.read_error(call, exc)
    _read_provider(call, getattr(exc, "llm_provider", None))


class LiteLLMStream(openai.ChatStream):
    """Assembles a streamed litellm call: OpenAI's chunks, and litellm's own usage report."""

    __slots__ = ()

    def record_chunk(self, call: LLMCall, chunk: Any) -> tuple[bool, bool]:
        """Read one chunk: (hand it to the caller?, did it carry output?)."""
        result = super().record_chunk(call, chunk)
        if call.usage is None:
            # On the last chunk litellm puts the usage the provider reported (or its zeros).
            hidden = _hidden_params(chunk)
            usage = hidden.get("usage") if isinstance(hidden, dict) else None
            if usage is not None and type(usage).__name__ != _UNREPORTED:
                call.usage = usage_from_openai(usage)
        return result


#: A stream class → its watched subclass, made once.
_watched: dict[type, type] = {}


def attach_stream(watch: Watch, call: LLMCall, stream: Any) -> Any:
    """Watch a ``CustomStreamWrapper``: the caller gets a twin of it, an instance of a subclass
    that iterates through ``watch`` (Python reads ``__next__`` from the class, so the instance
    cannot say), sharing the stream's ``__dict__`` (one state: every attribute read or set on
    either is the other's).

    A twin, not the stream itself, because litellm keeps its stream in a reference cycle (its
    logging object's ``model_call_details["original_response"]`` and the stream's
    ``logging_obj``), which only a collection frees. Nothing of litellm's refers to the twin, so
    the moment the caller lets go of it its finalizer ends a stream left half-way ``cancelled``.
    """
    _read_provider(call, getattr(stream, "custom_llm_provider", None))
    _read_request_id(call, getattr(stream, "_hidden_params", None))
    cls = type(stream)
    watched = _watched.get(cls)
    if watched is None:
        watched = _watched.setdefault(cls, _watching(cls))
    twin: Any = object.__new__(watched)
    twin.__dict__ = stream.__dict__
    twin._pipelens_watch = watch
    return twin


def _watching(cls: type) -> type:
    """The watched subclass of ``cls``: iterated through the watch, closed (``close``, leaving a
    ``with``) ending the step then. Its chunk generators hold the twin weakly (the shared state
    holds them): no cycle keeps a twin the caller dropped."""
    base_next = cls.__next__  # type: ignore[attr-defined]
    base_anext = cls.__anext__  # type: ignore[attr-defined]
    base_close = cls.close  # type: ignore[attr-defined]
    base_aclose = cls.aclose  # type: ignore[attr-defined]

    def chunks(ref: weakref.ref[Any]) -> Iterator[Any]:
        while True:
            try:
                chunk = base_next(ref())
            except StopIteration:
                return
            yield chunk

    async def achunks(ref: weakref.ref[Any]) -> AsyncIterator[Any]:
        while True:
            try:
                chunk = await base_anext(ref())
            except StopAsyncIteration:
                return
            yield chunk

    def __next__(self: Any) -> Any:  # noqa: N807 - the iterator protocol's name
        watched = self.__dict__.get("_pipelens_chunks")
        if watched is None:
            watched = self._pipelens_chunks = self._pipelens_watch.iterate(
                chunks(weakref.ref(self))
            )
        return next(watched)

    async def __anext__(self: Any) -> Any:  # noqa: N807 - the iterator protocol's name
        watched = self.__dict__.get("_pipelens_achunks")
        if watched is None:
            watched = self._pipelens_achunks = self._pipelens_watch.aiterate(
                achunks(weakref.ref(self))
            )
        return await watched.__anext__()

    # Closed by the caller: ended now, cancelled unless the stream was done. litellm closes its
    # stream itself too, from inside ``__next__`` (at the end, before its ``StopIteration``, and
    # on an error): that close is no caller's, and the iteration reports how the stream ended.
    def close(self: Any) -> None:
        try:
            base_close(self)
        finally:
            if not _running(self.__dict__.get("_pipelens_chunks")):
                self._pipelens_watch.end(True)

    async def aclose(self: Any) -> None:
        try:
            await base_aclose(self)
        finally:
            if not _running(self.__dict__.get("_pipelens_achunks")):
                self._pipelens_watch.end(True)

    def __del__(self: Any) -> None:  # noqa: N807 - the finalizer protocol's name
        """Nothing: litellm's own finalizer runs once, on its stream, when that is collected,
        as it does unpatched (the twin is a second object over the same state)."""

    namespace = {
        "__del__": __del__,
        "__next__": __next__,
        "__anext__": __anext__,
        "close": close,
        "aclose": aclose,
        "__module__": cls.__module__,
    }
    return type(cls.__name__, (cls,), namespace)


def _running(watched: Any) -> bool:
    """Whether the watched (async) generator ``watched`` is running: litellm's own close."""
    if watched is None:
        return False
    return bool(getattr(watched, "gi_running", False) or getattr(watched, "ag_running", False))


def _endpoint(method: str, operation: str) -> EndpointConfig:
    return EndpointConfig(
        "litellm",
        "",
        method,
        operation,
        LiteLLMStream,
        attach_stream=attach_stream,
        positional=("model", _INPUT[operation]),
    )


#: litellm's module-level calls; ``acompletion`` runs the unpatched ``completion`` inside, once.
ENDPOINTS: tuple[EndpointConfig, ...] = (
    _endpoint("completion", "chat"),
    _endpoint("acompletion", "chat"),
    _endpoint("embedding", "embeddings"),
    _endpoint("aembedding", "embeddings"),
)

"""The contract between the patch engine and a provider module, as typed hooks.

A provider is a module of pure functions (``pipelens._llm.openai``) that satisfies
:class:`Provider`: its name, a table of :class:`EndpointConfig` (which method of which class, what
kind of call, how to assemble its stream) and the readers of requests, responses and errors. The
engine (``patch``) knows nothing of any provider's types; a provider knows nothing of patching.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, NamedTuple, Protocol

from pipelens._core.llm_record import LLMCall


class StreamState(ABC):
    """Assembles one streamed call from the chunks that go by on their way to the caller."""

    __slots__ = ()

    @abstractmethod
    def record_chunk(self, call: LLMCall, chunk: Any) -> tuple[bool, bool]:
        """Read one chunk into ``call``: (hand it to the caller?, did it carry output?)."""

    @abstractmethod
    def finish(self, call: LLMCall) -> None:
        """The stream ended: put the assembled output on ``call``."""


class Watch(Protocol):
    """The engine's watch over one stream, as an :data:`AttachStream` hook sees it."""

    def iterate(self, inner: Iterator[Any]) -> Iterator[Any]:
        """``inner``'s items, each recorded on its way to the caller; the step ends with it."""
        ...

    def aiterate(self, inner: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """The same for an async ``inner``."""
        ...

    def end(self, early: bool) -> None:
        """End the step now (``early``: the caller closed the stream before its end)."""
        ...


#: Hands a streamed result to the watch and returns what the caller gets: the same object with
#: its iteration watched where the library allows it, else a generator of the same items.
AttachStream = Callable[[Watch, LLMCall, Any], Any]
#: Makes the state of one stream; its argument says PipeLens asked for the usage chunk the caller
#: did not ask for (so that chunk is not handed to the caller).
NewStreamState = Callable[[bool], StreamState]
#: The request arguments asking a stream to report its usage, or ``None`` (the caller chose, or
#: it is not safe). Its arguments: the request's, the patched method's ``self`` (the resource,
#: which knows its client), and whether the user asked for usage on every stream (``True``) or
#: only where the provider knows the server takes the request (``False``: the ``"auto"`` default).
AskStreamUsage = Callable[[dict[str, Any], Any, bool], dict[str, Any] | None]
#: Puts a traced request in place of the one a method's result makes later (a stream helper's
#: manager sends it on ``__enter__``): ``trace`` takes that pending request (a callable, or an
#: awaitable) and gives the traced twin to put in its place. Such a request always streams.
TraceLater = Callable[[Any, Callable[[Any], Any]], None]


class EndpointConfig(NamedTuple):
    """One patched method: where it is, what kind of call it makes, how its stream is read."""

    module: str  #: imported only when patching (``openai.resources.chat.completions``)
    class_name: str  #: ``""``: ``method`` is a function of the module itself (``litellm``)
    method: str
    operation: str  #: ``chat``, ``responses``, ``embeddings``: the LLMCall's operation
    new_stream_state: NewStreamState
    ask_stream_usage: AskStreamUsage | None = None
    #: Set for a method that returns before its request is made (``messages.stream(...)``).
    trace_later: TraceLater | None = None
    #: The response header a stream's request id is read from.
    request_id_header: str = "x-request-id"
    #: ``None``: the stream's ``_iterator`` is swapped (the Stainless SDKs: openai, anthropic).
    attach_stream: AttachStream | None = None
    #: The method always streams (google-genai's ``generate_content_stream``).
    streams: bool = False
    #: Names of the positional parameters (after ``self``), so a request is read the same however
    #: it was passed (``litellm.completion("gpt-4o", messages)``).
    positional: tuple[str, ...] = ()
    #: Only a streamed call of it is a model's (``responses.retrieve(id, stream=True)``, which
    #: ``responses.stream(response_id=...)`` resumes; a plain retrieve reads a stored answer).
    only_streams: bool = False


class Provider(Protocol):
    """What the engine needs of a provider module (the module itself is the implementation)."""

    NAME: str
    ENDPOINTS: tuple[EndpointConfig, ...]

    def stream_types(self) -> tuple[type, ...]:
        """The classes of a streamed result (sync and async)."""
        ...

    def raw_mode(self, kwargs: dict[str, Any]) -> str | None:
        """How the call was made raw (``with_raw_response``...), ``None`` for a plain call."""
        ...

    def request_call(self, operation: str, kwargs: dict[str, Any]) -> LLMCall:
        """The :class:`LLMCall` of a request, before it is sent."""
        ...

    def read_response(self, call: LLMCall, response: Any) -> None:
        """Fill ``call`` from a complete (non-streamed) response."""
        ...

    def read_raw(self, call: LLMCall, raw: Any, mode: str | None) -> None:
        """Fill ``call`` from a raw result (``mode`` as :meth:`raw_mode` gave it)."""
        ...

    def read_error(self, call: LLMCall, exc: BaseException) -> None:
        """Fill ``call`` from the error the call raised."""
        ...

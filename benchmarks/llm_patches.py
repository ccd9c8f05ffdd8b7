"""Per-call overhead of ``auto_patch`` for every provider, outside network time.

Run ``python -m benchmarks.llm_patches`` (``--quick`` for a smoke run whose figures mean nothing).
Each call goes through the real SDK to an in-process HTTP transport answering as the test stubs
do (no socket, no network), unpatched and patched in turn, one call of each, in the same process
and runs (``pairs`` says why not blocks), as users make them: inside ``@step`` runs whose events
go through a batching transport to a file. The table shows medians in µs per call, wall-clock,
the calling thread's CPU time and the process's, and the median of each pair's difference: what
PipeLens adds. A second table shows that figure by run size (1 to 1,000 calls in one run), with
the garbage collector on and off; a third PipeLens's own work with the SDK's cut out.
The target is printed as information, never as an exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from benchmarks._machine import machine_lines

TARGET_US = 50.0
_CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
}
_GEMINI = {
    "candidates": [
        {"content": {"role": "model", "parts": [{"text": "Hello!"}]}, "finishReason": "STOP"}
    ],
    "modelVersion": "gemini-2.5-flash-001",
    "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 4, "totalTokenCount": 16},
}
_GEMINI_SSE = b"".join(
    b"data: " + json.dumps({**_GEMINI, "candidates": [c]}).encode() + b"\r\n\r\n"
    for c in [{"content": {"role": "model", "parts": [{"text": t}]}} for t in ("He", "llo", "!")]
)


_GEMINI_JSON = json.dumps(_GEMINI).encode()


def _json_reply(body: dict[str, Any]) -> Callable[[Any], Any]:
    import httpx2

    data = json.dumps(body).encode()

    def reply(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=data, headers={"content-type": "application/json"})

    return reply


def _litellm() -> tuple[Any, Callable[[], object]]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import httpx2
    import litellm
    import openai

    litellm.disable_streaming_logging = True
    client = openai.OpenAI(
        api_key="sk-bench",
        base_url="http://stub.invalid/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(_json_reply(_CHAT))),
    )
    messages = [{"role": "user", "content": "hi"}]
    return litellm, lambda: litellm.completion("openai/gpt-4o", messages, client=client)


def _genai(stream: bool) -> tuple[Any, Callable[[], object]]:
    import httpx2
    from google import genai
    from google.genai import types

    body, kind = (
        (_GEMINI_SSE, "text/event-stream") if stream else (_GEMINI_JSON, "application/json")
    )

    def reply(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": kind})

    http = httpx2.Client(transport=httpx2.MockTransport(reply))
    client = genai.Client(
        api_key="fake",
        http_options=types.HttpOptions(base_url="http://stub.invalid", httpx_client=http),
    )
    if stream:
        return genai, lambda: list(
            client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi")
        )
    return genai, lambda: client.models.generate_content(model="gemini-2.5-flash", contents="hi")


def _chat_sse(texts: Sequence[str]) -> bytes:
    """A streamed chat answer: the role chunk, one chunk per text, the stop chunk, [DONE]."""
    deltas = [
        ({"role": "assistant", "content": ""}, None),
        *(({"content": t}, None) for t in texts),
        ({}, "stop"),
    ]
    return (
        b"".join(
            b"data: "
            + json.dumps(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "gpt-4o-2024-08-06",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
                }
            ).encode()
            + b"\n\n"
            for delta, reason in deltas
        )
        + b"data: [DONE]\n\n"
    )


_CHAT_SSE = _chat_sse(("He", "llo", "!"))
_MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-20250514",
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "cache_read_input_tokens": 5,
        "cache_creation_input_tokens": 3,
        "output_tokens": 4,
    },
}
_MESSAGE_EVENTS = [
    {"type": "message_start", "message": {**_MESSAGE, "content": [], "stop_reason": None}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    *(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
        for t in ("He", "llo", "!")
    ),
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 4},
    },
    {"type": "message_stop"},
]
_MESSAGE_SSE = b"".join(
    f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in _MESSAGE_EVENTS
)


def _replying(body: bytes, kind: str) -> Any:
    import httpx2

    def reply(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": kind})

    return httpx2.Client(transport=httpx2.MockTransport(reply))


def _openai(stream: bool, sse: bytes = _CHAT_SSE) -> tuple[Any, Callable[[], object]]:
    import openai

    body, kind = (
        (sse, "text/event-stream") if stream else (json.dumps(_CHAT).encode(), "application/json")
    )
    client = openai.OpenAI(
        api_key="sk-bench",
        base_url="http://stub.invalid/v1",
        max_retries=0,
        http_client=_replying(body, kind),
    )
    messages: Any = [{"role": "user", "content": "hi"}]
    completions = client.chat.completions
    if stream:
        return openai, lambda: completions.create(model="gpt-4o", messages=messages, stream=True)
    return openai, lambda: completions.create(model="gpt-4o", messages=messages)


def _anthropic(stream: bool) -> tuple[Any, Callable[[], object]]:
    import anthropic

    body, kind = (
        (_MESSAGE_SSE, "text/event-stream")
        if stream
        else (json.dumps(_MESSAGE).encode(), "application/json")
    )
    client = anthropic.Anthropic(
        api_key="sk-ant-bench",
        base_url="http://stub.invalid",
        max_retries=0,
        http_client=_replying(body, kind),
    )
    messages: Any = [{"role": "user", "content": "hi"}]
    resource = client.messages
    if stream:
        return anthropic, lambda: list(
            resource.create(model="claude-sonnet-4", max_tokens=100, messages=messages, stream=True)
        )
    return anthropic, lambda: resource.create(
        model="claude-sonnet-4", max_tokens=100, messages=messages
    )


def _consumed(case: tuple[Any, Callable[[], Any]]) -> tuple[Any, Callable[[], object]]:
    """The case with its stream read to the end on each call."""
    library, call = case
    return library, lambda: list(call())


CASES: dict[str, Callable[[], tuple[Any, Callable[[], object]]]] = {
    "openai chat.completions.create": lambda: _openai(stream=False),
    "openai create stream (5 chunks)": lambda: _consumed(_openai(stream=True)),
    "anthropic messages.create": lambda: _anthropic(stream=False),
    "anthropic create stream (8 events)": lambda: _anthropic(stream=True),
    "litellm.completion": _litellm,
    "genai generate_content": lambda: _genai(stream=False),
    "genai generate_content_stream (3 chunks)": lambda: _genai(stream=True),
}


#: A figure: seconds per call of wall-clock time, of this thread's CPU time and of the process's
#: CPU time. The machine is shared, so wall time holds other processes' turns; thread CPU time is
#: the work of the calling thread alone; process CPU time adds the transport's thread (which
#: encodes and writes the events).
Figure = tuple[float, float, float]


def _time(call: Callable[[], object], number: int) -> Figure:
    gc.collect()
    c0, p0, t0 = time.thread_time(), time.process_time(), time.perf_counter()
    for _ in range(number):
        call()
    return (
        (time.perf_counter() - t0) / number,
        (time.thread_time() - c0) / number,
        (time.process_time() - p0) / number,
    )


def _best(figures: list[Figure]) -> Figure:
    """The minimum of each of wall, thread CPU and process CPU time, in µs."""
    return (
        min(f[0] for f in figures) * 1e6,
        min(f[1] for f in figures) * 1e6,
        min(f[2] for f in figures) * 1e6,
    )


def _clocks() -> tuple[int, int, int]:
    return time.perf_counter_ns(), time.thread_time_ns(), time.process_time_ns()


def pairs(
    call: Callable[[], object], library: Any, number: int, size: int
) -> tuple[list[Figure], list[Figure]]:
    """``number`` calls unpatched and as many patched, one of each in turn, in runs of ``size``
    patched calls: the seconds each call took (wall, thread CPU, process CPU).

    The library stays patched throughout; an unpatched call is the same method with PipeLens
    switched off (``configure(enabled=False)``), which calls the original at once: one function
    frame more than an unpatched method, a tenth of a µs. Patching and unpatching between calls
    instead would change the classes each time, which slows the SDK's next call by far more than
    PipeLens costs; and blocks of calls, all unpatched then all patched, drift with the machine
    (on a shared machine, by hundreds of µs per call).
    """
    import pipelens
    from pipelens._core.settings import settings

    bare: list[Figure] = []
    patched: list[Figure] = []

    @pipelens.step
    def run(n: int) -> None:
        for _ in range(n):
            settings.enabled = False
            w0, c0, p0 = _clocks()
            call()
            w1, c1, p1 = _clocks()
            settings.enabled = True
            call()
            w2, c2, p2 = _clocks()
            bare.append(((w1 - w0) / 1e9, (c1 - c0) / 1e9, (p1 - p0) / 1e9))
            patched.append(((w2 - w1) / 1e9, (c2 - c1) / 1e9, (p2 - p1) / 1e9))

    pipelens.auto_patch(library)
    try:
        for _ in range(3):  # warm both up
            settings.enabled = False
            call()
            settings.enabled = True
            call()
        for done in range(0, number, size):
            run(min(size, number - done))
    finally:
        settings.enabled = True
        pipelens.unpatch(library)
    return bare, patched


def _medians(bare: list[Figure], patched: list[Figure]) -> tuple[Figure, Figure, Figure]:
    """The median µs of each clock, unpatched and patched, and the median of the differences
    of each pair (what PipeLens adds: steadier than the difference of the medians)."""

    def median(values: list[float]) -> float:
        return statistics.median(values) * 1e6

    columns = range(3)
    return (
        (median([b[0] for b in bare]), median([b[1] for b in bare]), median([b[2] for b in bare])),
        tuple(median([p[i] for p in patched]) for i in columns),  # type: ignore[return-value]
        tuple(median([p[i] - b[i] for b, p in zip(bare, patched, strict=True)]) for i in columns),
    )


def measure(label: str, number: int, size: int) -> tuple[Figure, Figure, Figure]:
    """The median µs per call of ``label`` unpatched and patched, and of their differences."""
    library, call = CASES[label]()
    return _medians(*pairs(call, library, number, size))


def _recorded(label: str) -> tuple[Any, Any, dict[str, Any], Callable[[], Any]]:
    """The provider, endpoint, request and a maker of the real result one call of ``label``
    gave (a fresh generator of the same chunks for a stream)."""
    from pipelens._llm import anthropic, google_genai, litellm, openai

    _, call = CASES[label]()
    result = call()
    messages = [{"role": "user", "content": "hi"}]
    if label.startswith("openai"):
        return (
            openai,
            openai.ENDPOINTS[0],
            {"model": "gpt-4o", "messages": messages},
            lambda: result,
        )
    if label.startswith("anthropic"):
        kwargs = {"model": "claude-sonnet-4", "max_tokens": 100, "messages": messages}
        return anthropic, anthropic.ENDPOINTS[0], kwargs, lambda: result
    if label.startswith("litellm"):
        kwargs = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        return litellm, litellm.ENDPOINTS[0], kwargs, lambda: result
    kwargs = {"model": "gemini-2.5-flash", "contents": "hi"}
    if isinstance(result, list):  # the stream's chunks
        chunks = result
        return google_genai, google_genai.ENDPOINTS[1], kwargs, lambda: (c for c in chunks)
    return google_genai, google_genai.ENDPOINTS[0], kwargs, lambda: result


#: The cases whose recorded result :func:`wrapper_cost` can replay (not the Stainless SDKs'
#: streams, which are objects over a live HTTP response).
REPLAYED = (
    "openai chat.completions.create",
    "anthropic messages.create",
    "litellm.completion",
    "genai generate_content",
    "genai generate_content_stream (3 chunks)",
)


def wrapper_cost(label: str, number: int, repeat: int) -> tuple[Figure, Figure]:
    """The minimum µs per call of the original alone and wrapped by the patch engine, the
    original answering at once with a real recorded result: PipeLens's own work, exactly."""
    import pipelens
    from pipelens._llm import patch

    provider, endpoint, kwargs, make = _recorded(label)

    def original(*args: Any, **kw: Any) -> Any:
        return make()

    wrapped = patch._make_wrapper(original, provider, endpoint)
    args = (None,) if endpoint.class_name else ()  # a method's ``self``

    def consume(fn: Callable[..., Any]) -> Callable[[], object]:
        def one() -> object:
            result = fn(*args, **kwargs)
            return list(result) if not hasattr(result, "model_dump") else result

        return one

    @pipelens.step
    def traced(n: int) -> Figure:
        return _time(consume(wrapped), n)

    bare: list[Figure] = []
    patched: list[Figure] = []
    for i in range(repeat + 1):
        b, p = _time(consume(original), number), traced(number)
        if i:
            bare.append(b)
            patched.append(p)
    return _best(bare), _best(patched)


#: Chunks of the stream whose inter-arrival times are compared.
GAP_CHUNKS = 200


def _gaps(call: Callable[[], Any], streams: int) -> list[int]:
    """Nanoseconds between successive chunks as the caller's loop sees them."""
    gaps: list[int] = []
    for _ in range(streams):
        last = time.perf_counter_ns()
        for _chunk in call():
            now = time.perf_counter_ns()
            gaps.append(now - last)
            last = now
    return gaps


def _quantile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3


def chunk_gaps(streams: int, repeat: int) -> list[str]:
    """p50 and p99 of an openai stream's chunk inter-arrival, unpatched and patched, in µs:
    chunks must reach the user as fast as unpatched."""
    import pipelens

    library, call = _openai(stream=True, sse=_chat_sse([f"t{i} " for i in range(GAP_CHUNKS)]))
    bare: list[int] = []
    patched: list[int] = []
    traced = pipelens.step(_gaps)
    for i in range(repeat + 1):  # the first round warms up both and is dropped
        b = _gaps(call, streams)
        pipelens.auto_patch(library)
        try:
            p = traced(call, streams)
        finally:
            pipelens.unpatch(library)
        if i:
            bare += b
            patched += p
    rows = []
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        before, after = _quantile(bare, q), _quantile(patched, q)
        label = f"openai stream chunk gap {name}"
        rows.append(f"{label:<40}{before:>10.1f}{after:>9.1f}{after - before:>+8.1f}")
    return rows


#: The heading of the tables :func:`row` makes rows of.
HEAD = (
    f"{'call':<40}{'wall bare':>10}{'patched':>10}{'+µs':>9}"
    f"{'cpu bare':>10}{'patched':>10}{'+µs':>9}{'proc +µs':>9}"
)


def row(label: str, bare: Figure, patched: Figure, added: Figure, digits: int) -> str:
    """One table row: wall and thread CPU µs, bare, patched and added, and the process CPU µs
    added; the verdict is the thread CPU time's (the wall time's includes other processes'
    turns on a shared machine, the process's the transport's thread, off the caller's path)."""
    cells = "".join(
        f"{bare[i]:>{10}.{digits}f}{patched[i]:>10.{digits}f}{added[i]:>+9.{digits}f}"
        for i in (0, 1)
    )
    verdict = "met" if added[1] < TARGET_US else "missed"
    return f"{label:<40}{cells}{added[2]:>+9.{digits}f}  {verdict}"


def difference(bare: Figure, patched: Figure) -> Figure:
    return (patched[0] - bare[0], patched[1] - bare[1], patched[2] - bare[2])


def by_run_size(number: int, sizes: Sequence[int]) -> list[str]:
    """What an openai chat call adds by the size of the run it is made in, with the garbage
    collector on and off: the thread CPU µs, unpatched, patched and added (medians)."""
    library, call = CASES["openai chat.completions.create"]()
    rows = []
    for collect in (True, False):
        for size in sizes:
            gc.collect()
            if not collect:
                gc.disable()
            try:
                bare, patched, added = _medians(*pairs(call, library, max(number, size), size))
            finally:
                gc.enable()
            label = f"runs of {size:,} calls, gc {'on' if collect else 'off'}"
            rows.append(f"{label:<40}{bare[1]:>10.1f}{patched[1]:>9.1f}{added[1]:>+8.1f}")
    return rows


def replayed_after_call(number: int) -> list[str]:
    """Where a patched call's added time goes: an openai chat call with PipeLens off, then the
    engine's own work on a recorded result (as :func:`wrapper_cost` replays it), against the
    call alone, one of each in turn; and that own work again at once after itself. Thread CPU
    µs, medians."""
    import pipelens
    from pipelens._core.settings import settings
    from pipelens._llm import patch

    library, call = CASES["openai chat.completions.create"]()
    provider, endpoint, kwargs, make = _recorded("openai chat.completions.create")
    wrapped = patch._make_wrapper(lambda *_a, **_k: make(), provider, endpoint)
    alone: list[int] = []
    then_own: list[int] = []
    own_again: list[int] = []

    @pipelens.step
    def run(n: int) -> None:
        for _ in range(n):
            settings.enabled = False
            c0 = time.thread_time_ns()
            call()
            c1 = time.thread_time_ns()
            call()
            settings.enabled = True
            wrapped(None, **kwargs)
            c2 = time.thread_time_ns()
            wrapped(None, **kwargs)
            c3 = time.thread_time_ns()
            alone.append(c1 - c0)
            then_own.append(c2 - c1)
            own_again.append(c3 - c2)

    pipelens.auto_patch(library)
    try:
        for done in range(0, number, 100):
            run(min(100, number - done))
    finally:
        settings.enabled = True
        pipelens.unpatch(library)
    base = statistics.median(alone) / 1e3
    added = statistics.median([b - a for a, b in zip(alone, then_own, strict=True)]) / 1e3
    again = statistics.median(own_again) / 1e3
    return [
        f"{'the call, then its own work replayed':<40}{base:>10.1f}{base + added:>9.1f}"
        f"{added:>+8.1f}",
        f"{'its own work again, at once after':<40}{'':>10}{again:>9.1f}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every case and print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.llm_patches", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--number", type=int, help="calls of each kind per case (default 1000)")
    parser.add_argument("--repeat", type=int, help="repeats of the own-work rows (default 5)")
    parser.add_argument("--size", type=int, help="patched calls per run (default 100)")
    args = parser.parse_args(argv)
    number = args.number if args.number is not None else (6 if args.quick else 1000)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 5)
    size = args.size if args.size is not None else (3 if args.quick else 100)
    for name, value in (("--number", number), ("--repeat", repeat), ("--size", size)):
        if value < 1:
            parser.error(f"{name} {value}: expected a positive integer")
    sizes = (1, 10) if args.quick else (1, 10, 100, 1000)
    with events_to_file():
        for line in _report(number, repeat, size, sizes):
            print(line, flush=True)
    return 0


@contextlib.contextmanager
def events_to_file() -> Iterator[None]:
    """Send the events where users send them: through a batching transport, whose thread
    encodes and writes them (the process CPU column counts that thread too)."""
    import pipelens

    with tempfile.TemporaryDirectory() as tmp:
        pipelens.configure(file=os.path.join(tmp, "events.jsonl"))
        try:
            yield
        finally:
            pipelens.configure(transport=None)


def _report(number: int, repeat: int, size: int, sizes: Sequence[int]) -> Iterator[str]:
    """The report's lines, each as soon as it is measured (a long run shows its progress)."""
    head = HEAD
    yield from [
        f"auto_patch overhead per LLM call, µs (medians of {number:,} calls unpatched and "
        f"{number:,} patched, one of each in turn, in runs of {size:,} patched calls; '+µs' is "
        "the median of each pair's difference), in-process HTTP stub; wall-clock, this "
        "thread's CPU time, and the process's CPU time added (the transport's thread too)",
        *machine_lines(("pipelens", "openai", "anthropic", "litellm", "google-genai")),
        "",
        head,
    ]
    for label in CASES:
        yield row(label, *measure(label, number, size), digits=1)
    yield from [
        "",
        "What a call adds by the size of its run and with the garbage collector on or off",
        "(openai chat.completions.create, thread CPU µs, medians as above)",
        f"{'run':<40}{'cpu bare':>10}{'patched':>9}{'+µs':>8}",
        *by_run_size(max(number // 2, 1), sizes),
        "",
        "Where it goes: the same call with PipeLens off, then the engine's own work replayed on",
        "a recorded result (the third table's), against the call alone (thread CPU µs, medians)",
        *replayed_after_call(max(number // 2, 1)),
        "",
        "PipeLens's own work: the patch engine's wrapper around an original that answers at once",
        f"with the real result one call gave (min of {repeat} repeats of {number * 4:,} calls)",
        head,
    ]
    for label in REPLAYED:
        bare, patched = wrapper_cost(label, number * 4, repeat)
        yield row(label, bare, patched, difference(bare, patched), digits=2)
    streams = number // 50 or 1
    yield from [
        "",
        f"Chunk inter-arrival at the caller, µs ({GAP_CHUNKS + 2} chunks a stream, "
        f"{streams} streams a repeat, {repeat} repeats): unpatched, patched, difference",
        f"{'chunk gap':<40}{'bare':>10}{'patched':>9}{'+µs':>8}",
        *chunk_gaps(streams, repeat),
        "",
        f"target (information, never an exit status): < {TARGET_US:g} µs of the calling "
        "thread's CPU per call; chunk gaps as",
        "unpatched (the p99's difference within the noise of the repeats)",
    ]


if __name__ == "__main__":
    raise SystemExit(main())

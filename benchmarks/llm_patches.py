"""Per-call overhead of ``auto_patch`` for every provider, outside network time.

Run ``python -m benchmarks.llm_patches`` (``--quick`` for a smoke run whose figures mean nothing).
Each call goes through the real SDK to an in-process HTTP transport answering as the test stubs
do (no socket, no network), unpatched and patched in the same process, their repeats interleaved
so both see the same machine; the patched calls run inside one ``@step`` run, as users make them.
The table shows the minimum of the repeats in µs per call, wall-clock and CPU time of the calling
thread, and the differences: what PipeLens adds.
The target is printed as information, never as an exit status.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from collections.abc import Callable, Sequence
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


#: A figure: seconds per call of wall-clock time and of this thread's CPU time. The machine is
#: shared, so wall time holds other processes' turns; CPU time is the work of this thread alone.
Figure = tuple[float, float]


def _time(call: Callable[[], object], number: int) -> Figure:
    gc.collect()
    c0, t0 = time.thread_time(), time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - t0) / number, (time.thread_time() - c0) / number


def _best(figures: list[Figure]) -> Figure:
    """The minimum of each of wall and CPU time, in µs."""
    return min(f[0] for f in figures) * 1e6, min(f[1] for f in figures) * 1e6


def measure(label: str, number: int, repeat: int) -> tuple[Figure, Figure]:
    """The minimum µs per call of ``label`` (wall, CPU), unpatched and patched, repeats
    interleaved."""
    import pipelens

    library, call = CASES[label]()

    @pipelens.step
    def traced(n: int) -> Figure:
        return _time(call, n)

    bare: list[Figure] = []
    patched: list[Figure] = []
    for i in range(repeat + 1):  # the first round warms up both and is dropped
        b = _time(call, number)
        pipelens.auto_patch(library)
        try:
            p = traced(number)
        finally:
            pipelens.unpatch(library)
        if i:
            bare.append(b)
            patched.append(p)
    return _best(bare), _best(patched)


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


def _row(label: str, bare: Figure, patched: Figure, digits: int) -> str:
    """One table row: wall and CPU µs, bare, patched and their difference; the verdict is the
    CPU time's (the wall time's includes other processes' turns on a shared machine)."""
    cells = "".join(
        f"{b:>{w}.{digits}f}{p:>9.{digits}f}{p - b:>+8.{digits}f}"
        for b, p, w in ((bare[0], patched[0], 10), (bare[1], patched[1], 10))
    )
    verdict = "met" if patched[1] - bare[1] < TARGET_US else "missed"
    return f"{label:<40}{cells}  {verdict}"


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every case and print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.llm_patches", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--number", type=int, help="calls per repeat (default 300)")
    parser.add_argument("--repeat", type=int, help="timed repeats (default 7)")
    args = parser.parse_args(argv)
    number = args.number if args.number is not None else (5 if args.quick else 300)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 7)
    for name, value in (("--number", number), ("--repeat", repeat)):
        if value < 1:
            parser.error(f"{name} {value}: expected a positive integer")
    head = (
        f"{'call':<40}{'wall bare':>10}{'patched':>9}{'+µs':>8}"
        f"{'cpu bare':>10}{'patched':>9}{'+µs':>8}"
    )
    lines = [
        f"auto_patch overhead per LLM call, µs (min of {repeat} interleaved repeats "
        f"of {number:,} calls, in-process HTTP stub); wall-clock and this thread's CPU time",
        *machine_lines(("pipelens", "openai", "anthropic", "litellm", "google-genai")),
        "",
        head,
    ]
    for label in CASES:
        lines.append(_row(label, *measure(label, number, repeat), digits=1))
    lines += [
        "",
        "PipeLens's own work: the patch engine's wrapper around an original that answers at once",
        f"with the real result one call gave (min of {repeat} repeats of {number * 20:,} calls)",
        head,
    ]
    for label in REPLAYED:
        lines.append(_row(label, *wrapper_cost(label, number * 20, repeat), digits=2))
    lines += [
        "",
        f"Chunk inter-arrival at the caller, µs ({GAP_CHUNKS + 2} chunks a stream, "
        f"{number // 10 or 1} streams a repeat, {repeat} repeats): unpatched, patched, difference",
        f"{'chunk gap':<40}{'bare':>10}{'patched':>9}{'+µs':>8}",
        *chunk_gaps(number // 10 or 1, repeat),
        "",
        f"target (information, never an exit status): < {TARGET_US:g} µs per call; chunk gaps as",
        "unpatched (the p99's difference within the noise of the repeats)",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

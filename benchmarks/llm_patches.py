"""Per-call overhead of ``auto_patch`` for litellm and google-genai, outside network time.

Run ``python -m benchmarks.llm_patches`` (``--quick`` for a smoke run whose figures mean nothing).
Each call goes through the real SDK to an in-process HTTP transport answering as the test stubs
do (no socket, no network), unpatched and patched in the same process, their repeats interleaved
so both see the same machine; the patched calls run inside one ``@step`` run, as users make them.
The table shows the minimum of the repeats in µs per call and the difference: what PipeLens adds.
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


CASES: dict[str, Callable[[], tuple[Any, Callable[[], object]]]] = {
    "litellm.completion": _litellm,
    "genai generate_content": lambda: _genai(stream=False),
    "genai generate_content_stream (3 chunks)": lambda: _genai(stream=True),
}


def _time(call: Callable[[], object], number: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - t0) / number


def measure(label: str, number: int, repeat: int) -> tuple[float, float]:
    """The minimum µs per call of ``label``, unpatched and patched, repeats interleaved."""
    import pipelens

    library, call = CASES[label]()

    @pipelens.step
    def traced(n: int) -> float:
        return _time(call, n)

    bare: list[float] = []
    patched: list[float] = []
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
    return min(bare) * 1e6, min(patched) * 1e6


def _recorded(label: str) -> tuple[Any, Any, dict[str, Any], Callable[[], Any]]:
    """The provider, endpoint, request and a maker of the real result one call of ``label``
    gave (a fresh generator of the same chunks for a stream)."""
    from pipelens._llm import google_genai, litellm

    _, call = CASES[label]()
    result = call()
    if label.startswith("litellm"):
        kwargs = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        return litellm, litellm.ENDPOINTS[0], kwargs, lambda: result
    kwargs = {"model": "gemini-2.5-flash", "contents": "hi"}
    if isinstance(result, list):  # the stream's chunks
        chunks = result
        return google_genai, google_genai.ENDPOINTS[1], kwargs, lambda: (c for c in chunks)
    return google_genai, google_genai.ENDPOINTS[0], kwargs, lambda: result


def wrapper_cost(label: str, number: int, repeat: int) -> tuple[float, float]:
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
    def traced(n: int) -> float:
        return _time(consume(wrapped), n)

    bare: list[float] = []
    patched: list[float] = []
    for i in range(repeat + 1):
        b, p = _time(consume(original), number), traced(number)
        if i:
            bare.append(b)
            patched.append(p)
    return min(bare) * 1e6, min(patched) * 1e6


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
    lines = [
        f"auto_patch overhead per LLM call, µs (min of {repeat} interleaved repeats "
        f"of {number:,} calls, in-process HTTP stub)",
        *machine_lines(("pipelens", "litellm", "google-genai", "openai")),
        "",
        f"{'call':<42}{'bare µs':>10}{'patched µs':>12}{'overhead µs':>13}",
    ]
    for label in CASES:
        bare, patched = measure(label, number, repeat)
        verdict = "met" if patched - bare < TARGET_US else "missed"
        lines.append(f"{label:<42}{bare:>10.1f}{patched:>12.1f}{patched - bare:>+13.1f}  {verdict}")
    lines += [
        "",
        "PipeLens's own work: the patch engine's wrapper around an original that answers at once",
        f"with the real result one call gave (min of {repeat} repeats of {number * 20:,} calls)",
        f"{'call':<42}{'bare µs':>10}{'patched µs':>12}{'overhead µs':>13}",
    ]
    for label in CASES:
        bare, patched = wrapper_cost(label, number * 20, repeat)
        verdict = "met" if patched - bare < TARGET_US else "missed"
        lines.append(f"{label:<42}{bare:>10.2f}{patched:>12.2f}{patched - bare:>+13.2f}  {verdict}")
    lines += ["", f"target (information, never an exit status): < {TARGET_US:g} µs per call"]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

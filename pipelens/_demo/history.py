"""What ``make run`` shows: days of runs of a few pipelines, sent to a real server in seconds.

Every run is real PipeLens code — ``@step`` functions nesting across a thread pool, asyncio
tasks and generators, LLM calls of the real ``openai`` client (patched by ``auto_patch``) against
a local stub of the OpenAI API, tags, users, sessions, metadata and scores — run now, quickly.
:class:`Backdated` then moves each run's times to a moment of the last days and stretches them
(a 60 ms run is shown as a second or two): the wire's times are the client's to set. One run's
client "dies" halfway (only its first events are sent, with no heartbeat after), so the server
marks it ``abandoned``; :func:`run_live` keeps a run going while the server serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

import pipelens
from pipelens._demo.openai_stub import StubServer
from pipelens._demo.pipeline import answer
from pipelens._transports import HttpTransport, Transport
from pipelens.events import Event, StepFinished

#: Times on the dashboard are the real ones times this (a 60 ms run lasts 1.5 s there).
STRETCH = 25
_HOUR_NS = 3600 * 10**9
#: How far back the history goes.
DAYS = 4
USERS = ("ana", "bo", "chen", "dara", "emeka")
QUESTIONS = (
    "how do refunds work",
    "reset my password",
    "what is contextvars",
    "pricing of the pro plan",
    "export my data",
    "why is my invoice late",
)


class Backdated:
    """Sends one run's events to ``inner`` as if the run had started at ``start_ns``, its times
    stretched ``stretch`` times; with ``keep``, only the first ``keep`` events (a client that
    died)."""

    def __init__(
        self, inner: Transport, start_ns: int, stretch: int = STRETCH, keep: int | None = None
    ) -> None:
        self.inner = inner
        self.start_ns = start_ns
        self.stretch = stretch
        self.keep = keep
        self.sent = 0
        self._origin: int | None = None
        self.scrubs_events = getattr(inner, "scrubs_events", False)

    def _at(self, t: int) -> int:
        if self._origin is None:  # the run's start: its first event's time
            self._origin = t
        return self.start_ns + (t - self._origin) * self.stretch

    def send(self, event: Event) -> bool:
        if self.keep is not None and self.sent >= self.keep:
            return True  # the "dead" client never sends it
        self.sent += 1
        changes: dict[str, Any] = {
            name: self._at(getattr(event, name))
            for name in ("start_ns", "end_ns", "at_ns")
            if hasattr(event, name)
        }
        if hasattr(event, "duration_ns"):
            changes["duration_ns"] = getattr(event, "duration_ns") * self.stretch  # noqa: B009
        if isinstance(event, StepFinished) and event.llm is not None:
            changes["llm"] = self._stretched_call(event.llm)
        return self.inner.send(msgspec.structs.replace(event, **changes))

    def _stretched_call(self, text: str) -> str:
        call = msgspec.json.decode(text)
        for name in ("latency_ns", "time_to_first_token_ns"):
            if isinstance(call.get(name), int):
                call[name] *= self.stretch
        if isinstance(call.get("tokens_per_second"), int | float):
            call["tokens_per_second"] /= self.stretch
        return msgspec.json.encode(call).decode()

    def flush(self, timeout: float | None = None) -> bool:
        return self.inner.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        return None  # the inner transport serves every run: its owner closes it


_client_lock = threading.Lock()
_clients: list[Any] = []


def llm() -> Any:
    """The process's real ``openai`` client, patched, against a local stub of the OpenAI API
    started on first use (a daemon thread); ``None`` without openai."""
    with _client_lock:
        if not _clients:
            try:
                import openai
            except ImportError:
                _clients.append(None)
            else:
                pipelens.auto_patch(openai)
                stub = StubServer().__enter__()
                _clients.append(
                    openai.OpenAI(base_url=stub.base_url, api_key="demo-no-key", max_retries=0)
                )
        return _clients[0]


# -- the pipelines --------------------------------------------------------------------------------


@pipelens.step
def generate(question: str, context: str) -> str:
    """The answer from the LLM (an ``llm`` step below this one, made by the patched client)."""
    client = llm()
    if client is None:
        return f"(no openai installed) {context}"
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Answer from the context only."},
            {"role": "user", "content": f"{question}\n\nContext: {context}"},
        ],
        temperature=0.2,
    )
    return str(reply.choices[0].message.content)


def rag(rng: random.Random, question: str) -> None:
    """The RAG pipeline: retrieval across threads, asyncio and a generator, then the LLM."""
    if rng.random() < 0.12:
        pipelens.record("index", "docs-v3")
        raise TimeoutError("the vector store did not answer within 2 s")
    draft = answer(question)
    text = generate(question, draft)
    pipelens.score("helpful", rng.random() > 0.25)
    pipelens.score("relevance", round(rng.uniform(0.55, 0.99), 2), comment="LLM judge")
    pipelens.record("answer_chars", len(text))


@pipelens.step
def parse(name: str) -> dict[str, Any]:
    time.sleep(0.004)
    if int(name[4:-4]) % 41 == 0:
        raise ValueError(f"malformed PDF: {name} has no xref table")
    return {"name": name, "pages": len(name)}


@pipelens.step
def chunks(doc: dict[str, Any]) -> Iterator[str]:
    """A generator step: it spans the whole iteration."""
    for page in range(min(doc["pages"], 4)):
        time.sleep(0.001)
        yield f"{doc['name']}#{page}"


@pipelens.step
def embed(texts: list[str]) -> int:
    client = llm()
    if client is not None:
        client.embeddings.create(model="text-embedding-3-small", input=texts)
    return len(texts)


@pipelens.step
def store(n: int) -> int:
    time.sleep(0.003)
    pipelens.record("rows_written", n)
    return n


def ingest(batch: int) -> None:
    """The ETL pipeline: parse documents in a thread pool, chunk them, embed, store."""
    names = [f"doc-{batch * 5 + i}.pdf" for i in range(5)]
    pipelens.record("batch", batch)
    with ThreadPoolExecutor(max_workers=3) as pool:
        docs = list(pool.map(parse, names))
    texts = [text for doc in docs for text in chunks(doc)]
    store(embed(texts))


@pipelens.step
async def call_tool(tool: str, city: str) -> str:
    await asyncio.sleep(0.01)
    return f"{tool}({city}) = 18°C, light rain"


@pipelens.step
def plan(question: str) -> str:
    client = llm()
    if client is None:
        return "weather"
    reply = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": question}],
        tools=[
            {
                "type": "function",
                "function": {"name": "weather", "parameters": {"type": "object"}},
            }
        ],
    )
    calls = reply.choices[0].message.tool_calls or []
    return calls[0].function.name if calls else "none"


@pipelens.step
def respond(facts: list[str]) -> str:
    """A streamed LLM answer: the step ends with the stream."""
    client = llm()
    if client is None:
        return " ".join(facts)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "; ".join(facts)}],
        stream=True,
        stream_options={"include_usage": True},
    )
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def agent(rng: random.Random, question: str) -> None:
    """The agent: plan with tools, call them concurrently (asyncio), answer in a stream."""
    tool = plan(question)

    async def gather() -> list[str]:
        cities = ("Paris", "Lagos", "Osaka")[: rng.randint(1, 3)]
        return list(await asyncio.gather(*(call_tool(tool, c) for c in cities)))

    facts = asyncio.run(gather())
    if rng.random() < 0.15:
        raise RuntimeError("the tool answered an unknown unit: 'kelvinish'")
    respond(facts)
    pipelens.score("outcome", rng.choice(["resolved", "resolved", "escalated"]))


# -- filling a server ------------------------------------------------------------------------------


def _runs(rng: random.Random, now_ns: int) -> list[tuple[int, str, dict[str, Any]]]:
    """``(start, pipeline, who)`` of every past run, oldest first."""
    planned = []
    for i in range(48):
        # More runs lately than days ago, so that the last 24 hours (the pages' default) are busy.
        start = now_ns - int(rng.triangular(0.05, DAYS * 24, 0.05) * _HOUR_NS)
        kind = ("rag_demo", "rag_demo", "support_agent", "ingest_docs")[i % 4]
        user = rng.choice(USERS)
        who: dict[str, Any] = {"tags": ["demo"], "metadata": {"region": rng.choice(["eu", "us"])}}
        if kind != "ingest_docs":
            who["user_id"] = user
            # A few conversations per user: their runs read in order on the session page.
            who["session_id"] = f"conv-{user}-{i % 3}"
            who["tags"].append(rng.choice(["v1", "v2"]))
        else:
            who["tags"].append("nightly")
            who["metadata"]["source"] = "s3://acme-docs/inbox"
        planned.append((start, kind, who))
    return sorted(planned)


def _one(rng: random.Random, kind: str, i: int) -> None:
    question = rng.choice(QUESTIONS)
    if kind == "rag_demo":
        rag(rng, question)
    elif kind == "support_agent":
        agent(rng, question)
    else:
        ingest(i)


def fill(url: str, token: str | None = None) -> int:
    """Send the demo's history to the server at ``url``; returns the number of runs sent."""
    rng = random.Random(14)
    now_ns = time.time_ns()
    sink = HttpTransport(url, token, heartbeat=None, spool=False)
    sent = 0
    try:
        for i, (start, kind, who) in enumerate(_runs(rng, now_ns)):
            pipeline = pipelens.Pipeline(kind, transport=Backdated(sink, start), **who)
            with contextlib.suppress(Exception), pipeline.run():
                _one(rng, kind, i)
            sent += 1
        # A client killed mid-run, three minutes ago: its end never comes.
        dying = Backdated(sink, now_ns - 180 * 10**9, keep=7)
        pipeline = pipelens.Pipeline("support_agent", transport=dying, tags=["demo"])
        with contextlib.suppress(Exception), pipeline.run(user_id="bo"):
            agent(rng, "cancel my order")
        sent += 1
        sink.flush(30)
    finally:
        sink.close(5)
    return sent


def run_live(url: str, token: str | None, stop: threading.Event, started: threading.Event) -> None:
    """Keep a run of ``nightly_eval`` going (a case every second or so) until ``stop`` is set;
    after 500 cases it finishes and the next one starts. ``started`` is set once the server
    has the first one's start."""
    rng = random.Random(1)
    sink = HttpTransport(url, token, heartbeat=2.0, spool=False)
    try:
        while not stop.is_set():
            pipeline = pipelens.Pipeline("nightly_eval", transport=sink, tags=["demo", "live"])
            with pipeline.run(metadata={"suite": "regression"}):
                sink.flush(10)
                started.set()
                for case in range(500):
                    if stop.wait(rng.uniform(0.6, 1.4)):
                        break
                    eval_case(rng, case)
    finally:
        sink.close(5)


@pipelens.step(capture_args=False)
def eval_case(rng: random.Random, case: int) -> None:
    """One case of the live evaluation: an LLM answer and a score of this step."""
    generate(QUESTIONS[case % len(QUESTIONS)], "the evaluation set")
    pipelens.record("case", case)
    step = pipelens.current_step()
    key = None if step is None else step.key
    pipelens.score("exact_match", rng.random() > 0.3, step_key=key)

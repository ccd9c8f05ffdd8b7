"""The demo pipeline of ``pipelens demo``: a small RAG-shaped run whose steps nest across a
thread pool, asyncio tasks and a generator (``history`` runs it with an LLM call too)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pipelens
from pipelens._core.step import Run
from pipelens._transports import Transport


@pipelens.step
def retrieve(query: str, k: int = 3) -> list[str]:
    """Pretend to fetch documents."""
    time.sleep(0.01)
    docs = [f"doc-{i} about {query}" for i in range(k)]
    pipelens.record("n_docs", len(docs))
    return docs


@pipelens.step
def score(doc: str) -> float:
    """Score one document (runs in a worker thread, still nested under its parent)."""
    time.sleep(0.005)
    return float(len(doc))


@pipelens.step
def stream_tokens(text: str) -> Iterator[str]:
    """A generator step: it spans the whole iteration."""
    for word in text.split():
        time.sleep(0.002)
        yield word


@pipelens.step
async def rerank(docs: list[str]) -> list[str]:
    """Parallel asyncio children nest under this step, never under each other."""

    @pipelens.step
    async def fetch_detail(doc: str) -> str:
        await asyncio.sleep(0.01)
        return doc.upper()

    details = await asyncio.gather(*(fetch_detail(d) for d in docs))
    return sorted(details)


@pipelens.step
def answer(query: str) -> str:
    """The outermost step: calling it starts a run named ``answer``."""
    docs = retrieve(query)
    with ThreadPoolExecutor(max_workers=2) as pool:
        scores = list(pool.map(score, docs))
    pipelens.record("best_score", max(scores))
    ranked = asyncio.run(rerank(docs))
    with pipelens.span("compose"):
        return " ".join(stream_tokens(f"The answer uses {ranked[0]}"))


def run_demo(transport: Transport | None = None) -> Run:
    """Run the demo once as pipeline ``rag_demo`` (sending to ``transport`` when given)."""
    with pipelens.Pipeline("rag_demo", transport=transport).run() as run:
        run.root.result = answer("contextvars")
    return run

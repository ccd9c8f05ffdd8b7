"""The ``pipelens`` command: ``demo`` runs a small pipeline and prints its tree; ``serve`` starts
the server (the ``server`` extra)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pipelens


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pipelens`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        # The server is an optional extra: import it only when asked for.
        try:
            from pipelens_server.cli import main as serve_main
        except ImportError as exc:
            print(
                f"pipelens serve needs the server extra: pip install 'pipelens[server]' ({exc})",
                file=sys.stderr,
            )
            return 2
        return serve_main(argv[1:])
    parser = argparse.ArgumentParser(prog="pipelens", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run a demo pipeline and print its step tree")
    commands.add_parser("serve", help="start the dashboard server (see: pipelens serve --help)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        with pipelens.Pipeline("rag_demo").run() as run:
            print(answer("contextvars"))
        print(run.root.tree_text())
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())

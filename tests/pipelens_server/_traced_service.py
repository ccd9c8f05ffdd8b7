"""A FastAPI service traced by PipeLens, for the two-process tests (``uvicorn`` runs it).

Its runs go where ``PIPELENS_URL`` says; every request is one run (the middleware), or a part
of its caller's run when a ``traceparent`` from PipeLens comes with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

import pipelens
import pipelens.fastapi


@pipelens.step
def lookup(word: str) -> str:
    return word.upper()


@pipelens.step
def answer_step(question: str) -> str:
    return " ".join(lookup(word) for word in question.split())


@contextlib.asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    # uvicorn ends a SIGTERMed process by the signal itself, which skips atexit: flush here.
    assert pipelens.flush(20)


app = FastAPI(lifespan=lifespan)
app.add_middleware(pipelens.fastapi.PipelensMiddleware)


@app.get("/answer")
def answer(question: str) -> dict[str, str]:
    return {"answer": answer_step(question)}

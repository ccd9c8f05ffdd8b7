"""The OpenAI stub server the tests use: the demo's (``pipelens._demo.openai_stub``), which
``make run`` needs outside the tests too."""

from pipelens._demo.openai_stub import (
    SLOW_SECONDS,
    STRUCTURED,
    STRUCTURED_PARTS,
    TEXT,
    TEXT_PARTS,
    TOOL_ARGS_PARTS,
    USAGE,
    StubServer,
)

__all__ = [
    "SLOW_SECONDS",
    "STRUCTURED",
    "STRUCTURED_PARTS",
    "TEXT",
    "TEXT_PARTS",
    "TOOL_ARGS_PARTS",
    "USAGE",
    "StubServer",
]

"""PipeLens: see every step of your multi-step Python program.

Add ``@pipelens.step`` to plain functions; the outermost one called starts a run, and every step
called inside nests under it — across asyncio tasks, threads and generators — with its timing,
inputs, result, records and error. ``pipelens.configure(...)`` says where runs go.
"""

import contextlib as _contextlib

import msgspec as _msgspec

from pipelens._configure import auto_patch, configure, unpatch
from pipelens._core import propagation as _propagation
from pipelens._core.context import current_run, current_step
from pipelens._core.decorator import span, step
from pipelens._core.errors import ConfigurationError, PipelensError, TransportError
from pipelens._core.score import score
from pipelens._core.step import Run, Step, record
from pipelens._core.views import NestedStepMeta, PipelineMeta, StepGanttArg, StepMeta, TimeMeta
from pipelens._core.who import set_run, tag
from pipelens._integrations import StructlogProcessor, structlog_processor
from pipelens._llm import (
    LLMCall,
    LLMOutput,
    ModelUsage,
    TokenUsage,
    ToolCall,
    llm_call,
)
from pipelens._otel import OtlpTransport, continue_run, propagation_headers
from pipelens._otel import bridge as _bridge

# The seed exported the constant too: importable, but kept out of the plain-sorted __all__.
from pipelens._seed import LLM_RESPONSE_RECORD_KEY_PREFIX as LLM_RESPONSE_RECORD_KEY_PREFIX
from pipelens._seed import (
    LLMTrack,
    LLMUsage,
    OpenAICompatibleChatCompletionResponse,
    Pipeline,
    with_step,
)
from pipelens._transports import (
    BatchingTransport,
    FileTransport,
    HttpTransport,
    MemoryTransport,
    Transport,
    TransportStats,
    flush,
    read_event_file,
    shutdown,
    transport_stats,
)
from pipelens._version import __version__

# Plain-sorted (a test checks), so the seed's constant sorts among the names it belongs to.
__all__ = [  # noqa: RUF022
    "BatchingTransport",
    "ConfigurationError",
    "FileTransport",
    "HttpTransport",
    "LLMCall",
    "LLMOutput",
    "LLMTrack",
    "LLMUsage",
    "LLM_RESPONSE_RECORD_KEY_PREFIX",
    "MemoryTransport",
    "ModelUsage",
    "NestedStepMeta",
    "OpenAICompatibleChatCompletionResponse",
    "OtlpTransport",
    "PipelensError",
    "Pipeline",
    "PipelineMeta",
    "Run",
    "Step",
    "StepGanttArg",
    "StepMeta",
    "StructlogProcessor",
    "TimeMeta",
    "TokenUsage",
    "ToolCall",
    "Transport",
    "TransportError",
    "TransportStats",
    "__version__",
    "auto_patch",
    "configure",
    "continue_run",
    "current_run",
    "current_step",
    "flush",
    "llm_call",
    "propagation_headers",
    "read_event_file",
    "record",
    "score",
    "set_run",
    "shutdown",
    "span",
    "step",
    "structlog_processor",
    "tag",
    "transport_stats",
    "unpatch",
    "with_step",
]

# Users see ``pipelens.Run``, not ``pipelens._core.step.Run`` (as httpx does). msgspec Structs
# keep their own module: msgspec resolves their (string) annotations there, so typed decoding
# (``msgspec.json.decode(..., type=pipelens.LLMCall)``) needs it.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and issubclass(_obj, _msgspec.Struct):
        continue
    if getattr(_obj, "__module__", "").startswith("pipelens._"):
        with _contextlib.suppress(AttributeError, TypeError):  # wrapt proxies, builtins
            _obj.__module__ = "pipelens"
del _name, _obj

_propagation.install()
_bridge.install()

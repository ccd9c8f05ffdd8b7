"""The LLM room: ``llm_call`` and the pricing of recorded calls, the OpenAI-compatible readers,
the patch engine with its typed provider contract (``provider``), one module per provider
(``openai``), and the shipped prices. The record of a call itself is the core's (``llm_record``),
re-exported here. Only re-exports.
"""

from pipelens._core.llm_record import LLMCall, LLMOutput, ModelUsage, TokenUsage, ToolCall
from pipelens._llm.call import llm_call
from pipelens._llm.patch import auto_patch, unpatch

__all__ = [
    "LLMCall",
    "LLMOutput",
    "ModelUsage",
    "TokenUsage",
    "ToolCall",
    "auto_patch",
    "llm_call",
    "unpatch",
]

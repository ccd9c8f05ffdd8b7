"""The LLM room: the record of an LLM call, usage and cost by model, ``llm_call``, the patch
engine and one module per provider (``openai``), with the shipped prices. Only re-exports.
"""

from pipelens._llm.call import LLMCall, LLMOutput, ModelUsage, TokenUsage, ToolCall, llm_call
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

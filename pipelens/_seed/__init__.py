"""The seed room: what exists only for the seed's explicit API — ``Pipeline`` and its runs,
``st.step``/``with_step``, ``LLMTrack``. Only re-exports.
"""

from pipelens._seed.llm_track import (
    LLM_RESPONSE_RECORD_KEY_PREFIX,
    LLMTrack,
    LLMUsage,
    OpenAICompatibleChatCompletionResponse,
)
from pipelens._seed.pipeline import Pipeline
from pipelens._seed.steps import with_step

__all__ = [
    "LLM_RESPONSE_RECORD_KEY_PREFIX",
    "LLMTrack",
    "LLMUsage",
    "OpenAICompatibleChatCompletionResponse",
    "Pipeline",
    "with_step",
]

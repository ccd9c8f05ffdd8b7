"""The demo: ``pipelens demo`` runs one small pipeline in-process (``pipeline``); ``pipelens demo
--serve`` (``make run``) fills a server with days of runs of a few pipelines and keeps one
running live (``history``), their LLM calls made by the real ``openai`` client against a local
stub of the OpenAI API (``openai_stub``). Only re-exports.
"""

from pipelens._demo.history import fill, run_live
from pipelens._demo.pipeline import run_demo

__all__ = ["fill", "run_demo", "run_live"]

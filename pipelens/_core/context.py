"""The current step: the one :class:`~contextvars.ContextVar` of PipeLens, and who reads it.

Every module that reads or sets the current step takes :data:`current_step_var` from here, as
OpenTelemetry keeps its context in one tiny module; nothing else creates a ContextVar for steps.
At run time this module imports nothing of ours, so every room can import it. It names ``Step``
and ``Run`` under ``if TYPE_CHECKING:`` only — the one type-only edge back up the core, accepted
so that the variable is typed.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelens._core.step import Run, Step

#: The step open in this context (thread, task, or generator resume), ``None`` outside any.
current_step_var: ContextVar[Step | None] = ContextVar("pipelens_current_step", default=None)


def current_step() -> Step | None:
    """The step open in this context (thread, task, or generator resume), or ``None``."""
    return current_step_var.get()


def current_run() -> Run | None:
    """The run of the current step, or ``None`` outside any run."""
    step = current_step_var.get()
    return None if step is None else step.run

"""The read side of a step that the seed's users call on ``st`` and on a pipeline.

Kept apart from :mod:`pipelens._step` (the hot path); every method here runs on request only.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from io import BytesIO
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelens._seed import NestedStepMeta, StepMeta, TimeMeta
    from pipelens._step import Step


class AwaitableStr(str):
    """A ``str`` that may also be awaited: the seed documented ``await`` on sync chart calls."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, str]:
        yield from ()
        return str(self)


class StepViews:
    """Seed-compatible accessors, outputs and local charts of a step and its subtree."""

    __slots__ = ()

    def _self(self) -> Step:
        return self  # type: ignore[return-value]

    # -- the seed's explicit API ---------------------------------------------------------------

    async def step(self, name: str, fn: Callable[[Step], Any]) -> Any:
        """Run ``fn(child)`` as a child step named ``name`` (``await st.step(name, fn)``)."""
        from pipelens._seed import run_child

        return await run_child(self._self(), name, fn)

    def on(self, event: str, listener: Callable[..., Any]) -> Step:
        """Listen to step events of this step's whole run (as the seed's shared emitter did)."""
        from pipelens._listeners import Listeners

        run = self._self().run
        listeners = run._listeners
        if listeners is None:
            listeners = Listeners()
            run._connect(run.transport, listeners)
        listeners.add(event, listener)
        return self._self()

    def log(self, key: str, value: Any) -> Any:
        """Deprecated in the seed: ``record``."""
        return self._self().record(key, value)

    def get_name(self) -> str:
        return self._self().name

    def get_key(self) -> str:
        return self._self().key

    def get_records(self) -> dict[str, Any]:
        return self._self().records

    def get_step_meta(self) -> StepMeta:
        from pipelens._seed import step_meta

        return step_meta(self._self())

    def get_time_meta(self) -> TimeMeta:
        from pipelens._seed import time_meta

        return time_meta(self._self())

    get_time = get_time_meta

    def output_nested(self) -> NestedStepMeta:
        """This step and its substeps, nested (the seed's ``NestedStepMeta``)."""
        from pipelens._seed import output_nested

        return output_nested(self._self())

    output_hierarchy = output_nested

    def output_flattened(self) -> list[StepMeta]:
        """This step and every descendant, depth first (the seed's ``StepMeta`` list)."""
        from pipelens._seed import output_flattened

        return output_flattened(self._self())

    # -- local charts, no network ----------------------------------------------------------------

    def gantt_svg(self, **options: Any) -> str:
        """A self-contained SVG Gantt chart of this step's subtree."""
        from pipelens._visual import gantt_svg

        return gantt_svg(self._self(), **options)

    def gantt_html(self, **options: Any) -> str:
        """A self-contained HTML page with the Gantt chart (no script, no CDN)."""
        from pipelens._visual import gantt_html

        return gantt_html(self._self(), **options)

    def execution_graph_mermaid(self) -> str:
        """The execution graph as Mermaid ``flowchart`` text."""
        from pipelens._visual import execution_graph_mermaid

        return execution_graph_mermaid(self._self())

    def execution_graph_dot(self) -> str:
        """The execution graph as Graphviz DOT text."""
        from pipelens._visual import execution_graph_dot

        return execution_graph_dot(self._self())

    async def gantt_quickchart(self, args: Any = None) -> BytesIO:
        """The seed's chart call, drawn locally: a buffer holding the SVG Gantt chart."""
        return BytesIO(self.gantt_svg().encode())

    def gantt_google_chart_html(self, args: Any = None) -> AwaitableStr:
        """The seed's chart page, drawn locally: the Gantt HTML page (awaitable too)."""
        return AwaitableStr(self.gantt_html())

    def execution_graph_quickchart(self) -> str:
        """The seed's graph call, drawn locally: the execution graph as DOT text."""
        return self.execution_graph_dot()

    def tree_text(self) -> str:
        """The subtree as indented text: key, status and duration of each step."""
        from pipelens._visual import tree_text

        return tree_text(self._self())

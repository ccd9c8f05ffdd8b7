"""The seed's read side of a step: its meta records, ``output_*`` views and chart calls.

Kept apart from :mod:`pipelens._core.step` (the hot path): everything here runs on request only,
and reads a step through :class:`~pipelens._core.step_like.StepLike` (this module is a base of
``Step``, so it never imports the step module). The
records are the seed's (``TimeMeta``, ``StepMeta``, ``NestedStepMeta``, ``PipelineMeta``), with
its field names and aliases, as msgspec Structs that also offer pydantic's construction,
``model_validate``, ``model_dump`` and ``model_dump_json`` (pydantic is not needed).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from io import BytesIO
from typing import Any

import msgspec

from pipelens._core import charts
from pipelens._core.capture import short_repr
from pipelens._core.done import Done
from pipelens._core.step_like import RunLike, StepLike

_json = msgspec.json.Encoder(enc_hook=short_repr)
_MAX_DEPTH = 64


def _plain(value: Any, depth: int = 0, **dump: Any) -> Any:
    """``value`` as JSON-like builtins; a step becomes ``"<step key>"``, anything else that does
    not convert (or nests too deep, or refers to itself) a short ``repr``."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, _Meta):
        return value.model_dump(**dump)
    if isinstance(value, StepViews):  # a Step: a msgspec Struct that refers to its parent
        return f"<step {value._self().key}>"
    if depth > _MAX_DEPTH:
        return short_repr(value)
    if isinstance(value, dict):
        return {k: _plain(v, depth + 1, **dump) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1, **dump) for v in value]
    try:
        return msgspec.to_builtins(value, enc_hook=short_repr)
    except Exception:  # a cycle, an unsupported key, a raising __repr__ ...
        return short_repr(value)


#: Builds a meta record from its fields, past the checks of the public constructor.
_new: Callable[..., Any] = msgspec.StructMeta.__call__


class _MetaType(msgspec.StructMeta):
    """Construction as pydantic's: keywords by field name or alias, values checked (and
    ``"3"`` taken for ``3``), unknown keys ignored; a bad value is a ``msgspec.ValidationError``
    (a ``ValueError``) naming the field."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise TypeError(f"{self.__name__}() takes keyword arguments only")
        return self.model_validate(kwargs)  # type: ignore[attr-defined]


class _Meta(msgspec.Struct, kw_only=True, metaclass=_MetaType):
    @classmethod
    def model_validate(cls, obj: Any) -> Any:
        """The record from a mapping or an object with the same attributes (pydantic's)."""
        if isinstance(obj, cls):
            return obj
        if not isinstance(obj, Mapping):
            obj = {name: getattr(obj, name) for name in cls.__struct_fields__ if hasattr(obj, name)}
        aliases = dict(zip(cls.__struct_fields__, cls.__struct_encode_fields__, strict=True))
        data = {aliases.get(key, key): value for key, value in obj.items()}
        return msgspec.convert(data, cls, strict=False, from_attributes=True)

    @classmethod
    def model_validate_json(cls, text: str | bytes) -> Any:
        """The record from JSON text."""
        return cls.model_validate(msgspec.json.decode(text))

    def model_dump(
        self, *, by_alias: bool = False, exclude_none: bool = False, mode: str = "python"
    ) -> dict[str, Any]:
        """Plain ``dict`` form, as the seed's pydantic models gave (``None`` fields included
        unless ``exclude_none``); ``by_alias`` uses the camelCase aliases (``runId``)."""
        names = self.__struct_encode_fields__ if by_alias else self.__struct_fields__
        dumped: dict[str, Any] = {}
        for field, name in zip(self.__struct_fields__, names, strict=True):
            value = _plain(getattr(self, field), by_alias=by_alias, exclude_none=exclude_none)
            if not (exclude_none and value is None):
                dumped[name] = value
        return dumped

    def model_dump_json(
        self, *, by_alias: bool = False, exclude_none: bool = False, indent: int | None = None
    ) -> str:
        """JSON text of :meth:`model_dump`."""
        text = _json.encode(self.model_dump(by_alias=by_alias, exclude_none=exclude_none))
        return (msgspec.json.format(text, indent=indent) if indent else text).decode()


class TimeMeta(_Meta, kw_only=True):
    """Epoch milliseconds, as in the seed (``endTs``/``timeUsageMs`` are ``None`` while running)."""

    startTs: int  # noqa: N815 - the seed's field names
    endTs: int | None = None  # noqa: N815
    timeUsageMs: int | None = None  # noqa: N815


class StepMeta(_Meta, kw_only=True):
    """The seed's view of one step: ``error`` is the exception's message."""

    name: str
    key: str
    time: TimeMeta
    records: dict[str, Any] = {}
    result: Any = None
    error: str | None = None


class NestedStepMeta(StepMeta, kw_only=True):
    """A step with its substeps, as ``output_nested()`` returns it."""

    substeps: list[NestedStepMeta] = []


class PipelineMeta(StepMeta, kw_only=True):
    """A run as the seed reported it: the root's meta, ``log_version`` 1, the run id and every
    step flattened (the root first). The aliases ``logVersion``/``runId`` are the JSON names
    (``model_dump(by_alias=True)``, and msgspec encoding)."""

    log_version: int = msgspec.field(default=1, name="logVersion")
    run_id: str = msgspec.field(name="runId")
    steps: list[StepMeta] = []

    @property
    def runId(self) -> str:  # noqa: N802 - the seed's JSON name
        """``run_id`` under its alias."""
        return self.run_id

    @property
    def logVersion(self) -> int:  # noqa: N802 - the seed's JSON name
        """``log_version`` under its alias."""
        return self.log_version


class StepGanttArg(msgspec.Struct, kw_only=True):
    """The seed's chart options. ``min_width`` sets the chart's width in pixels; ``min_height``
    is accepted and ignored (the rows decide the height); ``filter`` is a key regex or key list."""

    unit: str | None = None
    min_height: int | None = None
    min_width: int | None = None
    filter: str | list[str] | None = None


def time_meta(step: StepLike) -> TimeMeta:
    """The seed's ``TimeMeta`` of ``step``; ``timeUsageMs`` is ``endTs - startTs`` as there."""
    start = step.start_ns // 1_000_000
    if step.end_ns is None:
        return _new(TimeMeta, startTs=start)  # type: ignore[no-any-return]
    end = step.end_ns // 1_000_000
    return _new(TimeMeta, startTs=start, endTs=end, timeUsageMs=end - start)  # type: ignore[no-any-return]


def step_meta(step: StepLike) -> StepMeta:
    """The seed's ``StepMeta`` of ``step`` (a copy: later records do not change it)."""
    error = step.error
    return _new(  # type: ignore[no-any-return]
        StepMeta,
        name=step.name,
        key=step.key,
        time=time_meta(step),
        records=dict(step.records),
        result=step.result,
        error=None if error is None else error.message,
    )


def output_nested(step: StepLike) -> NestedStepMeta:
    """``step`` and its descendants as nested metas, children in start order."""
    substeps = [output_nested(child) for child in list(step.children)]
    return _new(NestedStepMeta, **msgspec.structs.asdict(step_meta(step)), substeps=substeps)  # type: ignore[no-any-return]


def output_flattened(step: StepLike) -> list[StepMeta]:
    """``step`` and its descendants, depth first, as flat metas."""
    return [step_meta(s) for s in step.walk()]


def pipeline_meta(root: StepMeta, run_id: str, steps: list[StepMeta]) -> PipelineMeta:
    """A ``PipelineMeta`` from the root's meta, the run id and the flattened steps."""
    fields = msgspec.structs.asdict(root)
    fields.pop("substeps", None)
    return _new(PipelineMeta, **fields, run_id=run_id, steps=steps)  # type: ignore[no-any-return]


def output_pipeline_meta(run: RunLike) -> PipelineMeta:
    """The seed's ``PipelineMeta`` of a run."""
    steps = output_flattened(run.root)
    return pipeline_meta(steps[0], run.id, steps)


def _chart_options(args: Any) -> dict[str, Any]:
    """Our chart options from the seed's ``StepGanttArg`` (or a dict with the same keys)."""
    if args is None:
        return {}
    get: Callable[[str], Any] = (
        args.get if isinstance(args, Mapping) else lambda name: getattr(args, name, None)
    )
    options: dict[str, Any] = {}
    if get("unit"):
        options["unit"] = get("unit")
    if get("min_width"):
        options["width"] = get("min_width")
    chosen = get("filter")
    if chosen:
        options["filter"] = chosen if isinstance(chosen, str) else list(chosen)
    return options


class AwaitableStr(str):
    """A ``str`` that may also be awaited: the seed's README awaits a sync chart call."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, str]:
        return Done(str(self)).__await__()


class StepViews:
    """Seed-compatible accessors, outputs and local charts of a step and its subtree."""

    __slots__ = ()

    def _self(self) -> StepLike:
        return self  # type: ignore[return-value]

    # -- the seed's accessors -----------------------------------------------------------------

    def log(self, key: str, value: Any) -> Any:
        """Deprecated in the seed: ``record``."""
        return self._self().record(key, value)

    def get_name(self) -> str:
        """The step's name."""
        return self._self().name

    def get_key(self) -> str:
        """The step's dotted key."""
        return self._self().key

    def get_records(self) -> dict[str, Any]:
        """The records, by key (the live dict, as in the seed)."""
        return self._self().records

    def get_step_meta(self) -> StepMeta:
        """The seed's ``StepMeta`` of this step."""
        return step_meta(self._self())

    def get_time_meta(self) -> TimeMeta:
        """The seed's ``TimeMeta`` of this step (epoch milliseconds)."""
        return time_meta(self._self())

    get_time = get_time_meta

    def output_nested(self) -> NestedStepMeta:
        """This step and its substeps, nested (the seed's ``NestedStepMeta``)."""
        return output_nested(self._self())

    output_hierarchy = output_nested

    def output_flattened(self) -> list[StepMeta]:
        """This step and every descendant, depth first (the seed's ``StepMeta`` list)."""
        return output_flattened(self._self())

    # -- local charts, no network ----------------------------------------------------------------

    def gantt_svg(self, **options: Any) -> str:
        """A self-contained SVG Gantt chart of this step's subtree."""
        return charts.gantt_svg(self._self(), **options)

    def gantt_html(self, **options: Any) -> str:
        """A self-contained HTML page with the Gantt chart (no script, no CDN)."""
        return charts.gantt_html(self._self(), **options)

    def execution_graph_mermaid(self) -> str:
        """The execution graph as Mermaid ``flowchart`` text."""
        return charts.execution_graph_mermaid(self._self())

    def execution_graph_dot(self) -> str:
        """The execution graph as Graphviz DOT text."""
        return charts.execution_graph_dot(self._self())

    async def gantt_quickchart(
        self, args: StepGanttArg | Mapping[str, Any] | None = None
    ) -> BytesIO:
        """The seed's chart call, drawn locally: a buffer holding the SVG Gantt chart."""
        return BytesIO(self.gantt_svg(**_chart_options(args)).encode())

    def gantt_google_chart_html(
        self, args: StepGanttArg | Mapping[str, Any] | None = None
    ) -> AwaitableStr:
        """The seed's chart page, drawn locally: the Gantt HTML page (awaitable too)."""
        return AwaitableStr(self.gantt_html(**_chart_options(args)))

    def execution_graph_quickchart(self) -> str:
        """The seed's graph call, drawn locally: the execution graph as DOT text."""
        return self.execution_graph_dot()

    def tree_text(self) -> str:
        """The subtree as indented text: key, status and duration of each step."""
        return charts.tree_text(self._self())

"""One tree with the OpenTelemetry spans of the same process, whichever side exports.

Two directions, both only once the program itself imported ``opentelemetry`` (we never import
it, and never replace a tracer provider):

* **a step opened inside an OTel span** — a run's root step opened while an OTel span is
  current (by ``@step``, ``span`` or an explicit ``Pipeline`` run) continues that span's
  trace, as an incoming foreign ``traceparent`` would (:func:`pipelens._otel.remote.open_under`):
  the run's id is the trace id as a UUID, its root's parent the span. Steps opened under a
  step stay under that step: an OTel span between two steps is not seen by the inner one (it
  nests under the outer step).
* **an OTel span started inside a step** — while a step is current, OTel's current context
  names that step (a non-recording span: trace id from the run id, span id = step id, our
  ``tracestate`` entry so an instrumented HTTP client carries the run on), so the span's
  parent is the step. OTel's runtime context (``opentelemetry.context._RUNTIME_CONTEXT``) is
  wrapped, not replaced: attach and detach are its own; only ``get_current`` adds the step when
  the context in force was not made inside that very step. A marker key in the contexts we hand
  out says which step they were made in, so spans started inside an OTel span inside the step
  nest under that span, not the step.

The hot path pays nothing for this: the step wrappers never look at OTel. A run's root step
asks :func:`root_parent` (a ``sys.modules`` look-up while OTel is not imported).
"""

from __future__ import annotations

import sys
import threading
from contextvars import Token
from typing import Any, NamedTuple, cast

from pipelens._core import containment, step
from pipelens._core.context import current_step_var
from pipelens._otel.trace_context import (
    VENDOR,
    foreign_entries,
    merge_tracestate,
    quoted_run_id,
    run_id_of,
    trace_id_of,
    tracestate_value,
)

_lock = threading.Lock()
#: The runtime context we wrapped (``None``: not wrapped, or put back).
_wrapped: Any = None
#: Marks the OTel contexts we hand out with the step they name.
_MARK = "pipelens-step"


class _Api(NamedTuple):
    """What a step's context is made of, taken from OTel once (it is asked on every LLM step)."""

    context: Any  #: ``opentelemetry.context.Context``
    span_context: Any
    span: Any  #: ``NonRecordingSpan``
    trace_state: Any  #: ``(name, value)`` pairs → a ``TraceState``
    sampled: Any
    span_key: str  #: the key ``set_span_in_context`` stores the span under


_api: _Api | None = None


def _load_api() -> _Api:
    global _api
    from opentelemetry import trace
    from opentelemetry.context import Context

    # The key of the current span, read from what OTel's own setter writes (it is private).
    (span_key,) = trace.set_span_in_context(trace.INVALID_SPAN, Context()).keys()
    _api = _Api(
        Context,
        trace.SpanContext,
        trace.NonRecordingSpan,
        _trusted_state(trace.TraceState),
        trace.TraceFlags(trace.TraceFlags.SAMPLED),
        span_key,
    )
    return _api


def _trusted_state(cls: Any) -> Any:
    """A maker of ``TraceState`` from pairs valid by construction (ours, and those OTel parsed),
    skipping the constructor's regular expressions (a microsecond a step, on the caller's thread)
    where the class still keeps its entries in ``_dict``; else the constructor itself."""

    def trusted(pairs: list[tuple[str, str]]) -> Any:
        state = cls()
        state._dict = dict(pairs)
        return state

    probe = trusted([("a", "b")])
    if probe.get("a") == "b" and probe.to_header() == "a=b" and len(probe) == 1:
        return trusted
    return cls


def _spans_context(step_: step.Step, base: Any) -> Any:
    """``base`` with ``step_`` as its current span (a non-recording span with our ids)."""
    api = _api or _load_api()
    run = step_.run
    ids = run._otel_ids
    if ids is None:
        ids = run._otel_ids = (int(trace_id_of(run.id), 16), quoted_run_id(run.id))
    span_context = api.span_context(
        ids[0],
        step_._n & 0xFFFFFFFFFFFFFFFF,
        False,
        api.sampled,
        api.trace_state(_state_pairs(ids[1], step_.key, run.remote_tracestate)),
    )
    # One copy of ``base`` holding both (neither asks the current context, which would be us).
    return api.context({**base, api.span_key: api.span(span_context), _MARK: step_})


def _state_pairs(run_part: str, key: str, others: tuple[str, ...]) -> list[tuple[str, str]]:
    """Our ``tracestate`` entry and the other vendors' the run received, as OTel's pairs."""
    value = tracestate_value(run_part, key)
    if not others:  # the common case: our entry alone, within the limits by construction
        return [(VENDOR, value)] if value else []
    merged = merge_tracestate(f"{VENDOR}={value}" if value else None, others)
    if not merged:
        return []
    return [(name, value) for name, _, value in (m.partition("=") for m in merged.split(","))]


class _StepAwareContext:
    """OTel's runtime context, whose current context names the current step when it is newer
    than the context's own span."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def attach(self, context: Any) -> Token[Any]:
        token: Token[Any] = self.inner.attach(context)
        return token

    def detach(self, token: Token[Any]) -> None:
        self.inner.detach(token)

    def get_current(self) -> Any:
        context = self.inner.get_current()
        current = current_step_var.get()
        if current is None or context.get(_MARK) is current:
            return context
        made = current._otel_context
        if made is not None and made[0] is context:  # contexts are immutable: still true
            return made[1]
        try:
            spans = _spans_context(current, context)
        except Exception as exc:
            containment.internal_error("otel.bridge", exc)
            return context
        current._otel_context = (context, spans)
        return spans


def install_context() -> None:
    """Wrap OTel's runtime context (once; OTel must be imported)."""
    global _wrapped
    with _lock:
        if _wrapped is not None:
            return
        import opentelemetry.context as otel_context

        _wrapped = otel_context._RUNTIME_CONTEXT
        # Duck-typed: subclassing OTel's abstract class would import OTel with PipeLens.
        otel_context._RUNTIME_CONTEXT = cast("Any", _StepAwareContext(_wrapped))


def uninstall_context() -> None:
    """Put OTel's own runtime context back."""
    global _wrapped
    with _lock:
        if _wrapped is None:
            return
        import opentelemetry.context as otel_context

        otel_context._RUNTIME_CONTEXT = _wrapped
        _wrapped = None


def root_parent() -> tuple[str, str, tuple[str, ...]] | None:
    """``(run id, span id, tracestate entries)`` of the OTel span a new run's root opens under,
    if OTel is imported and a span is current: the run is the span's trace (its id as a UUID),
    and the other vendors' entries of the span's ``tracestate`` go on with the run's outgoing
    requests and OTel spans, as those of a continued run do.

    Called by the core whenever a run's root step opens (see :func:`install`).
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    try:
        if _wrapped is None:
            install_context()
        span_context = trace.get_current_span().get_span_context()
        if not span_context.is_valid:
            return None
        state = span_context.trace_state
        return (
            run_id_of(f"{span_context.trace_id:032x}"),
            f"{span_context.span_id:016x}",
            foreign_entries(state.to_header()) if state else (),
        )
    except Exception as exc:
        containment.internal_error("otel.root_parent", exc)
        return None


def follow_otel() -> None:
    """Wrap OTel's runtime context now if the program imported OTel: a run continued from
    another process (whose root never asks :func:`root_parent`) is then the parent of the OTel
    spans started in it too."""
    if _wrapped is not None or "opentelemetry.trace" not in sys.modules:
        return
    try:
        install_context()
    except Exception as exc:
        containment.internal_error("otel.install_context", exc)


def install() -> None:
    """Let the core ask :func:`root_parent` when a run's root opens."""
    step.root_parent = root_parent

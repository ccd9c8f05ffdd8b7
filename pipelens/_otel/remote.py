"""Runs that cross processes: continue the run that incoming W3C headers name.

What the receiver makes of a parent (:class:`~pipelens._otel.trace_context.Parent`):

* **a PipeLens step** (our ``tracestate`` entry is there): the *same* run goes on here. The new
  step's parent is the caller's step and its key the caller's key and its own name (with a
  suffix of its own id, unique across processes); this process sends the steps only, never the
  run's start or end, which stay the caller's.
* **a span of another OTel program** (a ``traceparent`` alone): the new step is the root of a
  run of this process whose id is the trace id written as a UUID and whose root's parent is that
  span; so an OTel backend shows it inside the caller's trace, and our server joins it to the
  caller's spans when they are sent to its ``/v1/traces`` too. Several requests of one trace are
  then parts of one run.
* **nothing valid**: a new run, as without headers.

Either way the other vendors' ``tracestate`` entries that came with the parent go out again,
unchanged, with the continued run's outgoing requests (:func:`~pipelens.propagation_headers`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pipelens._core.decorator import span
from pipelens._core.settings import settings
from pipelens._core.step import Step, StepScope, check_name, open_continued, open_run
from pipelens._otel.bridge import follow_otel
from pipelens._otel.trace_context import Parent, header_values, run_id_of

Headers = Mapping[str, str] | Iterable[tuple[bytes, bytes]]


def open_under(parent: Parent, name: str) -> Step:
    """Open a step named ``name`` continuing ``parent``'s run (see the module's docstring)."""
    follow_otel()
    if parent.run_id is not None:
        return open_continued(
            name, parent.run_id, parent.span_id, parent.key, owned=False, tracestate=parent.others
        )
    return open_continued(
        name,
        run_id_of(parent.trace_id),
        parent.span_id,
        None,
        owned=True,
        tracestate=parent.others,
    )


def open_from_headers(headers: Headers, name: str) -> Step:
    """A step continuing the run ``headers`` name, or the root of a new run."""
    parent = header_values(headers)
    if parent is None:
        return open_run(name)
    return open_under(parent, name)


class continue_run(StepScope[Step | None]):  # noqa: N801 - used like a function, as ``span``
    """Continue, in this process, the run whose step sent ``headers``.

    ``headers`` are what :func:`pipelens.propagation_headers` gave the sender (a mapping, any
    case, such as a queued message's headers or ``request.headers``)::

        with pipelens.continue_run(message.headers, "handle"):   # or ``async with``
            handle(message)        # its steps nest under the sender's step, in the sender's run

    The block is one step named ``name``. Headers naming no valid parent make it a plain
    ``pipelens.span(name)`` (a child of the current step, or a new run). A ``traceparent`` of
    another OTel program is followed as :mod:`this module <pipelens._otel.remote>` describes.
    """

    __slots__ = ("headers", "name")

    def __init__(self, headers: Headers, name: str = "continue_run") -> None:
        self.name = check_name(name, "continue_run(headers, name)")
        # A text is iterable too, and would be read as pairs of its characters: refuse it here.
        given: object = headers  # typed as what callers may pass, checked as what they did
        if isinstance(given, str | bytes | bytearray) or not isinstance(given, Iterable):
            raise TypeError(
                "continue_run(headers, name): headers must be a mapping of header names to values "
                f"(or ASGI's (bytes, bytes) pairs), not {type(headers).__name__} {headers!r:.80}"
            )
        self.headers = headers

    def _open(self) -> Step:
        parent = header_values(self.headers)
        if parent is None:
            return span(self.name)._open()
        return open_under(parent, self.name)

    def __enter__(self) -> Step | None:
        return self._enter() if settings.enabled else None

    def __repr__(self) -> str:
        return f"continue_run({self.name!r})"

"""A step's start and finish sent as one event when both wait in the same batch.

``StepFinished`` carries everything ``StepStarted`` does, inputs included (``pipelens.events``),
so a start whose finish is in the same batch says nothing the finish cannot: the finish takes the
start's inputs and the start is left out. That halves the events of short steps, and the bytes
and the server's work with them. A start sent in an earlier batch (its step was still running at
the batch's cut, what the live view shows) is not affected: its finish goes alone, as before, and
the server merges the two.
"""

from __future__ import annotations

import msgspec

from pipelens.events import Event, StepFinished, StepStarted

__all__ = ["coalesce_steps"]


def coalesce_steps(events: list[Event]) -> tuple[list[Event], frozenset[int]]:
    """``events`` with each step's start folded into its finish when both are there.

    Returns:
        The events in their order (a coalesced step where its finish was), and the positions in
        that list of the coalesced finishes, each of which stands for two of ``events``.
    """
    starts: dict[str, int] = {}  # step_id -> the start's position in ``out``
    out: list[Event | None] = []
    coalesced: list[int] = []
    for event in events:
        if isinstance(event, StepStarted):
            starts[event.step_id] = len(out)
        elif isinstance(event, StepFinished):
            position = starts.pop(event.step_id, None)
            start = None if position is None else out[position]
            # Step ids are unique; the run and key are compared anyway, since a wrong merge
            # would lose a row where a missed one costs an event.
            if (
                isinstance(start, StepStarted)
                and start.run_id == event.run_id
                and start.key == event.key
            ):
                out[position] = None  # type: ignore[index]
                if event.inputs is None and start.inputs is not None:
                    event = msgspec.structs.replace(event, inputs=start.inputs)
                coalesced.append(len(out))
        out.append(event)
    if not coalesced:
        return events, frozenset()
    # Positions shift left by the starts removed before them.
    kept: list[Event] = []
    doubled: set[int] = set()
    marks = iter(coalesced)
    mark = next(marks)
    for i, kept_event in enumerate(out):
        if kept_event is None:
            continue
        if i == mark:
            doubled.add(len(kept))
            mark = next(marks, -1)
        kept.append(kept_event)
    return kept, frozenset(doubled)

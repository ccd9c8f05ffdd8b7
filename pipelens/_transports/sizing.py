"""How much memory queued events take, roughly: what bounds a queue by bytes instead of count.

A count alone bounds nothing: an event of a step with a 10 KB input weighs fifty times one with an
integer. Measuring every event on the user's thread would cost the hot path, so the batching
thread weighs a few events of each batch it takes and the queue's limit in events follows.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pipelens.events import ErrorInfo, Event

__all__ = ["event_bytes"]

#: Events weighed per batch: enough to follow a program whose steps change, cheap at any size.
SAMPLE = 16


def event_bytes(events: Sequence[Event]) -> int:
    """Bytes one of ``events`` takes in memory, on average over a few spread through them.

    The event and its texts (inputs, result, records, ids; an error's texts) are counted; a text
    shared by several events (the run id) is counted in each, so the figure errs high.
    """
    if not events:
        return 1
    stride = max(1, len(events) // SAMPLE)
    sample = events[::stride]
    size = sys.getsizeof
    total = 0
    for event in sample:
        total += size(event)
        for name in event.__struct_fields__:
            value = getattr(event, name)
            if type(value) is str:
                total += size(value)
            elif type(value) is ErrorInfo:
                total += size(value) + size(value.message) + size(value.traceback or "")
            elif value:  # numbers, tags, attributes
                total += size(value)
    return total // len(sample) + 1

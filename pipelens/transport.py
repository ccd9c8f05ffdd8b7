"""Transports: where a run's events go (the seed's ``pipelens.transport`` module).

``from pipelens.transport import HttpTransport, HttpTransportOptions`` works as it did in the
seed; the seed's README example runs unchanged::

    http_transport = HttpTransport(HttpTransportOptions(base_url="http://localhost:3000"))
    pipeline = Pipeline("my-pipeline", auto_save="real_time", transport=http_transport)
    await pipeline.track(pipeline_logic)
    await http_transport.flush_and_stop()

A transport written for the seed (a subclass of :class:`Transport` or :class:`SeedTransport`
with async ``initiate_run``, ``initiate_step``, ``finish_step``, ``finish_run``) is called as
the seed called it, through an adapter from our events (``pipelens._seed.transport``).

Most programs need none of this: ``pipelens.configure(url=...)`` (or ``PIPELENS_URL``) sends
every run to the server.
"""

from __future__ import annotations

from pipelens import (
    BatchingTransport,
    FileTransport,
    MemoryTransport,
    Transport,
    TransportStats,
    read_event_file,
    transport_stats,
)
from pipelens._seed.transport import SeedTransport
from pipelens._transports import HttpTransport, HttpTransportOptions

__all__ = [
    "BatchingTransport",
    "FileTransport",
    "HttpTransport",
    "HttpTransportOptions",
    "MemoryTransport",
    "SeedTransport",
    "Transport",
    "TransportStats",
    "read_event_file",
    "transport_stats",
]

SeedTransport.__module__ = __name__
HttpTransportOptions.__module__ = __name__  # shown where the seed's users import it from

"""The transports room: where a run's events go. ``base`` holds the contract and the batching
base class; ``memory``, ``file`` and ``http`` (with ``delivery``, ``endpoint``, ``spool``) are
the implementations. This package only re-exports.
"""

from pipelens._transports.base import BatchingTransport, Transport, flush, set_transport, shutdown
from pipelens._transports.delivery import TransportStats
from pipelens._transports.fanout import Fanout, combine, parts_of
from pipelens._transports.file import FileFormat, FileTransport, read_event_file
from pipelens._transports.http import HttpTransport, HttpTransportOptions, transport_stats
from pipelens._transports.memory import MemoryTransport

__all__ = [
    "BatchingTransport",
    "Fanout",
    "FileFormat",
    "FileTransport",
    "HttpTransport",
    "HttpTransportOptions",
    "MemoryTransport",
    "Transport",
    "TransportStats",
    "combine",
    "flush",
    "parts_of",
    "read_event_file",
    "set_transport",
    "shutdown",
    "transport_stats",
]

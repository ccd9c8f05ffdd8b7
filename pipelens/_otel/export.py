"""``OtlpTransport``: runs and steps to any OpenTelemetry backend, as OTLP/HTTP protobuf spans.

It is an :class:`~pipelens.HttpTransport` that posts elsewhere and in another encoding: the same
bounded queue on the caller's side (a ``@step`` pays an append, never an OTel SDK span), the same
batching thread — which here turns events into spans (:mod:`pipelens._otel.spans`) — and the same
delivery thread, retries, backoff and disk spool. ``configure(otlp_endpoint=...)`` makes one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from urllib.parse import unquote

from pipelens._core.errors import ConfigurationError
from pipelens._otel.spans import SpanEncoder
from pipelens._transports.http import HttpTransport
from pipelens._transports.spool import default_spool_dir
from pipelens.events import Batch, Event

#: OTLP/HTTP's path for traces, under the endpoint's base URL.
TRACES_PATH = "/v1/traces"
_MiB = 1024 * 1024


class OtlpTransport(HttpTransport):
    """Sends every finished step as an OTLP span to ``{endpoint}/v1/traces`` (protobuf).

    Args:
        endpoint: the OTLP/HTTP base URL (``http://localhost:4318``); one that ends in
            ``/v1/traces`` already is used as it is.
        headers: sent with every request (a backend's API key: ``{"x-api-key": "..."}``).
        timeout, spool, spool_dir, max_queue, max_batch, max_buffer_bytes, interval, debug: as
            for :class:`~pipelens.HttpTransport`.

    Raises:
        ConfigurationError: a bad option, or ``opentelemetry-proto`` is not installed.
    """

    _path = TRACES_PATH
    _content_type = "application/x-protobuf"
    #: A span is a finished step: sent alone, the run sends no starts (the caller's thread
    #: builds half the events), the inputs riding on each step's finish.
    wants_starts = False

    def __init__(
        self,
        endpoint: str,
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float = 10.0,
        spool: bool = True,
        spool_dir: str | os.PathLike[str] | None = None,
        max_queue: int = 100_000,
        max_batch: int = 2000,
        max_buffer_bytes: int | None = None,
        interval: float = 0.5,
        debug: bool = False,
    ) -> None:
        if not isinstance(endpoint, str):
            raise ConfigurationError(
                f"OtlpTransport(endpoint={endpoint!r}): expected an http:// or https:// URL "
                "such as 'http://localhost:4318'"
            )
        base = endpoint.strip().rstrip("/")
        if base.endswith(TRACES_PATH):
            base = base[: -len(TRACES_PATH)]
        try:
            self._encoder = SpanEncoder()
        except ImportError:
            raise ConfigurationError(
                "OTLP export needs opentelemetry-proto: pip install 'pipelens[otlp]'"
            ) from None
        if spool and spool_dir is None:
            # Not the directory of an HttpTransport to the same server: each replays its own
            # bodies to its own path.
            spool_dir = default_spool_dir(base + TRACES_PATH)
        super().__init__(
            base,
            headers=headers,
            timeout=timeout,
            spool=spool,
            spool_dir=spool_dir,
            max_queue=max_queue,
            max_batch=max_batch,
            max_batch_bytes=4 * _MiB,
            max_buffer_bytes=max_buffer_bytes,
            interval=interval,
            debug=debug,
            heartbeat=None,
        )
        self._recipe = functools.partial(
            OtlpTransport,
            endpoint,
            headers,
            timeout=timeout,
            spool=spool,
            spool_dir=spool_dir,
            max_queue=max_queue,
            max_batch=max_batch,
            max_buffer_bytes=max_buffer_bytes,
            interval=interval,
            debug=debug,
        )

    def write(self, batch: Batch) -> None:
        """Encode ``batch`` as spans (here, on the batching thread) and queue the bodies."""
        for body, count in self._encoder.bodies(batch.events, self.max_batch_bytes):
            self._delivery.put(body, count)

    def write_now(self, event: Event) -> bool:
        """Nowhere to write one event off the batching thread: the span encoder pairs a step's
        start with its finish and belongs to that thread, and the spool holds OTLP bodies only.
        The event is dropped and counted (the PipeLens server's transport still has it)."""
        return False


def env_endpoint() -> str | None:
    """``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as it is), else ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (a base URL), else ``None``."""
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return traces
    return os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or None


def env_headers() -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` or ``OTEL_EXPORTER_OTLP_HEADERS``:
    ``key1=value1,key2=value2``, values percent-decoded (the OTel specification's format)."""
    text = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or os.environ.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    headers = {}
    for member in text.split(","):
        name, sep, value = member.partition("=")
        if sep and name.strip():
            headers[unquote(name.strip())] = unquote(value.strip())
    return headers

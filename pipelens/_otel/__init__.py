"""The OpenTelemetry room: W3C trace context (``trace_context``: our ids as OTel ids, the
headers made and read), runs continued across processes (``remote``), header injection on the
HTTP clients (``http_clients``), the OTLP export (``spans``: events as OTLP spans; ``export``:
the transport that posts them). opentelemetry packages are imported lazily, by the functions
that need them. Only re-exports.
"""

from pipelens._otel.export import OtlpTransport
from pipelens._otel.remote import continue_run
from pipelens._otel.trace_context import propagation_headers

__all__ = ["OtlpTransport", "continue_run", "propagation_headers"]

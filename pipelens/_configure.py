"""``configure()``: the one place that wires settings, transports, prices and thread propagation.

It sits above every room (it imports them all) and nothing below imports it. It also tells the
settings how to build a transport from ``PIPELENS_URL`` when no transport was configured.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Iterable, Mapping
from types import EllipsisType
from typing import Any, Literal

from pipelens._core import containment, propagation
from pipelens._core.errors import ConfigurationError
from pipelens._core.settings import compile_keys, settings, use_env_transport
from pipelens._core.sink import Transport
from pipelens._llm import patch as llm_patch
from pipelens._llm.prices import load_prices
from pipelens._otel import http_clients, processes
from pipelens._otel.export import OtlpTransport, env_endpoint, env_headers
from pipelens._seed.transport import SeedTransportAdapter, is_seed_transport
from pipelens._transports import FileTransport, HttpTransport, combine, parts_of, set_transport


def configure(
    *,
    transport: Transport | Any | None = ...,
    file: str | os.PathLike[str] | None = None,
    url: str | None = None,
    token: str | None = None,
    enabled: bool | None = None,
    capture_args: bool | None = None,
    capture_result: bool | None = None,
    redact: bool | None = None,
    redact_keys: Iterable[str] | None = None,
    max_value_bytes: int | None = None,
    max_records: int | None = None,
    max_memory: int | None = None,
    propagate_threads: bool | None = None,
    propagate_processes: bool | None = None,
    exit_timeout: float | None = None,
    heartbeat: float | None = None,
    prices: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    llm_stream_usage: bool | Literal["auto"] | None = None,
    otlp: bool | None = None,
    otlp_endpoint: str | None = None,
    otlp_headers: Mapping[str, str] | None = None,
) -> None:
    """Change how PipeLens captures and where it sends runs. Unnamed options keep their value.

    Args:
        transport: where events go (a :class:`~pipelens.Transport`); ``None`` keeps them in-process.
        file: shorthand for ``transport=FileTransport(file)``.
        url: a PipeLens server to send runs to: shorthand for ``transport=HttpTransport(url,
            token)``. With none of transport/file/url ever given, ``PIPELENS_URL`` and
            ``PIPELENS_TOKEN`` are read when the first run starts; unset, nothing is sent.
        token: the server's bearer token (default ``PIPELENS_TOKEN``); goes with ``url``.
        enabled: ``False`` turns every ``@step`` into a plain call.
        capture_args: record each step's bound arguments (default on).
        capture_result: record each step's return value (default on).
        redact: replace values under secret-looking keys with ``[REDACTED]`` (default on).
        redact_keys: regular expressions of key names to redact, replacing the defaults.
        max_value_bytes: the JSON size above which a captured value is truncated (default 32 KiB).
        max_records: how many records one step keeps (default 1000); later ones are dropped.
        max_memory: bytes of events and request bodies an ``HttpTransport`` made from now on
            holds in memory while the server is slower than the program (default 32 MiB); the
            rest goes to its disk spool and is sent from there.
        propagate_threads: nest steps started in worker threads under the submitting step.
        propagate_processes: nest steps run in worker processes (``ProcessPoolExecutor``,
            ``multiprocessing``: fork and spawn) under the submitting step, when the run's
            transport can be rebuilt there (``url=``, ``otlp_endpoint=``): each worker sends its
            own steps. ``True`` patches those entry points (when their modules are imported);
            :func:`auto_patch` does too, and then this is on unless set ``False``.
        exit_timeout: seconds the interpreter may wait at exit for pending events (default 2).
        heartbeat: seconds between the heartbeats that tell the server which runs are still open
            (default 15; ``0`` sends none), for the transport ``url=`` (or ``PIPELENS_URL``)
            makes: give it with ``url=``, or before the first run. A run the server hears
            nothing of for its ``--abandon-after`` timeout is shown ``abandoned``.
        prices: LLM prices over the shipped table: ``{model: {"input": USD, "cached_input": USD,
            "output": USD}}`` per million tokens, or the path of a JSON file of that shape
            (``{}`` drops earlier overrides). A model priced nowhere has an unknown cost.
        llm_stream_usage: ask OpenAI for token usage on streamed chat calls
            (``stream_options.include_usage``): ``True`` always, ``False`` never, ``"auto"`` (the
            default) only on OpenAI's own API (``api.openai.com``), since some OpenAI-compatible
            servers refuse the argument. Either way the caller's chunks stay as they would be
            without PipeLens: the extra usage chunk is kept from the caller. A stream without
            usage records unknown tokens and cost, never zero.
        otlp: ``True`` also sends every run as OTLP spans to the endpoint that the standard
            ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` name, with
            the headers of ``OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`` (read only when asked: an
            OTel SDK of the same program may use them for its own spans); ``False`` stops
            the OTLP export.
        otlp_endpoint: also send every run as OTLP/HTTP protobuf spans to this OpenTelemetry
            endpoint (``http://localhost:4318``; ``/v1/traces`` is added), beside the
            transport (our server, a file) or alone. Needs ``pipelens[otlp]``.
        otlp_headers: headers for the OTLP endpoint (an API key); goes with ``otlp_endpoint``.
    """
    # Every argument is checked before anything changes: a bad call leaves the settings as is.
    flags: tuple[tuple[str, object], ...] = (
        ("enabled", enabled),
        ("capture_args", capture_args),
        ("capture_result", capture_result),
        ("redact", redact),
        ("propagate_threads", propagate_threads),
        ("propagate_processes", propagate_processes),
    )
    for name, flag in flags:
        if flag is not None and not isinstance(flag, bool):
            raise ConfigurationError(f"configure({name}={flag!r}): expected True or False")
    if llm_stream_usage is not None and not (
        isinstance(llm_stream_usage, bool) or llm_stream_usage == "auto"
    ):
        raise ConfigurationError(
            f"configure(llm_stream_usage={llm_stream_usage!r}): expected True, False or 'auto'"
        )
    for name, value in (
        ("max_value_bytes", max_value_bytes),
        ("max_records", max_records),
        ("max_memory", max_memory),
    ):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ConfigurationError(f"configure({name}={value!r}): expected a positive integer")
    if exit_timeout is not None and (
        not isinstance(exit_timeout, int | float)
        or isinstance(exit_timeout, bool)
        or not exit_timeout >= 0
    ):
        raise ConfigurationError(f"configure(exit_timeout={exit_timeout!r}): expected seconds >= 0")
    if heartbeat is not None and (
        not isinstance(heartbeat, int | float)
        or isinstance(heartbeat, bool)
        or not 0 <= heartbeat < float("inf")
    ):
        raise ConfigurationError(
            f"configure(heartbeat={heartbeat!r}): expected seconds > 0 (or 0 to send none)"
        )
    beat = settings.heartbeat if heartbeat is None else (float(heartbeat) or None)
    key_re = None
    if redact_keys is not None:
        keys = [redact_keys] if isinstance(redact_keys, str) else list(redact_keys)
        wrong = [k for k in keys if not isinstance(k, str)]
        if wrong:
            raise ConfigurationError(
                f"configure(redact_keys=...): {wrong[0]!r} is not a string; "
                "give regular expressions of key names, such as ['api_key', 'password']"
            )
        try:
            key_re = compile_keys(keys)
        except re.error as exc:
            raise ConfigurationError(
                f"configure(redact_keys=...): {exc.pattern!r} is not a regular expression: {exc}"
            ) from None
    price_table = None
    if prices is not None:
        price_table = load_prices(prices)
    if otlp is not None and not isinstance(otlp, bool):
        raise ConfigurationError(f"configure(otlp={otlp!r}): expected True or False")
    if otlp is False and (otlp_endpoint is not None or otlp_headers is not None):
        raise ConfigurationError("configure(otlp=False): give no otlp_endpoint or otlp_headers")
    if otlp_headers is not None and otlp_endpoint is None and otlp is not True:
        raise ConfigurationError(
            "configure(otlp_headers=...): the headers go with otlp_endpoint=... (or otlp=True)"
        )
    otlp_transport: Transport | EllipsisType | None = ...
    if otlp_endpoint is not None or otlp is True:
        endpoint = otlp_endpoint if otlp_endpoint is not None else env_endpoint()
        if endpoint is None:
            raise ConfigurationError(
                "configure(otlp=True): neither OTEL_EXPORTER_OTLP_TRACES_ENDPOINT nor "
                "OTEL_EXPORTER_OTLP_ENDPOINT is set; give otlp_endpoint=..."
            )
        headers = (
            otlp_headers
            if otlp_headers is not None
            else (env_headers() if otlp_endpoint is None else None)
        )
        otlp_transport = OtlpTransport(endpoint, headers)
    elif otlp is False:
        otlp_transport = None
    if token is not None and url is None:
        raise ConfigurationError(
            "configure(token=...): the token goes with url=...; pass both "
            "(or set PIPELENS_URL and PIPELENS_TOKEN)"
        )
    if max_memory is not None:  # before url= makes its transport
        settings.max_memory_bytes = max_memory
    if url is not None:
        if transport is not ... or file is not None:
            raise ConfigurationError("configure(): give one of transport=, file= or url=")
        token = token or os.environ.get("PIPELENS_TOKEN") or None
        transport = HttpTransport(url, token=token, heartbeat=beat)
    if file is not None:
        if transport is not ...:
            raise ConfigurationError("configure(): give either transport= or file=, not both")
        if not isinstance(file, str | os.PathLike):
            raise ConfigurationError(f"configure(file={file!r}): expected a path (str or Path)")
        transport = FileTransport(file)
    if transport is not ...:
        if is_seed_transport(transport):  # written for the seed: called through our events
            transport = SeedTransportAdapter(transport)
        elif transport is not None and not isinstance(transport, Transport):
            raise ConfigurationError(
                f"configure(transport=...): {transport!r} has no send/flush/close methods; "
                "pass a pipelens.Transport such as MemoryTransport() or FileTransport(path)"
            )
    if transport is not ... or otlp_transport is not ...:
        current = parts_of(settings.transport)
        primary = (
            transport
            if transport is not ...
            else combine(*(p for p in current if not isinstance(p, OtlpTransport)))
        )
        if otlp_transport is ...:
            otlp_transport = next((p for p in current if isinstance(p, OtlpTransport)), None)
        settings._transport_chosen = True  # the environment no longer counts
        set_transport(combine(primary, otlp_transport))
    if enabled is not None:
        settings.enabled = bool(enabled)
    if capture_args is not None:
        settings.capture_args = bool(capture_args)
    if capture_result is not None:
        settings.capture_result = bool(capture_result)
    if redact is not None:
        settings.redact = bool(redact)
    if key_re is not None:
        settings.redact_key_re = key_re
    if max_value_bytes is not None:
        settings.max_value_bytes = max_value_bytes
    if max_records is not None:
        settings.max_records = max_records
    if exit_timeout is not None:
        settings.exit_timeout = float(exit_timeout)
    settings.heartbeat = beat
    if price_table is not None:
        settings.prices = price_table or None
    if llm_stream_usage is not None:
        settings.llm_stream_usage = llm_stream_usage
    if propagate_processes is not None:
        settings.propagate_processes = propagate_processes
        if propagate_processes:
            processes.install()
    if propagate_threads is not None:
        settings.propagate_threads = bool(propagate_threads)
        if propagate_threads:
            propagation.install()
        else:
            propagation.uninstall()


def _transport_from_env() -> Transport | None:
    """``PIPELENS_URL`` (and ``PIPELENS_TOKEN``) choose an HttpTransport; unset, nothing is sent.

    Runs on the user's code path (when the first run starts), so a bad value is logged, not raised.
    """
    url = os.environ.get("PIPELENS_URL", "").strip()
    if not url:
        return None
    try:
        token = os.environ.get("PIPELENS_TOKEN") or None
        return HttpTransport(url, token=token, heartbeat=settings.heartbeat)
    except Exception as exc:
        containment.warn_once("env-url", f"PIPELENS_URL is ignored: {exc}")
        return None


use_env_transport(_transport_from_env)


def _library(library: types.ModuleType | str) -> str | None:
    name = library if isinstance(library, str) else getattr(library, "__name__", None)
    return name if name in http_clients.CLIENTS else None


def auto_patch(*libraries: types.ModuleType | str) -> list[str]:
    """Trace every call of the given LLM libraries, and carry runs across processes on the
    given HTTP clients; and nest steps run in worker processes under the submitting step
    (``configure(propagate_processes=...)``).

    LLM libraries (``openai``...): every call becomes a ``kind="llm"`` step. HTTP clients
    (``httpx``, ``requests``): a request sent inside a step carries the W3C ``traceparent`` and
    ``tracestate`` of that step (:func:`pipelens.propagation_headers`), so a service using our
    FastAPI, Litestar or ASGI integration continues the run. With no argument, every supported
    *LLM* library installed: those imported already now, the others when the program imports
    them (PipeLens never imports them itself). The HTTP clients are patched only when named,
    because their headers would go to every host the program calls (a run id is then visible
    to it, and a strict API may refuse headers it does not know).

    litellm's calls are module functions: a name imported from it before the patch
    (``from litellm import completion``) keeps the unpatched function, so call ``auto_patch``
    first. SDK classes (``from openai import OpenAI``) are patched whenever they were imported.

    Idempotent; returns the names of the libraries patched now or before.

    Raises:
        ConfigurationError: for a library PipeLens does not support, or one not installed.
    """
    clients = [name for name in map(_library, libraries) if name is not None]
    llm = [lib for lib in libraries if _library(lib) is None]
    names = llm_patch.auto_patch(*llm) if llm or not libraries else []
    for name in clients:
        try:
            http_clients.patch(name)
        except ImportError:
            raise ConfigurationError(
                f"auto_patch({name!r}): {name} is not installed; pip install {name}"
            ) from None
        names.append(name)
    # The process entry points are patched from here, not at ``import pipelens`` (which wraps only
    # the thread entry points, so that a thread started in a step carries the step's context).
    processes.install()
    return names


def unpatch(*libraries: types.ModuleType | str) -> None:
    """Restore the original methods (default: of every patched library, LLM and HTTP)."""
    if not libraries:
        llm_patch.unpatch()
        for patched in http_clients.patched():
            http_clients.unpatch(patched)
        return
    llm = [lib for lib in libraries if _library(lib) is None]
    if llm:
        llm_patch.unpatch(*llm)
    for client in map(_library, libraries):
        if client is not None:
            http_clients.unpatch(client)

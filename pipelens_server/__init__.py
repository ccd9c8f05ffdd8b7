"""The PipeLens server: ingest of wire events into PostgreSQL, and the JSON read API.

``create_app(Settings(...))`` builds the Litestar application; ``pipelens serve`` runs it with
uvicorn. With no database URL the server starts an embedded PostgreSQL in its data directory.
"""

from __future__ import annotations

import contextlib

import msgspec

from pipelens_server._db._embedded import EmbeddedPostgres
from pipelens_server._db._migrate import migrate
from pipelens_server._errors import (
    DatabaseUnavailableError,
    EmbeddedPostgresError,
    InvalidBatchError,
    MigrationError,
    OverloadedError,
    RunNotFoundError,
    ServerError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from pipelens_server._logging import configure_logging
from pipelens_server._settings import Settings
from pipelens_server.app import create_app

__all__ = [
    "DatabaseUnavailableError",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "InvalidBatchError",
    "MigrationError",
    "OverloadedError",
    "RunNotFoundError",
    "ServerError",
    "Settings",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "configure_logging",
    "create_app",
    "migrate",
]

# Users see ``pipelens_server.Settings``, not ``pipelens_server._settings.Settings``. Structs keep
# their module: msgspec resolves their postponed annotations in it.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and issubclass(_obj, msgspec.Struct):
        continue
    if getattr(_obj, "__module__", "").startswith("pipelens_server._"):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = "pipelens_server"
del _name, _obj

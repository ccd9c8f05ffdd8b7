"""structlog for the server's own logs: readable on a terminal, one JSON object a line elsewhere."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(*, json: bool | None = None, level: int = logging.INFO) -> None:
    """Configure structlog (and route the standard library's ``logging`` through the same output).

    Args:
        json: JSON lines (``True``) or the console renderer (``False``); default: JSON unless
            stderr is a terminal.
        level: The lowest level that is logged.
    """
    if json is None:
        json = not sys.stderr.isatty()
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # psycopg's pool and uvicorn log through the standard library: same format, same stream.
    # (uvicorn's access log stays off: one line per ingest request would drown everything.)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    for name, name_level in (("psycopg", logging.WARNING), ("uvicorn", level)):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(max(level, name_level))
        logger.propagate = False

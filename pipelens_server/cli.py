"""``pipelens serve``: run the server with uvicorn.

uvicorn turns SIGTERM and SIGINT into a graceful shutdown, which runs the app's lifespan exit:
the pool closes and the embedded PostgreSQL, when this process started it, stops.

With ``--workers N`` uvicorn's supervisor binds the port once and starts N worker processes
(spawned, so each imports the app afresh through :func:`worker_app`, which reads the parent's
validated settings from the environment). Each worker is a whole server: they share the embedded
PostgreSQL (the last one out stops it) or the ``--database-url``; migrations and the periodic
jobs take advisory locks, so they run once however many workers start. A worker that dies is
replaced; a worker that cannot start stops them all.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar

from pipelens_server._logging import configure_logging
from pipelens_server._settings import Settings, read_token_file, split_hosts
from pipelens_server.app import create_app


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipelens serve",
        description="Start the PipeLens server. With no database URL it runs an embedded "
        "PostgreSQL in the data directory.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (env PORT, default 3000)")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (env PIPELENS_DATABASE_URL); default: the embedded PostgreSQL",
    )
    parser.add_argument(
        "--read-database-url",
        help="a read replica of the database: the dashboard's and the read API's GET requests "
        "read there (env PIPELENS_READ_DATABASE_URL); default: where ingest writes",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where the embedded PostgreSQL lives (env PIPELENS_DATA_DIR; default: the user's "
        "data directory)",
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument(
        "--token-file",
        type=Path,
        help="require the token on the first line of this file as 'Authorization: Bearer "
        "<token>' on every /api request and as the dashboard's login (env PIPELENS_TOKEN_FILE); "
        "preferred over --token",
    )
    token.add_argument(
        "--token",
        help="the token itself (env PIPELENS_TOKEN). Discouraged: a command line is visible to "
        "every user of the machine (ps); use --token-file or the environment",
    )
    parser.add_argument(
        "--allowed-hosts",
        help="comma-separated Host names to answer besides the bound address ('*.example.com', "
        "'*' for any; env PIPELENS_ALLOWED_HOSTS). Default: on 127.0.0.1 only 127.0.0.1, "
        "localhost and [::1] (refuses DNS-rebinding pages); elsewhere any name",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening on a non-loopback address without a token",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="server processes on one port and one database, to use more cores (env "
        "PIPELENS_WORKERS, default 1)",
    )
    parser.add_argument("--max-body-bytes", type=int, help="largest request body accepted (16 MiB)")
    ingest = parser.add_argument_group(
        "ingest back-pressure",
        "Ingest requests beyond --max-inflight-ingests wait for a slot in a queue instead of "
        "being refused; only a full queue or a wait past --ingest-wait answers 429 with "
        "Retry-After.",
    )
    ingest.add_argument(
        "--max-inflight-ingests",
        type=int,
        metavar="N",
        help="ingest requests handled at once (env PIPELENS_MAX_INFLIGHT_INGESTS, default 32)",
    )
    ingest.add_argument(
        "--ingest-queue",
        type=int,
        metavar="N",
        help="ingest requests that may wait for a slot (env PIPELENS_INGEST_QUEUE, default 1024)",
    )
    ingest.add_argument(
        "--ingest-wait",
        type=float,
        metavar="SECONDS",
        help="longest a queued ingest request waits for a slot (env PIPELENS_INGEST_WAIT, "
        "default 30)",
    )
    parser.add_argument(
        "--abandon-after",
        type=float,
        metavar="SECONDS",
        help="mark a running run 'abandoned', with its open steps, when nothing (no event, no "
        "heartbeat) came for it in this long (env PIPELENS_ABANDON_AFTER, default 600)",
    )
    parser.add_argument(
        "--prices",
        type=Path,
        metavar="FILE",
        help="a JSON file of your own prices, {model: {input, output, cached_input, "
        "cache_write_input}} in USD per million tokens (or a table shaped like PipeLens's "
        "prices.json): they win over genai-prices and prices.json on every page and in the API "
        "(env PIPELENS_PRICES)",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """Parse ``argv``, check the settings are safe, and serve until SIGTERM or SIGINT."""
    args = _parser().parse_args(list(argv))
    try:
        token = read_token_file(args.token_file) if args.token_file else args.token
        hosts = split_hosts(args.allowed_hosts) if args.allowed_hosts is not None else None
        settings = Settings.from_env(
            host=args.host,
            port=args.port,
            database_url=args.database_url,
            read_database_url=args.read_database_url,
            data_dir=args.data_dir,
            token=token,
            allowed_hosts=hosts,
            insecure=args.insecure or None,
            max_body_bytes=args.max_body_bytes,
            max_inflight_ingests=args.max_inflight_ingests,
            ingest_queue=args.ingest_queue,
            ingest_wait_s=args.ingest_wait,
            abandon_after_s=args.abandon_after,
            prices_file=args.prices,
            workers=args.workers,
        )
    except ValueError as exc:
        print(f"pipelens serve: {exc}", file=sys.stderr)
        return 2
    if problem := settings.exposure_problem():
        print(f"pipelens serve: {problem}", file=sys.stderr)
        return 2

    try:
        app = create_app(settings)
    except ValueError as exc:  # a bad --prices file, named with its fault
        print(f"pipelens serve: {exc}", file=sys.stderr)
        return 2

    import uvicorn  # the server's heaviest import, only once the arguments are known good

    configure_logging()
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "lifespan": "on",
        "ws": "none",
        "server_header": False,
        "access_log": False,
        "log_config": None,  # configure_logging routes uvicorn's loggers already
    }
    if settings.workers > 1:
        return _serve_workers(settings, options)
    server = uvicorn.Server(uvicorn.Config(app, **options))
    # After its graceful shutdown uvicorn re-raises the signal it caught: make that a clean exit
    # (status 0) instead of a death by SIGTERM or a KeyboardInterrupt traceback.
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    # A failed start-up (say, an unreachable database) leaves ``started`` False.
    return 0 if server.started else 1


def _serve_workers(settings: Settings, options: dict[str, Any]) -> int:
    """Serve with ``settings.workers`` processes under uvicorn's supervisor until SIGTERM or
    SIGINT; 1 when a worker could not start."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    # Spawned workers inherit the environment: the settings travel there, already validated.
    os.environ[_WORKER_SETTINGS] = msgspec.json.encode(settings, enc_hook=str).decode()
    config = uvicorn.Config(
        f"{__name__}:worker_app", factory=True, workers=settings.workers, **options
    )
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    failed = any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes)
    return 1 if failed else 0


#: The environment variable that hands the parent's settings to ``--workers``' processes.
_WORKER_SETTINGS = "PIPELENS_WORKER_SETTINGS"


def worker_app() -> Litestar:
    """The app of one ``--workers`` process (uvicorn's factory), with its parent's settings.

    The settings hold the token and the database passwords: taken out of the environment at
    once, so that nothing this process starts (the embedded PostgreSQL runs as another OS user)
    inherits them."""
    settings = msgspec.json.decode(
        os.environ.pop(_WORKER_SETTINGS), type=Settings, dec_hook=_decode_path
    )
    return create_app(settings)


def _decode_path(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(f"cannot decode {kind!r}")


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)

"""``pipelens serve``: run the server with uvicorn.

uvicorn turns SIGTERM and SIGINT into a graceful shutdown, which runs the app's lifespan exit:
the pool closes and the embedded PostgreSQL, when this process started it, stops.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

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
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        ws="none",
        server_header=False,
        access_log=False,
        log_config=None,  # configure_logging routes uvicorn's loggers already
    )
    server = uvicorn.Server(config)
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


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)

"""The ``pipelens`` command: ``demo`` runs a small pipeline and prints its tree; ``serve`` starts
the server (the ``server`` extra)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence

from pipelens._demo import fill, run_demo, run_live

#: ``--abandon-after`` of the demo's server (unless given): seconds before a silent run is
#: ``abandoned``.
DEMO_ABANDON_AFTER_S = 15


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pipelens`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        return _serve(argv[1:])
    parser = argparse.ArgumentParser(prog="pipelens", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run a demo pipeline and print its step tree",
        description="Run the demo pipeline in-process and print its tree; with --serve, start "
        "`pipelens serve` (further arguments go to it), fill it with days of demo runs of a few "
        "pipelines and keep one running live.",
    )
    demo.add_argument(
        "--serve", action="store_true", help="start the server and fill it with demo runs"
    )
    demo.add_argument("--port", type=int, default=3000, help="the server's port (3000)")
    commands.add_parser("serve", help="start the dashboard server (see: pipelens serve --help)")
    args, serve_args = parser.parse_known_args(argv)
    if args.command == "demo" and args.serve:
        return _serve_with_demo(args.port, serve_args)
    if serve_args:
        parser.error(f"unrecognized arguments: {' '.join(serve_args)}")
    if args.command == "demo":
        run = run_demo()
        print(run.root.result)
        print(run.root.tree_text())
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


def _serve(args: list[str]) -> int:
    """Run the server's own entry point (the client never imports the server).

    The server is an optional extra. On POSIX this process becomes the server (same PID, so
    signals reach it as before); Windows has no real exec, so it waits for a child instead.
    """
    if importlib.util.find_spec("pipelens_server") is None:
        print(
            "pipelens serve needs the server extra: pip install 'pipelens[server]' "
            "(No module named 'pipelens_server')",
            file=sys.stderr,
        )
        return 2
    command = [sys.executable, "-m", "pipelens_server", *args]
    if sys.platform == "win32":  # pragma: no cover - execv is no real exec on Windows
        return subprocess.call(command)  # noqa: S603 - our own interpreter and module
    sys.stdout.flush()
    sys.stderr.flush()
    return os.execv(sys.executable, command)  # noqa: S606 - our own interpreter and module


def _serve_with_demo(port: int, serve_args: list[str]) -> int:
    """Start ``pipelens serve`` as a child process, fill it with the demo's history once it is
    ready, keep a demo run going live, and serve until the server exits (Ctrl-C stops it)."""
    url = f"http://127.0.0.1:{port}"
    if not any(a.split("=")[0] == "--abandon-after" for a in serve_args):
        # The demo's dead client shows as abandoned within seconds, not the default ten minutes.
        serve_args = [*serve_args, "--abandon-after", str(DEMO_ABANDON_AFTER_S)]
    server = subprocess.Popen(  # noqa: S603 - our own interpreter and command, the user's args
        [sys.executable, "-m", "pipelens", "serve", "--port", str(port), *serve_args]
    )
    stop = threading.Event()
    live: threading.Thread | None = None
    try:
        if not _wait_ready(server, url):
            print(f"pipelens demo: the server at {url} did not start", file=sys.stderr)
            return server.wait() or 1
        token = os.environ.get("PIPELENS_TOKEN")
        started = time.monotonic()
        runs = fill(url, token)
        live_started = threading.Event()
        live = threading.Thread(target=run_live, args=(url, token, stop, live_started), daemon=True)
        live.start()
        live_started.wait(30)
        print(
            f"pipelens: demo sent: {runs} runs in {time.monotonic() - started:.1f} s, and one "
            f"running live; open {url}/",
            flush=True,
        )
        return server.wait()
    except KeyboardInterrupt:
        server.send_signal(signal.SIGINT)
        return server.wait()
    finally:
        stop.set()
        if live is not None:
            live.join(10)
        if server.poll() is None:
            server.terminate()
            server.wait()


def _wait_ready(server: subprocess.Popen[bytes], url: str, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while server.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


if __name__ == "__main__":
    sys.exit(main())

"""The ``pipelens`` command: ``demo`` runs a small pipeline and prints its tree; ``serve`` starts
the server (the ``server`` extra)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipelens._demo import run_demo


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pipelens`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        # The server is an optional extra: import it only when asked for.
        try:
            from pipelens_server.cli import main as serve_main
        except ImportError as exc:
            print(
                f"pipelens serve needs the server extra: pip install 'pipelens[server]' ({exc})",
                file=sys.stderr,
            )
            return 2
        return serve_main(argv[1:])
    parser = argparse.ArgumentParser(prog="pipelens", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run a demo pipeline and print its step tree")
    commands.add_parser("serve", help="start the dashboard server (see: pipelens serve --help)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        run = run_demo()
        print(run.root.result)
        print(run.root.tree_text())
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())

"""``pipelens serve``: placeholder until the server lands."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    """Start the server (not implemented yet)."""
    print("pipelens serve: the server is not built yet", file=sys.stderr)
    return 2

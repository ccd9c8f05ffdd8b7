"""The lines every benchmark report starts with: the machine, Python and the versions measured."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def postgres_version(conninfo: str) -> str:
    """``PostgreSQL <version> (embedded)``, read from the server the benchmark used."""
    import psycopg  # the server extra: only the server benchmarks reach here

    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'} (embedded)"


def machine_lines(distributions: Iterable[str], *extra: str) -> list[str]:
    """Machine, load, Python, then the versions of ``distributions`` followed by ``extra``."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    versions = "; ".join([", ".join(f"{d} {version(d)}" for d in distributions), *extra])
    return [
        f"machine:  {cpu_model()}, {os.cpu_count()} cores ({usable} usable), load {load}",
        f"python:   {platform.python_implementation()} {platform.python_version()} "
        f"on {platform.platform(terse=True)}",
        f"versions: {versions}",
    ]

"""The public surface: ``pipelens/__init__.py`` is the whole API at a glance."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pipelens
import pipelens._version


def test_all_is_sorted_and_complete() -> None:
    """``__all__`` is sorted, and every name in it exists."""
    assert sorted(pipelens.__all__) == list(pipelens.__all__)
    missing = [name for name in pipelens.__all__ if not hasattr(pipelens, name)]
    assert missing == []


def test_exports_present_themselves_as_pipelens() -> None:
    """Users see ``pipelens.Step``, not ``pipelens._core.step.Step``."""
    for name in ("Step", "Run", "Pipeline", "MemoryTransport", "FileTransport", "span"):
        assert getattr(pipelens, name).__module__ == "pipelens", name


def test_errors_form_one_hierarchy() -> None:
    """Every PipeLens error is a ``PipelensError``; configuration errors are ``ValueError`` too."""
    assert issubclass(pipelens.ConfigurationError, pipelens.PipelensError)
    assert issubclass(pipelens.ConfigurationError, ValueError)
    assert issubclass(pipelens.TransportError, pipelens.PipelensError)


def test_demo_command_prints_the_step_tree() -> None:
    """``python -m pipelens demo`` (what ``make run`` runs) prints the nested tree."""
    out = subprocess.run(
        [sys.executable, "-m", "pipelens", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[0].startswith("The answer uses")

    def depth(name: str) -> int:
        line = next(line for line in lines[1:] if f"{name} " in line)
        assert "completed" in line, line
        return next(i for i, ch in enumerate(line) if ch.isalpha())

    assert depth("rag_demo") < depth("answer")
    # threads, asyncio children and a generator all nest under the step that started them
    assert depth("answer") < depth("score")
    assert depth("rerank") < depth("fetch_detail")
    assert depth("compose") < depth("stream_tokens")


def test_version_is_written_once() -> None:
    """``__version__`` is the installed version, which hatch reads from ``_version.py``."""
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["hatch"]["version"]["path"] == "pipelens/_version.py"
    assert pipelens.__version__ == pipelens._version.__version__
    assert pipelens.__version__ == importlib.metadata.version("pipelens")

"""The public surface: ``pipelens/__init__.py`` is the whole API at a glance."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec

import pipelens
import pipelens._version


def test_all_is_sorted_and_complete() -> None:
    """``__all__`` is sorted, and every name in it exists."""
    assert sorted(pipelens.__all__) == list(pipelens.__all__)
    missing = [name for name in pipelens.__all__ if not hasattr(pipelens, name)]
    assert missing == []


#: Public modules of the package: reachable as attributes, never in ``__all__``.
PUBLIC_MODULES = {"chart", "events", "fastapi", "litestar", "testing", "transport"}


def test_no_name_leaks_out_of_all() -> None:
    """Every public name of ``pipelens`` is in ``__all__``: nothing leaks (``contextlib``...)."""
    public = {name for name in dir(pipelens) if not name.startswith("_")} - PUBLIC_MODULES
    assert sorted(public) == [name for name in pipelens.__all__ if not name.startswith("_")]


def test_exports_present_themselves_as_pipelens() -> None:
    """Users see ``pipelens.Run``, not ``pipelens._core.step.Run``."""
    for name in ("Run", "Pipeline", "MemoryTransport", "FileTransport", "span", "llm_call"):
        assert getattr(pipelens, name).__module__ == "pipelens", name


def _exported_structs() -> list[type[msgspec.Struct]]:
    exported = (getattr(pipelens, name) for name in pipelens.__all__)
    return [o for o in exported if isinstance(o, type) and issubclass(o, msgspec.Struct)]


def test_exported_structs_keep_a_module_that_resolves_their_annotations() -> None:
    """msgspec resolves a Struct's annotations in its ``__module__``: typed decoding works."""
    assert pipelens.Step in _exported_structs()
    for struct in _exported_structs():
        msgspec.inspect.type_info(struct)  # raised NameError when relabelled "pipelens"
    call = msgspec.json.decode(
        b'{"provider": "openai", "operation": "chat", "usage": {"input_tokens": 3}}',
        type=pipelens.LLMCall,
    )
    assert call.usage == pipelens.TokenUsage(input_tokens=3)
    assert msgspec.json.decode(b'{"sent": 2}', type=pipelens.TransportStats).sent == 2


def test_imports_where_os_has_no_register_at_fork() -> None:
    """``import pipelens`` works without ``os.register_at_fork`` (Windows has no fork)."""
    code = (
        "import os\n"
        "del os.register_at_fork, os.fork\n"  # as on Windows (random checks os.fork)
        "import pipelens, pipelens.transport\n"
        "@pipelens.step\n"
        "def f(): return 1\n"
        "assert f() == 1\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_error_types_recorded_under_a_stable_public_spelling() -> None:
    """What a closed generator step or a 5xx answer fails with is stored under a public name."""
    from pipelens._core.decorator import _GeneratorClosed
    from pipelens._core.step import error_info
    from pipelens._integrations.asgi import HTTPServerError

    assert error_info(_GeneratorClosed("closed")).type == "pipelens._GeneratorClosed"
    assert error_info(HTTPServerError(503)).type == "pipelens.HTTPServerError"


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

"""Every Python example of README.md runs and prints what its comments say.

A line ``print(...)  # text`` promises that ``text`` is printed as a line, in that order among
the block's promises. Blocks run as plain scripts (their ``asyncio.run`` included) in a fresh
namespace, from a temporary working directory.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pipelens

README = Path(__file__).parents[1] / "README.md"
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
_PROMISE = re.compile(r"^\s*print\(.*\)\s+# (.+)$")


def _stub_server(name: str) -> Any:
    """A stub server of the LLM tests (``tests/pipelens/<name>.py``), not started yet."""
    path = Path(__file__).parent / "pipelens" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_readme{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.StubServer()


@pytest.fixture(scope="module")
def openai_stub() -> Iterator[Any]:
    """The local OpenAI stub server of the LLM tests (tests/pipelens/_openai_stub.py)."""
    with _stub_server("_openai_stub") as server:
        yield server


@pytest.fixture(scope="module")
def anthropic_stub() -> Iterator[Any]:
    """The local Anthropic stub server of the LLM tests (tests/pipelens/_anthropic_stub.py)."""
    with _stub_server("_anthropic_stub") as server:
        yield server


@pytest.fixture(scope="module")
def otlp_endpoint() -> Iterator[str]:
    """A local OTLP/HTTP receiver (tests/pipelens/_otlp_receiver.py), as an OTel collector."""
    path = Path(__file__).parent / "pipelens" / "_otlp_receiver.py"
    spec = importlib.util.spec_from_file_location("_readme_otlp_receiver", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with module.otlp_receiver() as (url, _):
        yield url


@pytest.fixture(scope="module")
def pipelens_server() -> Iterator[str]:
    """A real ``pipelens serve`` (embedded PostgreSQL in a fresh data directory), started only
    for the blocks that send it something; its base URL."""
    path = Path(__file__).parent / "pipelens_server" / "_pg_testkit.py"
    spec = importlib.util.spec_from_file_location("_readme_pg_testkit", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with module.data_dir() as directory, module.serve("--data-dir", str(directory)) as (_, url):
        yield url


def python_blocks() -> list[str]:
    if not README.is_file():
        pytest.fail(f"README.md is missing: expected it at {README}")
    return _PYTHON_BLOCK.findall(README.read_text(encoding="utf-8"))


def promises(block: str) -> list[str]:
    """The lines the block's ``print(...)  # text`` comments promise, in order."""
    return [m.group(1).rstrip() for line in block.splitlines() if (m := _PROMISE.match(line))]


def test_readme_has_python_examples_with_promises() -> None:
    """The README shows Python examples, and each one states what it prints."""
    blocks = python_blocks()
    assert len(blocks) >= 2
    assert [True] * len(blocks) == [bool(promises(b)) for b in blocks]


def _block_count() -> int:
    # At collection time: a missing README is reported by the test above, not as a crash here.
    return len(python_blocks()) if README.is_file() else 0


@pytest.mark.parametrize("index", range(_block_count()))
def test_readme_example_prints_what_it_promises(
    index: int,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    openai_stub: Any,
    anthropic_stub: Any,
    otlp_endpoint: str,
    request: pytest.FixtureRequest,
) -> None:
    """The block runs, and its promised lines are printed, in order (OpenAI and Anthropic calls
    go to the local stub servers and PipeLens's OTLP to a local receiver through the
    environment, as a user's would go to the API and their collector; an OTel SDK's exporter
    goes to a real ``pipelens serve``)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_endpoint)
    block = python_blocks()[index]
    if "OTLPSpanExporter" in block:  # the "send OTLP to PipeLens" example
        server: str = request.getfixturevalue("pipelens_server")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{server}/v1/traces")
    monkeypatch.setenv("PIPELENS_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("OPENAI_BASE_URL", openai_stub.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-readme-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_stub.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-readme-test")
    code = compile(block, f"{README}[python block {index}]", "exec", ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    outcome = eval(code, {"__name__": f"readme_block_{index}"})
    if inspect.iscoroutine(outcome):
        asyncio.run(outcome)
    try:
        printed = capsys.readouterr().out.splitlines()
    finally:
        pipelens.unpatch()  # an example may have patched a library: leave the next test a clean one
    expected = promises(block)
    found = iter(printed)  # a subsequence: other prints may come in between
    assert expected == [line for line in expected if any(line == out.rstrip() for out in found)], (
        printed
    )

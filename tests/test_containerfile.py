"""The Containerfile's build stage has what the wheel needs, and the wheel serves the dashboard.

No container engine runs here, so the test does what the build stage does with the same inputs:
it copies exactly the paths the Containerfile's ``COPY`` lines name into an empty directory,
builds the wheel there, installs it (not editable) into a fresh virtual environment, starts
``pipelens serve`` from that environment and loads a page and the vendored htmx.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTAINERFILE = ROOT / "Containerfile"


def copied_paths(containerfile: Path) -> list[str]:
    """The sources of every ``COPY`` that takes files from the build context."""
    sources: list[str] = []
    for line in containerfile.read_text(encoding="utf-8").splitlines():
        if not line.startswith("COPY "):
            continue
        words = shlex.split(line)
        if any(w.startswith("--from") for w in words):
            continue
        sources += words[1:-1]
    return sources


def _run(*command: str | Path, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stderr[-4000:]}"
    return done.stdout


def _wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(
        f"pipelens serve from the wheel did not become ready (exit {process.poll()})"
    )


def test_copy_lines_name_the_static_files_the_wheel_includes() -> None:
    """Every path the wheel force-includes from the source tree is copied by the Containerfile."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    table = pyproject.split("[tool.hatch.build.targets.wheel.force-include]", 1)[1].split("\n[", 1)
    included = re.findall(r'^"([^"]+)"\s*=', table[0], re.MULTILINE)
    assert included, "pyproject.toml force-includes nothing: this test has lost its subject"
    assert [p for p in included if p not in copied_paths(CONTAINERFILE)] == []


@pytest.mark.timeout(900)
def test_wheel_built_from_the_copied_files_serves_the_dashboard(tmp_path: Path) -> None:
    """The wheel built from the COPY'd files installs into a fresh venv and serves / and htmx."""
    source = tmp_path / "src"
    source.mkdir()
    for name in copied_paths(CONTAINERFILE):
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / name)
    # Neither the repository nor a test's settings may leak into the installed server.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELENS_", "PYTHON"))}
    env.pop("PORT", None)
    wheels = tmp_path / "wheels"
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "-w",
        wheels,
        source,
        cwd=tmp_path,
        env=env,
    )
    (wheel,) = wheels.glob("pipelens-*.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path, env=env)
    _run(
        venv / "bin/python",
        "-m",
        "pip",
        "install",
        "--quiet",
        f"{wheel}[server]",
        cwd=tmp_path,
        env=env,
    )
    location = _run(
        venv / "bin/python",
        "-c",
        "import pipelens_server; print(pipelens_server.__file__)",
        cwd=tmp_path,
        env=env,
    )
    assert Path(location.strip()).is_relative_to(venv)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [venv / "bin/pipelens", "serve", "--port", port, "--data-dir", tmp_path / "data"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(process, url)
        page = httpx.get(f"{url}/")
        (script,) = re.findall(r'<script[^>]+src="([^"]*htmx[^"]*)"', page.text)
        htmx = httpx.get(f"{url}{script}")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    assert (page.status_code, "text/html" in page.headers["content-type"]) == (200, True)
    assert (htmx.status_code, "htmx" in htmx.text[:2000]) == (200, True)

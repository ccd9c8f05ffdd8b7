"""Interop with a client we did not write: the seed's published Python library (PyPI
``pipelens`` 1.14.1) reports runs to our server, real-time and batched, and each run reads back
with every step. The library needs Python >= 3.12; it is installed into a venv of its own (its
package name is ours too), cached in the temp dir between sessions."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _pg_testkit import live_server

from pipelens_server import Settings, create_app

SEED_VERSION = "1.14.1"
CLIENT = Path(__file__).with_name("_seed_client.py")


def _python_312() -> str:
    """A Python >= 3.12: ``PIPELENS_SEED_PYTHON``, one on PATH, or one pyenv installed."""
    candidates = [os.environ.get("PIPELENS_SEED_PYTHON", "")]
    candidates += [shutil.which(name) or "" for name in ("python3.12", "python3.13")]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.1[2-9]*/bin/python"))
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.stdout.strip() == "True":
            return candidate
    pytest.fail(
        "the seed interop test needs Python >= 3.12 (the seed's library requires it): "
        "install one or point PIPELENS_SEED_PYTHON at it"
    )


@pytest.fixture(scope="session")
def seed_python() -> str:
    """The interpreter of a venv holding the seed's library, created on first use."""
    venv = Path(tempfile.gettempdir()) / f"pipelens-seed-{SEED_VERSION}-venv"
    python = venv / "bin" / "python"
    with (Path(tempfile.gettempdir()) / f"pipelens-seed-{SEED_VERSION}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent sessions build it once
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([_python_312(), "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", f"pipelens=={SEED_VERSION}"],
                check=True,
            )
            (venv / ".complete").touch()
    return str(python)


@pytest.fixture
def server_url(database_url: str) -> Iterator[str]:
    """A real uvicorn serving the app on the test's database."""
    with live_server(create_app(Settings(database_url=database_url))) as url:
        yield url


def _run_seed_client(seed_python: str, *args: str) -> None:
    # The seed's own ``pipelens`` must be the one imported, never ours through PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [seed_python, str(CLIENT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_seed_library_reports_a_run_with_every_step(
    seed_python: str, server_url: str, mode: str
) -> None:
    """Each step the seed's library ran is stored with its status, result and records."""
    run_id = f"seed-{mode}"
    _run_seed_client(seed_python, server_url, run_id, mode)
    detail = httpx.get(f"{server_url}/api/v1/runs/{run_id}").json()
    assert (detail["run"]["pipeline"], detail["run"]["status"]) == ("seed-demo", "completed")
    steps = {
        s["key"]: (s["status"], s["parent_id"], s["result"], s["records"], s["error"])
        for s in detail["steps"]
    }
    failed = {"type": None, "message": "boom", "traceback": None}
    assert steps == {
        "seed-demo": ("completed", None, "done", {}, None),
        "seed-demo.child": ("completed", "seed-demo", [1, 2], {"n": 2}, None),
        "seed-demo.nested": ("completed", "seed-demo", "leaf", {}, None),
        "seed-demo.nested.leaf": ("completed", "seed-demo.nested", "leaf", {}, None),
        "seed-demo.broken": ("failed", "seed-demo", None, {}, failed),
    }


BURST_STEPS = 80


def test_seed_library_realtime_burst_is_stored_whole(seed_python: str, server_url: str) -> None:
    """A real-time run of 80 zero-work steps (one POST per event, fired at once, never
    retried: far beyond the in-flight limit) stores every step with its record, and the run
    completes."""
    _run_seed_client(seed_python, server_url, "seed-burst-1", "burst", str(BURST_STEPS))
    detail = httpx.get(f"{server_url}/api/v1/runs/seed-burst-1").json()
    assert (detail["run"]["pipeline"], detail["run"]["status"]) == ("seed-burst", "completed")
    steps = {s["key"]: (s["status"], s["records"], s["result"]) for s in detail["steps"]}
    assert steps == {
        "seed-burst": ("completed", {}, BURST_STEPS),
        **{f"seed-burst.s{i}": ("completed", {"i": i}, i) for i in range(BURST_STEPS)},
    }

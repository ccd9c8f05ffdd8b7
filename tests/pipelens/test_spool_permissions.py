"""Spooled request bodies hold captured inputs and results: other users of the machine read none."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelens._transports.spool import Spool


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that would leave new files world-readable (the default on many systems)."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("loose_umask")
def test_spool_files_are_0600_in_a_0700_directory(tmp_path: Path) -> None:
    """A new spool directory is 0700 and each spooled body 0600, whatever the umask allows."""
    directory = tmp_path / "spool" / "host-abc"
    spool = Spool(directory, max_bytes=1 << 20, stale_after=60)
    name = spool.write(b"\x91\x01", events=1)
    assert name is not None
    assert _mode(directory) == 0o700
    assert _mode(directory / name) == 0o600


@pytest.mark.usefixtures("loose_umask")
def test_a_readable_spool_directory_is_tightened(tmp_path: Path) -> None:
    """A directory an older version left 0755 becomes 0700 on the next write."""
    directory = tmp_path / "spool"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    Spool(directory, max_bytes=1 << 20, stale_after=60).write(b"\x90", events=0)
    assert _mode(directory) == 0o700

"""Request bodies kept on disk while the server is out of reach, replayed when it is back.

Each file holds one msgpack request body and is named ``<time_ns>-<pid>-<seq>-<events>.msgpack``.
It is written under a temporary name and renamed, so a reader never sees half a file. A sender
claims a file by renaming it to ``<name>.<pid>.claim`` (a rename is atomic: two processes never
send the same file at once), deletes it once the server accepted it, or renames it back to try
again later. A claim left behind by a process that died is taken back after ``stale_after``
seconds. Tokens are never written here: whoever replays a file sends it with its own. The bodies
hold captured inputs and results, so the directory is ``0700`` and each file ``0600``: other users
of the machine read none of it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import sys
import time
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

_SUFFIX = ".msgpack"
_CLAIM = ".claim"


def user_cache_dir() -> Path:
    """The per-user cache directory of this platform (XDG on Linux)."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def default_spool_dir(url: str) -> Path:
    """Where batches for ``url`` wait: one directory per URL under ``PIPELENS_SPOOL_DIR``
    (default ``<user cache dir>/pipelens/spool``), so the next process configured with the same
    URL replays them.
    """
    root = os.environ.get("PIPELENS_SPOOL_DIR")
    base = Path(root) if root else user_cache_dir() / "pipelens" / "spool"
    readable = re.sub(r"[^A-Za-z0-9.]+", "_", urlsplit(url).netloc)[:40]
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return base / f"{readable}-{digest}"


class Claim(NamedTuple):
    """A spooled body this process is sending: put it back with ``release`` or ``remove`` it."""

    name: str
    path: Path
    body: bytes
    events: int


class Spool:
    """One directory of spooled request bodies (created on the first write).

    Args:
        directory: where the files live; shared by every process sending to the same place.
        max_bytes: writes are refused once the files there add up to this many bytes.
        stale_after: seconds after which another process's claim counts as abandoned.
    """

    def __init__(self, directory: Path, *, max_bytes: int, stale_after: float) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.stale_after = stale_after
        self._seq = itertools.count()
        self._bytes: int | None = None  # estimated lazily; other processes change it too
        self._private = False  # the directory was made (or found) owner-only

    def __repr__(self) -> str:
        return f"<Spool {str(self.directory)!r}>"

    def write(self, body: bytes, events: int) -> str | None:
        """Keep ``body`` on disk: the file's name, or ``None`` when the spool is full.

        Raises:
            OSError: the directory or the file cannot be written.
        """
        if self._bytes is None:
            self.pending()
        size = self._bytes or 0
        if size + len(body) > self.max_bytes:
            self.pending()  # maybe another process replayed some meanwhile
            if (self._bytes or 0) + len(body) > self.max_bytes:
                return None
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._seq)}-{events}{_SUFFIX}"
        self._make_private()
        temporary = self.directory / f".{name}.tmp"
        try:
            # Created 0600 from the start (not chmod-ed after): no moment where others may read.
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(body)
            os.replace(temporary, self.directory / name)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
        self._bytes = size + len(body)
        return name

    def _make_private(self) -> None:
        """Create the directory ``0700``; one an older version left readable by others is
        tightened once (the umask does not widen ``mkdir``'s mode, but may leave it narrower)."""
        if self._private:
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.directory.stat().st_mode & 0o077:
            os.chmod(self.directory, 0o700)
        self._private = True

    def pending(self) -> list[str]:
        """Names of the unclaimed files, oldest first; stale claims are taken back first."""
        try:
            entries = list(os.scandir(self.directory))
        except OSError:  # not created yet, or unreadable: nothing to replay
            self._bytes = 0
            return []
        names: list[str] = []
        total = 0
        now = time.time()
        for entry in entries:
            name = entry.name
            try:
                if name.endswith(_SUFFIX) and not name.startswith("."):
                    names.append(name)
                    total += entry.stat().st_size
                elif name.endswith(_CLAIM):
                    total += entry.stat().st_size
                    if now - entry.stat().st_mtime > self.stale_after:
                        original = name[: -len(_CLAIM)].rsplit(".", 1)[0]
                        os.rename(entry.path, self.directory / original)
                        names.append(original)
            except OSError:  # replayed or claimed by another process meanwhile
                continue
        self._bytes = total
        names.sort()
        return names

    def claim(self, name: str) -> Claim | None:
        """Take ``name`` for this process, or ``None`` if another one was faster."""
        path = self.directory / name
        claimed = self.directory / f"{name}.{os.getpid()}{_CLAIM}"
        try:
            os.rename(path, claimed)
            os.utime(claimed)  # the claim's age starts now
            body = claimed.read_bytes()
        except OSError:
            return None
        try:
            events = int(name[: -len(_SUFFIX)].rsplit("-", 1)[1])
        except (IndexError, ValueError):
            events = 0
        return Claim(name, claimed, body, events)

    def release(self, claim: Claim) -> None:
        """Give a claimed file back so that it is tried again later."""
        try:
            os.rename(claim.path, self.directory / claim.name)
        except OSError:  # left claimed: it goes back to the pool once the claim is stale
            return

    def remove(self, claim: Claim) -> None:
        """Delete a claimed file: the server has it."""
        try:
            claim.path.unlink(missing_ok=True)
        except OSError:
            return
        if self._bytes is not None:
            self._bytes = max(0, self._bytes - len(claim.body))

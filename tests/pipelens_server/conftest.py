"""A real PostgreSQL for the server tests.

The embedded PostgreSQL starts once per test session in a temporary directory (or
``PIPELENS_TEST_DATABASE_URL`` names a server to use instead, which must allow CREATE DATABASE).
Each test gets a database of its own, copied from a template that already has the schema; a
PostgreSQL that cannot be started fails the tests, it never skips them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from _pg_testkit import LOCAL, data_dir
from litestar import Litestar
from litestar.testing import TestClient
from psycopg import sql

from pipelens_server import EmbeddedPostgres, Settings, create_app, migrate


@pytest.fixture(scope="session")
def postgres_conninfo() -> Iterator[str]:
    """Conninfo of a PostgreSQL server for the whole session."""
    if url := os.environ.get("PIPELENS_TEST_DATABASE_URL"):
        yield url
        return
    with data_dir() as directory:
        server = EmbeddedPostgres(directory)
        conninfo = server.start()
        try:
            yield conninfo
        finally:
            server.stop()


def _create_database(server: str, template: str | None = None) -> str:
    name = f"pipelens_test_{uuid.uuid4().hex[:12]}"
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(query)
    return name


def _drop_database(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


async def _migrate(conninfo: str) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        await migrate(conn)


@pytest.fixture(scope="session")
def _schema_template(postgres_conninfo: str) -> Iterator[str]:
    """A database holding the migrated schema, copied for each test."""
    name = _create_database(postgres_conninfo)
    asyncio.run(_migrate(psycopg.conninfo.make_conninfo(postgres_conninfo, dbname=name)))
    yield name
    _drop_database(postgres_conninfo, name)


@pytest.fixture
def database_url(postgres_conninfo: str, _schema_template: str) -> Iterator[str]:
    """A fresh database with the schema, dropped after the test."""
    name = _create_database(postgres_conninfo, template=_schema_template)
    yield psycopg.conninfo.make_conninfo(postgres_conninfo, dbname=name)
    _drop_database(postgres_conninfo, name)


@pytest.fixture
def empty_database_url(postgres_conninfo: str) -> Iterator[str]:
    """A fresh database without the schema, dropped after the test."""
    name = _create_database(postgres_conninfo)
    yield psycopg.conninfo.make_conninfo(postgres_conninfo, dbname=name)
    _drop_database(postgres_conninfo, name)


@pytest.fixture(scope="module")
def module_database_url(postgres_conninfo: str, _schema_template: str) -> Iterator[str]:
    """A fresh database with the schema shared by one module's tests."""
    name = _create_database(postgres_conninfo, template=_schema_template)
    yield psycopg.conninfo.make_conninfo(postgres_conninfo, dbname=name)
    _drop_database(postgres_conninfo, name)


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient[Litestar]]:
    """A test client of an app on the test's own database."""
    with TestClient(create_app(Settings(database_url=database_url)), base_url=LOCAL) as test_client:
        yield test_client


# The browser tests' fixtures (Chromium via Playwright, a live server): see _browser_kit.py.
from _browser_kit import browser, playwright, site  # noqa: E402, F401

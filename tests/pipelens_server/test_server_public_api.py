"""The server package's public surface."""

from __future__ import annotations

import ast
from pathlib import Path

import pipelens_server


def test_all_is_sorted_and_importable() -> None:
    """``__all__`` is sorted and every name in it exists."""
    assert pipelens_server.__all__ == sorted(pipelens_server.__all__)
    assert [n for n in pipelens_server.__all__ if not hasattr(pipelens_server, n)] == []


def test_errors_share_one_base_with_http_status() -> None:
    """Every error the server raises on purpose is a ``ServerError`` with an HTTP status."""
    errors = [getattr(pipelens_server, n) for n in pipelens_server.__all__ if n.endswith("Error")]
    assert all(issubclass(e, pipelens_server.ServerError) for e in errors)
    assert {e.__name__: e.status_code for e in errors} == {
        "DatabaseUnavailableError": 503,
        "EmbeddedPostgresError": 500,
        "InvalidBatchError": 400,
        "MigrationError": 500,
        "OverloadedError": 429,
        "RunNotFoundError": 404,
        "ServerError": 500,
        "UnauthorizedError": 401,
        "UnsupportedMediaTypeError": 415,
    }


def test_only_the_wire_contract_is_imported_from_the_client() -> None:
    """The server takes nothing from ``pipelens`` but ``pipelens.events``."""
    package = Path(pipelens_server.__file__).parent
    imported = set()
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert {m for m in imported if m == "pipelens" or m.startswith("pipelens.")} == {
        "pipelens.events"
    }

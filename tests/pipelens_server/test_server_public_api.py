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


def _client_imports(package: Path) -> set[str]:
    """The ``pipelens`` modules that the modules under ``package`` import, at any depth and in
    any scope (function-level imports included)."""
    imported = set()
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "pipelens" and not node.level:
                # ``from pipelens import _prices`` takes the module ``pipelens._prices``.
                imported.update(f"pipelens.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    return {m for m in imported if m == "pipelens" or m.startswith("pipelens.")}


def test_only_the_wire_contract_is_imported_from_the_client() -> None:
    """The server takes nothing from ``pipelens`` but ``pipelens.events`` and the leaves both
    sides share: the price lookup (``pipelens._pricing``) and the secret matcher
    (``pipelens._secrets``)."""
    assert _client_imports(Path(pipelens_server.__file__).parent) == {
        "pipelens.events",
        "pipelens._pricing",
        "pipelens._secrets",
    }


def test_the_import_check_sees_private_client_imports_in_subpackages(tmp_path: Path) -> None:
    """The check above reads subpackages and would catch a private client import there."""
    room = tmp_path / "pipelens_server" / "_room"
    room.mkdir(parents=True)
    (room / "a.py").write_text("import pipelens.events\n")
    (room / "b.py").write_text("def f():\n    from pipelens._core import x\n")
    (room / "c.py").write_text("from pipelens import _prices\n")
    (room / "d.py").write_text("import pipelens\n")
    assert _client_imports(tmp_path / "pipelens_server") == {
        "pipelens",
        "pipelens.events",
        "pipelens._core",
        "pipelens._prices",
    }

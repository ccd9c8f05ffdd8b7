"""The import structure ARCHITECTURE.md describes: no circle, one direction between packages.

An AST scan of both packages, counting imports made inside functions: a loop of imports is a
loop in the design, whenever it runs. Imports under ``if TYPE_CHECKING:`` never run and are not
counted; the one that exists lets the context module name the type of the step it holds.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipelens", "pipelens_server")


class Import(NamedTuple):
    source: str  # the importing module, dotted
    target: str  # the module imported, dotted (a package means its __init__)
    lazy: bool  # made inside a function
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


class Module(NamedTuple):
    source: str
    is_package: bool


def modules() -> dict[str, Module]:
    """Every module of both packages, by dotted name."""
    return {
        module_name(p): Module(p.read_text(encoding="utf-8"), p.name == "__init__.py")
        for pkg in PACKAGES
        for p in sorted((ROOT / pkg).rglob("*.py"))
    }


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in {
        "TYPE_CHECKING",
        "typing.TYPE_CHECKING",
    }


def _walk(node: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if _type_checking_only(child):
            continue
        inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
        yield child, inside
        yield from _walk(child, inside)


def imports(known: dict[str, Module]) -> list[Import]:
    """Each import of one of our modules, resolved to the module it runs."""
    found: list[Import] = []
    for name, module in known.items():
        package = name if module.is_package else name.rpartition(".")[0]
        for node, lazy in _walk(ast.parse(module.source)):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import mod` runs pkg.mod; `from mod import name` runs mod.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in node.names
                ]
            found += [
                Import(name, target, lazy, node.lineno)  # type: ignore[attr-defined]
                for target in targets
                if target.split(".")[0] in PACKAGES and target != name
            ]
    return found


def circles(edges: list[Import]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


EDGES = imports(modules())


def test_the_scan_sees_function_level_relative_and_package_imports() -> None:
    """An import inside a function, a relative one and `from package import module` all count."""
    known = {
        "pipelens": Module("from pipelens._a import A\n", is_package=True),
        "pipelens._a": Module("def f():\n    from pipelens import _b\n", is_package=False),
        "pipelens._b": Module("from . import _a\nfrom .events import X\n", is_package=False),
        "pipelens.events": Module("", is_package=False),
    }
    edges = imports(known)
    assert sorted((e.source, e.target, e.lazy) for e in edges) == [
        ("pipelens", "pipelens._a", False),
        ("pipelens._a", "pipelens._b", True),
        ("pipelens._b", "pipelens._a", False),
        ("pipelens._b", "pipelens.events", False),
    ]
    assert circles(edges) == [["pipelens._a", "pipelens._b"]]
    assert len(EDGES) > 50  # and the real tree was read


def test_no_import_circle_in_either_package() -> None:
    """No group of modules imports itself back, counting imports inside functions."""
    assert circles(EDGES) == []


def test_our_modules_are_imported_at_the_top_of_the_file() -> None:
    """Function-level imports are for optional third-party libraries, never our own modules."""
    assert [f"{e.source}:{e.line} imports {e.target}" for e in EDGES if e.lazy] == []


def test_the_client_never_imports_the_server() -> None:
    """``pipelens`` runs without ``pipelens_server`` installed."""
    assert [
        f"{e.source}:{e.line} imports {e.target}"
        for e in EDGES
        if e.source.split(".")[0] == "pipelens" and e.target.split(".")[0] == "pipelens_server"
    ] == []


def test_the_server_imports_only_the_wire_contract_of_the_client() -> None:
    """``pipelens_server`` takes ``pipelens.events``, the price lookup (``pipelens._pricing``)
    and the secret matcher (``pipelens._secrets``), leaves both, nothing else of the client."""
    taken = {e.target for e in EDGES if e.source.split(".")[0] == "pipelens_server"}
    assert {t for t in taken if t.split(".")[0] == "pipelens"} <= {
        "pipelens.events",
        "pipelens._pricing",
        "pipelens._secrets",
    }


class House(NamedTuple):
    """A package's rooms, the rooms each may import, and the leaves anyone may import."""

    package: str
    rooms: dict[str, set[str]]
    leaves: set[str]


#: The rooms of each package and the rooms each may import (ARCHITECTURE.md). A room may always
#: import itself and the leaves (modules that import nothing of ours); the public faces (the
#: package's ``__init__``, ``pipelens.fastapi``, ``testing``, ``app``, ``cli``...) may import any
#: room, and no room imports a face.
CLIENT = House(
    package="pipelens",
    rooms={
        "pipelens._core": set(),
        "pipelens._transports": {"pipelens._core"},
        "pipelens._llm": {"pipelens._core"},
        "pipelens._otel": {"pipelens._core", "pipelens._transports"},
        # The ASGI core reads the W3C headers of a request to continue its caller's run.
        "pipelens._integrations": {"pipelens._core", "pipelens._llm", "pipelens._otel"},
        "pipelens._seed": {"pipelens._core", "pipelens._llm", "pipelens._transports"},
        "pipelens._configure": {
            "pipelens._core",
            "pipelens._transports",
            "pipelens._llm",
            "pipelens._integrations",
            "pipelens._otel",
            "pipelens._seed",
        },
    },
    leaves={"pipelens.events", "pipelens._version", "pipelens._pricing", "pipelens._secrets"},
)
SERVER = House(
    package="pipelens_server",
    rooms={
        "pipelens_server._db": set(),
        # App-level middleware: before routing, under every room.
        "pipelens_server._security": set(),
        "pipelens_server._params": set(),
        "pipelens_server._ingest": {"pipelens_server._db"},
        "pipelens_server._read": set(),
        "pipelens_server._api": {
            "pipelens_server._db",
            "pipelens_server._ingest",
            "pipelens_server._read",
        },
        "pipelens_server._pages": {
            "pipelens_server._db",
            "pipelens_server._ingest",
            "pipelens_server._read",
        },
    },
    leaves={
        "pipelens.events",
        "pipelens._pricing",
        "pipelens._secrets",
        "pipelens_server._errors",
        "pipelens_server._logging",
        "pipelens_server._settings",
        "pipelens_server._timerange",
    },
)


def room_of(module: str) -> str:
    """The room a module lives in (``pipelens._llm.patch`` → ``pipelens._llm``)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def room_breaches(house: House, edges: list[Import]) -> list[str]:
    """Each import by a module of ``house`` that its room's rules do not allow."""
    breaches = []
    for edge in edges:
        if edge.source.split(".")[0] != house.package:
            continue
        source, target = room_of(edge.source), room_of(edge.target)
        if source in house.leaves:
            allowed = False
        elif source in house.rooms:
            allowed = target in {source, *house.leaves, *house.rooms[source]}
        else:  # a public face
            allowed = True
        if not allowed:
            breaches.append(f"{edge.source}:{edge.line} imports {edge.target}")
    return breaches


def test_the_room_rules_catch_an_import_against_them() -> None:
    """The check fails when the core imports the LLM room, a room a public face, a leaf
    anything of ours, or the JSON API a page module."""
    edges = [
        Import("pipelens._core.step", "pipelens._llm.call", lazy=False, line=3),
        Import("pipelens._llm.call", "pipelens._core.step", lazy=False, line=4),
        Import("pipelens._seed.pipeline", "pipelens.testing", lazy=False, line=5),
        Import("pipelens._transports.http", "pipelens._version", lazy=False, line=6),
        Import("pipelens.events", "pipelens._core.step", lazy=False, line=7),
        Import("pipelens_server._api._runs", "pipelens_server._pages._runs", lazy=False, line=8),
        Import("pipelens_server._pages._runs", "pipelens_server._read._run", lazy=False, line=9),
    ]
    assert room_breaches(CLIENT, edges) == [
        "pipelens._core.step:3 imports pipelens._llm.call",
        "pipelens._seed.pipeline:5 imports pipelens.testing",
        "pipelens.events:7 imports pipelens._core.step",
    ]
    assert room_breaches(SERVER, edges) == [
        "pipelens_server._api._runs:8 imports pipelens_server._pages._runs"
    ]


def test_each_client_room_imports_only_the_rooms_below_it() -> None:
    """``_core`` → nothing of ours but the leaves; ``_transports``, ``_llm`` → ``_core``;
    ``_otel`` → ``_core``, ``_transports``; ``_integrations`` → ``_core``, ``_llm``, ``_otel``;
    ``_seed`` → ``_core``, ``_llm``, ``_transports``."""
    assert {room_of(m) for m in modules() if m.startswith("pipelens.")} >= set(CLIENT.rooms)
    assert room_breaches(CLIENT, EDGES) == []


def test_each_server_room_imports_only_the_rooms_below_it() -> None:
    """``_db`` and ``_read`` → the leaves; ``_ingest`` → ``_db``; ``_api`` and ``_pages`` →
    ``_read``, ``_ingest``, ``_db``, never each other."""
    assert {room_of(m) for m in modules() if m.startswith("pipelens_server.")} >= set(SERVER.rooms)
    assert room_breaches(SERVER, EDGES) == []

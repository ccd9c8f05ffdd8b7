"""The run page reads a bounded share of a big run: the steps it can show and counts of the rest.

The run: a root ``loop`` with LOOP children (``c0`` has GRANDCHILDREN children; ``c2500``, in
the gap, has one), and ROOTS more roots. Rows go in by COPY: 10,000 events through the ingest
would make the test slow for nothing it checks.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Collection

import psycopg
import pytest
from _pg_testkit import T0
from litestar import Litestar
from litestar.testing import TestClient
from psycopg_pool import AsyncConnectionPool

from pipelens_server._pages._gantt import CHILD_CAP
from pipelens_server._read._run import run_tree
from pipelens_server._read._shapes import StepTree

Client = TestClient[Litestar]
ROOTS = 5_000
LOOP = 5_000
GRANDCHILDREN = 3
#: Every step: the roots, ``loop``, its children, c0's children and c2500's child.
TOTAL = ROOTS + 1 + LOOP + GRANDCHILDREN + 1
HALF = CHILD_CAP // 2


@pytest.fixture
def big_run(database_url: str) -> str:
    """The run ``big`` stored (completed), its database's URL returned."""
    steps: list[tuple[str, str, str | None, int]] = [("loop", "loop", None, T0 - 1)]
    steps += [(f"r___{i}", f"r{i}", None, T0 + i) for i in range(ROOTS)]
    steps += [(f"loop.c___{i}", f"c{i}", "loop", T0 + i) for i in range(LOOP)]
    steps += [(f"loop.c.g___{i}", f"g{i}", "c0", T0 + i) for i in range(GRANDCHILDREN)]
    steps.append(("loop.c2500.deep", "deep", "c2500", T0 + 2_500))
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO pipelines (name) VALUES ('p')")
        conn.execute(
            "INSERT INTO runs (run_id, pipeline, status, start_ns, end_ns)"
            " VALUES ('big', 'p', 'completed', %s, %s)",
            [T0 - 1, T0 + 10 * LOOP],
        )
        with conn.cursor().copy(
            "COPY steps (run_id, key, step_id, parent_id, name, status, start_ns, end_ns)"
            " FROM STDIN"
        ) as copy:
            for key, step_id, parent, start in steps:
                copy.write_row(
                    ("big", key, step_id, parent, step_id, "completed", start, start + 1)
                )
    return database_url


def _read(database_url: str, show_all: Collection[str] = (), reveal: str | None = None) -> StepTree:
    async def read() -> StepTree:
        async with AsyncConnectionPool(database_url, min_size=1, max_size=1, open=False) as pool:
            return (await run_tree(pool, "big", cap=CHILD_CAP, show_all=show_all, reveal=reveal))[1]

    return asyncio.run(read())


def _ids(tree: StepTree) -> set[str]:
    return {step.step_id for step in tree.steps}


def test_the_read_holds_the_ends_of_each_parent_and_counts_of_all(big_run: str) -> None:
    """First and last HALF roots and children of ``loop``, c0's children: nothing else, and
    the counts, indexes and total of the whole run."""
    tree = _read(big_run)
    roots = {"loop", *(f"r{i}" for i in [*range(HALF - 1), *range(ROOTS - HALF, ROOTS)])}
    kids = {f"c{i}" for i in [*range(HALF), *range(LOOP - HALF, LOOP)]}
    grandchildren = {f"g{i}" for i in range(GRANDCHILDREN)}
    assert len(tree.steps) == 2 * CHILD_CAP + GRANDCHILDREN
    assert _ids(tree) == roots | kids | grandchildren  # not c2500's child: its parent is hidden
    assert tree.total == TOTAL
    assert (tree.children[""], tree.children["loop"], tree.children["c0"]) == (
        ROOTS + 1,
        LOOP,
        GRANDCHILDREN,
    )
    assert (tree.position["loop"], tree.position["r0"], tree.position[f"c{LOOP - 1}"]) == (
        0,
        1,
        LOOP - 1,
    )
    assert tree.under == {"loop": LOOP + GRANDCHILDREN + 1, "c0": GRANDCHILDREN}
    assert (tree.first_start_ns, tree.last_end_ns) == (T0 - 1, T0 + max(ROOTS, LOOP))


def test_all_reads_every_child_of_that_parent(big_run: str) -> None:
    """``all=loop`` reads its LOOP children (and c2500's child, now placed), roots capped."""
    tree = _read(big_run, show_all=["loop"])
    assert {f"c{i}" for i in range(LOOP)} | {"deep"} <= _ids(tree)
    assert len(tree.steps) == CHILD_CAP + LOOP + GRANDCHILDREN + 1


def test_the_revealed_step_and_its_ancestors_are_read(big_run: str) -> None:
    """A step in the gap, selected, is read with its parents: one more row than the capped read
    plus its chain."""
    tree = _read(big_run, reveal="loop.c2500.deep")
    assert {"deep", "c2500", "loop"} <= _ids(tree)
    assert len(tree.steps) == 2 * CHILD_CAP + GRANDCHILDREN + 2


def _rows(html: str) -> list[str]:
    return re.findall(r'<rect class="bar \w+(?: growing)?" data-key="([^"]+)"', html)


def test_the_page_shows_the_ends_the_gaps_and_the_total(client: Client, big_run: str) -> None:
    """Opened, ``loop`` shows its first and last HALF children around a gap of the others; the
    roots have their gap; the total counts every step."""
    page = client.get("/runs/big", params={"expand": "loop"})
    assert page.status_code == 200
    rows = _rows(page.text)
    kids = [f"loop.c___{i}" for i in [*range(HALF), *range(LOOP - HALF, LOOP)]]
    roots = [f"r___{i}" for i in [*range(HALF - 1), *range(ROOTS - HALF, ROOTS)]]
    assert rows == ["loop", *kids[:HALF], *kids[HALF:], *roots]
    assert f"… {LOOP - CHILD_CAP:,} more steps: show all" in page.text
    assert f"… {ROOTS + 1 - CHILD_CAP:,} more steps: show all" in page.text
    assert f"{TOTAL:,} steps" in page.text


def test_a_collapsed_parent_counts_every_step_under_it(client: Client, big_run: str) -> None:
    """Closed, ``loop`` says how many steps are under it (all of them, not the ones read)."""
    page = client.get("/runs/big", params={"collapse": "loop"})
    assert f'<span class="muted">+{LOOP + GRANDCHILDREN + 1:,}</span>' in page.text


def test_the_page_with_all_shows_every_child(client: Client, big_run: str) -> None:
    """``all=loop`` (the gap row's link) draws all LOOP children of ``loop``."""
    page = client.get("/runs/big", params={"expand": "loop", "all": "loop"})
    rows = _rows(page.text)
    assert [r for r in rows if r.startswith("loop.c___")] == [f"loop.c___{i}" for i in range(LOOP)]

"""The comparison page, ``/compare?a=RUN&b=RUN``: two runs' step trees aligned by key.

Rows come from :func:`~pipelens_server._read._compare.compare_runs` (only the rows shown are
read); each has both durations and the delta drawn as a small bar, scaled to the largest delta
shown. A step's panel (``step=KEY``, asked by htmx for ``compare_panel``) puts its inputs,
records and result of both runs side by side as a line diff, with its LLM tokens and cost.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Request, Response, get
from litestar.exceptions import HTTPException
from litestar.params import FromQuery, QueryParameter
from litestar.response import Redirect

from pipelens_server._db._lifespan import PoolDep
from pipelens_server._pages._chart import format_ms
from pipelens_server._pages._templating import (
    base_context,
    is_htmx,
    pretty_json,
    render,
    run_path,
    short_id,
)
from pipelens_server._read._compare import CompareRow, View, compare_runs
from pipelens_server._read._llm import step_llm
from pipelens_server._read._run import step_detail
from pipelens_server._read._shapes import StepDetail

#: The most rows the page shows (the API's ``limit``); a note counts the others.
PAGE_ROWS = 500
#: Width (percent of its cell) of the largest delta's bar.
_BAR = 100
_VALUES = (("inputs", "Inputs"), ("records", "Records"), ("result", "Result"))


def _diff(a: str | None, b: str | None) -> list[tuple[str, str]]:
    """The line diff of two captured values (indented JSON): (``same``/``del``/``add``, line)."""
    lines_a, lines_b = pretty_json(a).splitlines(), pretty_json(b).splitlines()
    out: list[tuple[str, str]] = []
    for line in difflib.ndiff(lines_a, lines_b):
        sign, text = line[:1], line[2:]
        if sign != "?":
            out.append(({"-": "del", "+": "add"}.get(sign, "same"), text))
    return out


def signed_ms(ns: int | None) -> str:
    """A delta in milliseconds with its sign (``+12 ms``, ``-3 ms``); a dash when unknown."""
    if ns is None:
        return "\N{EM DASH}"
    return ("+" if ns >= 0 else "\N{MINUS SIGN}") + format_ms(abs(ns))


def _compare_url(a: str, b: str, view: str, expand: list[str], collapse: list[str]) -> str:
    params = [("a", a), ("b", b)] + ([("view", view)] if view != "changed" else [])
    params += [("expand", k) for k in expand] + [("collapse", k) for k in collapse]
    return f"/compare?{urlencode(params)}"


@get("/compare")
async def compare_page(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    a: FromQuery[str] = "",
    b: FromQuery[str] = "",
    run: Annotated[
        list[str] | None, QueryParameter(description="two run ids (the runs page's pick)")
    ] = None,
    view: FromQuery[View] = "changed",
    expand: FromQuery[list[str] | None] = None,
    collapse: FromQuery[list[str] | None] = None,
    step: FromQuery[str | None] = None,
) -> Response[str] | Redirect:
    """Run ``b`` against the baseline ``a``: the changed steps (``view=all``: every step), each
    with both durations, the delta and status changes; run time, token and cost deltas."""
    a, b = a.strip(), b.strip()
    if run and not (a or b):
        if len(run) != 2:  # a comparison is of two runs
            raise HTTPException(status_code=400, detail="choose two runs to compare (run=A&run=B)")
        return Redirect(_compare_url(run[1], run[0], view, [], []))
    if not a or not b:
        missing = " and ".join(name for name, value in (("a", a), ("b", b)) if not value)
        raise HTTPException(
            status_code=400,
            detail=f"give both runs to compare: /compare?a=RUN&b=RUN (missing: {missing})",
        )
    if is_htmx(request) and request.headers.get("hx-target") == "compare_panel":
        return render(
            request, "compare.html", await _panel(pool, request, a, b, step), block="panel"
        )
    opened, closed = expand or [], collapse or []
    comparison = await compare_runs(
        pool, a, b, view=view, expand=opened, collapse=closed, limit=PAGE_ROWS
    )
    largest = max((abs(r.delta_ns or 0) for r in comparison.rows), default=0) or 1

    def toggle_url(row: CompareRow) -> str:
        """This view with ``row``'s subtree closed if open, else opened."""
        if row.open:
            return _compare_url(a, b, view, [k for k in opened if k != row.key], [*closed, row.key])
        return _compare_url(a, b, view, [*opened, row.key], [k for k in closed if k != row.key])

    title = f"Compare {short_id(a)} with {short_id(b)}"
    context = (
        base_context(request, title)
        | {
            "c": comparison,
            "a_id": a,
            "b_id": b,
            "view": view,
            "bar_width": lambda row: round(_BAR * abs(row.delta_ns or 0) / largest, 1),
            "toggle_url": toggle_url,
            "view_url": lambda other: _compare_url(a, b, other, opened, closed),
            "self_url": _compare_url(a, b, view, opened, closed),
            "run_url": run_path,
            "signed_ms": signed_ms,
        }
        | await _panel(pool, request, a, b, step)
    )
    return render(request, "compare.html", context)


async def _panel(
    pool: PoolDep, request: Request[Any, Any, Any], a: str, b: str, step: str | None
) -> dict[str, Any]:
    """The step panel's context: the step in both runs, its values' diffs, its LLM calls."""
    context: dict[str, Any] = base_context(request, "Compare") | {"step_key": step, "panel": None}
    if not step:
        return context
    side_a, side_b = await step_detail(pool, a, step), await step_detail(pool, b, step)
    context["panel"] = {
        "a": side_a,
        "b": side_b,
        "diffs": [
            (title, _diff(_value(side_a, name), _value(side_b, name))) for name, title in _VALUES
        ],
        "llm_a": await step_llm(pool, a, step) if side_a else None,
        "llm_b": await step_llm(pool, b, step) if side_b else None,
    }
    return context


def _value(detail: StepDetail | None, name: str) -> str | None:
    return None if detail is None else getattr(detail, name)


route_handlers = [compare_page]

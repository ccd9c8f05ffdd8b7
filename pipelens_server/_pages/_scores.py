"""The run page's score form: ``POST /runs/{run_id}/scores`` (CSRF token, as every form).

htmx posts it and swaps the answer, the run's scores with the form, into ``#run_scores``; a bad
value is shown in the form (htmx swaps only a success, so that answer is a 200; without htmx it
is a 400 page). Without htmx a saved score redirects back to the run page.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post
from litestar.params import FromPath
from litestar.response import Redirect

from pipelens_server._db._lifespan import PoolDep, SettingsDep
from pipelens_server._errors import InvalidBatchError
from pipelens_server._ingest._scores import ScoreIn, form_value, score_rows
from pipelens_server._ingest._store import store
from pipelens_server._pages._csrf import check_form
from pipelens_server._pages._templating import base_context, is_htmx, render, run_path
from pipelens_server._read._scores import ensure_run, run_scores


@post("/runs/{run_id:str}/scores", status_code=200)
async def add_score(
    request: Request[Any, Any, Any], pool: PoolDep, settings: SettingsDep, run_id: FromPath[str]
) -> Response[Any]:
    """Give the run a score from its page's form: a name, a value (a number, ``true`` or
    ``false``, or a category) and an optional comment."""
    form = await request.form()
    check_form(request, form)
    await ensure_run(pool, run_id)
    given = {field: str(form.get(field) or "").strip() for field in ("name", "value", "comment")}
    error: str | None = None
    try:
        body = ScoreIn(
            name=given["name"], value=form_value(given["value"]), comment=given["comment"] or None
        )
        rows, _ = score_rows(run_id, body, "ui")
        await store(pool, rows, timeout=settings.pool_timeout_s)
    except InvalidBatchError as exc:
        error = str(exc).removeprefix("invalid score: ")
    if error is None and not is_htmx(request):
        return Redirect(f"{run_path(run_id)}#run_scores", status_code=303)
    context = base_context(request, f"Scores of run {run_id}") | {
        "run_id": run_id,
        "scores": await run_scores(pool, run_id),
        "score_error": error,
        "score_given": given if error else {},
        "score_url": f"{run_path(run_id)}/scores",
    }
    if is_htmx(request):
        return render(request, "run.html", context, block="run_scores")
    return render(request, "score_form.html", context, status_code=400)


route_handlers = [add_score]

"""The admin pages: import files (``/import``) and retention settings (``/settings``).

Both are plain HTML forms (no htmx: a file upload gains nothing from a fragment). The import
reads the multipart body under the server's body limit (``Settings.max_body_bytes``: all files
together) and imports each file in its own transaction (``_ingest._import.import_file``), so one
bad file neither stops nor spoils the others.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.params import FromQuery
from litestar.response import Redirect

from pipelens_server._db._lifespan import PoolDep, SettingsDep
from pipelens_server._db._retention import (
    MAX_DAYS,
    MIN_DAYS,
    InvalidRetentionError,
    default_days,
    parse_days,
    pipeline_retentions,
    set_default_days,
    set_pipeline_days,
)
from pipelens_server._ingest._import import FileResult, import_file
from pipelens_server._ingest._store import LimiterDep
from pipelens_server._pages._csrf import check_form
from pipelens_server._pages._templating import base_context, render, run_path

_NO_FILES = "Choose at least one file to import."


def _import_page(
    request: Request[Any, Any, Any],
    *,
    results: list[FileResult] | None = None,
    error: str | None = None,
    run_id: str = "",
    pipeline: str = "",
    status_code: int = 200,
) -> Response[str]:
    settings = request.app.state.settings
    context = base_context(request, "Import") | {
        "results": results,
        "error": error,
        "run_id": run_id,
        "pipeline": pipeline,
        "max_mb": settings.max_body_bytes / 1024 / 1024,
        "run_url": run_path,
    }
    return render(request, "import.html", context, status_code=status_code)


@get("/import")
async def import_form(request: Request[Any, Any, Any]) -> Response[str]:
    """The upload form."""
    return _import_page(request)


@post("/import", status_code=200)
async def import_files(
    request: Request[Any, Any, Any], pool: PoolDep, limiter: LimiterDep, settings: SettingsDep
) -> Response[str]:
    """Import every uploaded file; answer one result per file (runs and steps, or the error)."""
    try:
        form = await request.form()
    except RequestEntityTooLarge:
        limit = settings.max_body_bytes
        return _import_page(
            request,
            error=f"The upload is larger than the server's limit of {limit} bytes (all files "
            "together): import fewer or smaller files at a time. Nothing was imported.",
            status_code=413,
        )
    check_form(request, form)
    run_id = str(form.get("run_id") or "")
    pipeline = str(form.get("pipeline") or "")
    uploads = [f for f in form.getall("files", []) if isinstance(f, UploadFile) and f.filename]
    if not uploads:
        return _import_page(request, error=_NO_FILES, run_id=run_id, pipeline=pipeline)
    results = []
    for upload in uploads:
        data = await upload.read()
        await upload.close()
        results.append(
            await import_file(
                pool,
                limiter,
                upload.filename,
                data,
                run_id=run_id,
                pipeline=pipeline,
                timeout=settings.pool_timeout_s,
            )
        )
    return _import_page(request, results=results, run_id=run_id, pipeline=pipeline)


async def _settings_page(
    request: Request[Any, Any, Any],
    pool: PoolDep,
    *,
    saved: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response[str]:
    context = base_context(request, "Settings") | {
        "default_days": await default_days(pool),
        "pipelines": await pipeline_retentions(pool),
        "min_days": MIN_DAYS,
        "max_days": MAX_DAYS,
        "saved": saved,
        "error": error,
    }
    return render(request, "settings.html", context, status_code=status_code)


@get("/settings")
async def settings_page(
    request: Request[Any, Any, Any], pool: PoolDep, saved: FromQuery[str | None] = None
) -> Response[str]:
    """The retention of every pipeline, and the server-wide default, each with its form."""
    return await _settings_page(request, pool, saved=saved)


@post("/settings", status_code=303)
async def save_settings(request: Request[Any, Any, Any], pool: PoolDep) -> Response[str]:
    """Save one retention: the default (no ``pipeline``) or a pipeline's (empty ``days``: back to
    the default). A bad value shows the page again with the error, changing nothing."""
    form = await request.form()
    check_form(request, form)
    pipeline = str(form.get("pipeline") or "")
    days = str(form.get("days") or "")
    try:
        if not pipeline:
            await set_default_days(pool, parse_days(days, "the server-wide default"))
        elif days.strip():
            await set_pipeline_days(pool, pipeline, parse_days(days, repr(pipeline)))
        else:
            await set_pipeline_days(pool, pipeline, None)
    except InvalidRetentionError as exc:
        message = str(exc)
        return await _settings_page(
            request, pool, error=message[:1].upper() + message[1:] + ".", status_code=400
        )
    saved = pipeline or "the server-wide default"
    return Redirect(f"/settings?saved={quote(saved, safe='')}", status_code=303)


route_handlers = [import_form, import_files, settings_page, save_settings]

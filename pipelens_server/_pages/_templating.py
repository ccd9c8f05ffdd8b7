"""Templates and static files of the dashboard: where they are, how values are shown, and how a
page or its htmx fragment is rendered from the same template.

An htmx request (``HX-Request``) gets one block of the page's template instead of the whole page:
the block named like the element it targets (``HX-Target``) when the template allows that, else
``content``. A history restore (``HX-History-Restore-Request``) gets the whole page.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment
from litestar import Request, Response
from litestar.enums import MediaType
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template import TemplateConfig

from pipelens_server._pages import _csrf
from pipelens_server._pages._chart import format_ms, format_usd
from pipelens_server._settings import Settings
from pipelens_server._timerange import zone_name

#: The vendored htmx (``static/``); the version is in the name so browsers may cache it forever.
HTMX_FILE = "htmx-2.0.11.min.js"

#: The ``pipelens_server`` package (``static/`` is found from it).
_PACKAGE_DIR = Path(__file__).resolve().parent.parent
_TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def static_dir() -> Path:
    """The ``static/`` folder: inside the package in a wheel, beside it in a source checkout."""
    # The wheel force-includes the top-level ``static/`` as ``pipelens_server/static``; an
    # editable install imports the package from the checkout, where it is a sibling.
    for candidate in (_PACKAGE_DIR / "static", _PACKAGE_DIR.parent / "static"):
        if (candidate / HTMX_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"the dashboard's static files ({HTMX_FILE}) are missing from {_PACKAGE_DIR / 'static'} "
        f"and {_PACKAGE_DIR.parent / 'static'}: reinstall pipelens[server]"
    )


def zone_of(request: Request[Any, Any, Any]) -> tzinfo:
    """The browser's time zone (``tz`` cookie set by ``static/pipelens.js``), else UTC."""
    name = request.cookies.get("tz")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return UTC


def format_time(ns: int | None, zone: tzinfo) -> str:
    """``2026-11-26 09:15:02.123 CET``: nanoseconds since the epoch, in ``zone``, zone named."""
    if ns is None:
        return "—"
    moment = datetime.fromtimestamp(ns / 1e9, zone)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d} {moment:%Z}"


def format_score(value: bool | float | str) -> str:
    """A score's value for people: ``true``/``false``, a number to 3 digits, a category as is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3g}"
    return value


def pretty_json(text: str | None) -> str:
    """Stored JSON text indented for reading (the template escapes it)."""
    if text is None:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def _configure(engine: JinjaTemplateEngine) -> None:
    env: Environment = engine.engine
    env.filters["ms"] = format_ms
    env.filters["score_value"] = format_score
    env.filters["usd"] = format_usd
    env.filters["pretty_json"] = pretty_json
    env.globals["htmx_file"] = HTMX_FILE
    env.trim_blocks = True
    env.lstrip_blocks = True


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja templates from ``pipelens_server/_pages/templates`` (autoescaped: Litestar's
    default)."""
    return TemplateConfig(
        directory=_TEMPLATES_DIR,
        engine=JinjaTemplateEngine,
        engine_callback=_configure,
    )


#: The navigation: each item's path and label, and the path prefixes of the pages it leads to
#: (a run and a pipeline's pages are reached from the pipelines).
NAV: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("/", "Pipelines", ("/pipelines/", "/runs/")),
    ("/import", "Import", ()),
    ("/settings", "Settings", ()),
    ("/llm", "LLM usage", ()),
)


def nav_current(path: str) -> str | None:
    """The navigation item (its path) that the page at ``path`` belongs to, if any."""
    for href, _, prefixes in NAV:
        if path == href or path.startswith(prefixes or (f"{href}/",)):
            return href
    return None


def short_id(run_id: str, keep: int = 8) -> str:
    """A run id short enough for a tab's title: its first ``keep`` characters and an ellipsis."""
    return run_id if len(run_id) <= keep + 1 else f"{run_id[:keep]}…"


def base_context(request: Request[Any, Any, Any], title: str) -> dict[str, Any]:
    """What ``base.html`` needs on every page: the title, the navigation and which item is the
    current one, the zone, the time format, logout."""
    zone = zone_of(request)
    settings: Settings = request.app.state.settings
    return {
        "title": title,
        "nav": NAV,
        "nav_current": nav_current(request.url.path),
        "zone": zone_name(zone),
        "tz": zone,
        "fmt": format_time,
        "can_log_out": settings.token is not None,
    }


def page_url(path: str, **params: str | None) -> str:
    """``path`` with the query parameters that have a value."""
    query = urlencode({k: v for k, v in params.items() if v})
    return f"{path}?{query}" if query else path


def run_path(run_id: str) -> str:
    """The run page of ``run_id``."""
    return f"/runs/{quote(run_id, safe='')}"


def pipeline_path(name: str, page: str) -> str:
    """A page of the pipeline ``name``: its ``runs`` or its ``steps``."""
    return f"/pipelines/{quote(name, safe='')}/{page}"


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    """Whether htmx sent the request and wants a fragment (not a history restore)."""
    return (
        request.headers.get("hx-request") == "true"
        and request.headers.get("hx-history-restore-request") != "true"
    )


def render(
    request: Request[Any, Any, Any],
    template_name: str,
    context: dict[str, Any],
    *,
    fragments: tuple[str, ...] = (),
    block: str | None = None,
    status_code: int = 200,
) -> Response[str]:
    """The page ``template_name``, or for htmx one of its blocks.

    Args:
        request: The request being answered.
        template_name: A template that extends ``base.html`` and fills ``content``.
        context: The template's variables.
        fragments: Blocks an htmx request may target by element id besides ``content``.
        block: Render this block whatever the request (a fragment-only endpoint).
        status_code: The answer's status (286 tells htmx to stop polling).
    """
    engine = request.app.template_engine
    assert isinstance(engine, JinjaTemplateEngine)  # create_app configures Jinja
    template = engine.engine.get_template(template_name)
    context = {"csrf_token": _csrf.form_token(request), **context}
    if block is None and is_htmx(request):
        target = request.headers.get("hx-target", "")
        block = target if target in fragments else "content"
    if block is None:
        html = template.render(context)
    else:
        html = "".join(template.blocks[block](template.new_context(context)))
    # The same URL answers a page or a fragment: caches must keep them apart.
    headers = {"Vary": "HX-Request, HX-Target", "Cache-Control": "no-store"}
    response = Response(html, media_type=MediaType.HTML, status_code=status_code, headers=headers)
    _csrf.set_cookie(request, response)
    return response

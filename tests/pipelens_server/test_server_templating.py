"""Where the static files are found, and how times and durations are shown."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pipelens_server._pages import _templating
from pipelens_server._pages._chart import format_ms
from pipelens_server._pages._templating import HTMX_FILE, format_time, static_dir

T0 = 1_700_000_000_123_456_789  # 2023-11-14 22:13:20.123 UTC


def _layout(root: Path, static: Path) -> Path:
    package = root / "pipelens_server"
    package.mkdir(parents=True)
    static.mkdir(parents=True, exist_ok=True)
    (static / HTMX_FILE).write_text("htmx")
    return package


@pytest.mark.parametrize(
    "static_in", ["pipelens_server/static", "static"], ids=["installed-wheel", "checkout"]
)
def test_static_files_are_found_in_the_wheel_and_the_checkout_layouts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, static_in: str
) -> None:
    """Inside the package (a wheel) or beside it (a source checkout)."""
    package = _layout(tmp_path, tmp_path / static_in)
    monkeypatch.setattr(_templating, "_PACKAGE_DIR", package)
    assert static_dir() == tmp_path / static_in


def test_missing_static_files_are_an_error_naming_where_they_were_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No silent page without htmx: the error names both places and the fix."""
    monkeypatch.setattr(_templating, "_PACKAGE_DIR", tmp_path / "pipelens_server")
    with pytest.raises(FileNotFoundError, match="reinstall") as caught:
        static_dir()
    assert str(tmp_path / "static") in str(caught.value)


def test_the_checkout_has_the_pinned_htmx() -> None:
    """The repository's static/ holds the htmx version the pages ask for."""
    assert 'version:"2.0.11"' in (static_dir() / HTMX_FILE).read_text()


def test_times_name_their_zone() -> None:
    """A time is shown to the millisecond with its zone's abbreviation."""
    assert format_time(T0, UTC) == "2023-11-14 22:13:20.123 UTC"
    assert format_time(T0, ZoneInfo("Asia/Tokyo")) == "2023-11-15 07:13:20.123 JST"
    assert format_time(None, UTC) == "—"


@pytest.mark.parametrize(
    ("ns", "shown"),
    [
        (None, "—"),
        (0, "0.0 ms"),
        (4_200, "0.0042 ms"),
        (123_456, "0.123 ms"),
        (1_000_000, "1.0 ms"),
        (1_234_567_890, "1,234.6 ms"),
    ],
)
def test_durations_are_shown_in_milliseconds(ns: int | None, shown: str) -> None:
    """The UI's unit is the millisecond; below one, three significant digits."""
    assert format_ms(ns) == shown

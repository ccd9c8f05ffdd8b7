"""The prices the server reads costs with: the operator's own (``pipelens serve --prices``) over
the shared lookup of :mod:`pipelens._pricing` (genai-prices, then prices.json).

One table per server process, read by ``create_app`` from the file its settings name: costs
are priced deep inside the read functions (a usage row, a call's view), which a request's pages
and API reach through many paths, and a process serves one settings.
"""

from __future__ import annotations

from pathlib import Path

from pipelens import _pricing

_overrides: dict[str, _pricing.Price] = {}
_file: list[Path | None] = [None]


def use(file: Path | None) -> None:
    """Price with the prices of ``file`` first from now on (``None``: the shared lookup only).

    Raises:
        ValueError: naming the file, and the model and field at fault; nothing changes then.
    """
    prices = {} if file is None else _pricing.read_prices_file(file, f"prices file {str(file)!r}")
    _overrides.clear()
    _overrides.update(prices)
    _file[0] = file


def price_of(provider: str | None, model: str | None, at_ns: int | None) -> _pricing.Price | None:
    """The price of ``model`` on the day of ``at_ns``: the operator's, else the shared lookup's."""
    return _pricing.price_of(provider, model, at_ns, _overrides)


def source() -> str:
    """Where prices come from, for the pages and the API."""
    shared = _pricing.source()
    file = _file[0]
    return shared if file is None else f"your prices file {file.name}, then {shared}"

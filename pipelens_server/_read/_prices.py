"""The prices the server reads costs with: the operator's own (``pipelens serve --prices``) over
the shared lookup of :mod:`pipelens._pricing` (genai-prices, then prices.json).

Each app has its own :class:`Prices`, made by ``create_app`` from the file its settings name.
Costs are priced deep inside the read functions (a usage row, a call's view), which a request's
pages and API reach through many paths, so the app's prices are not passed down each of them:
the app makes them current for each request it serves (:func:`using`, a context variable), and
two apps in one process (tests, an embedding program) each price with their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from pipelens import _pricing


class Prices:
    """One app's prices: the operator's file first (if any), then the shared lookup."""

    __slots__ = ("file", "overrides")

    def __init__(self, file: Path | None = None) -> None:
        """Read ``file`` (``None``: the shared lookup only).

        Raises:
            ValueError: naming the file, and the model and field at fault.
        """
        self.overrides: dict[str, _pricing.Price] = (
            {} if file is None else _pricing.read_prices_file(file, f"prices file {str(file)!r}")
        )
        self.file = file

    def price_of(
        self, provider: str | None, model: str | None, at_ns: int | None
    ) -> _pricing.Price | None:
        """The price of ``model`` on the day of ``at_ns``: the operator's, else the shared
        lookup's."""
        return _pricing.price_of(provider, model, at_ns, self.overrides)

    def source(self) -> str:
        """Where prices come from, for the pages and the API."""
        shared = _pricing.source()
        file = self.file
        return shared if file is None else f"your prices file {file.name}, then {shared}"


#: Outside any app's request (a script reading the database): the shared lookup alone.
_SHARED = Prices()
_current: ContextVar[Prices] = ContextVar("pipelens_server_prices", default=_SHARED)


@contextmanager
def using(prices: Prices) -> Iterator[None]:
    """Price with ``prices`` inside the block (an app's request)."""
    token = _current.set(prices)
    try:
        yield
    finally:
        _current.reset(token)


def price_of(provider: str | None, model: str | None, at_ns: int | None) -> _pricing.Price | None:
    """The price of ``model`` on the day of ``at_ns`` with the current app's prices."""
    return _current.get().price_of(provider, model, at_ns)


def source() -> str:
    """Where the current app's prices come from, for the pages and the API."""
    return _current.get().source()

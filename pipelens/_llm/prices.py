"""LLM prices on the client: the user's own (``configure(prices=...)``) over the shared lookup.

The lookup itself (genai-prices when installed, then the shipped ``prices.json``) is
:mod:`pipelens._pricing`, which the server uses too. The user's prices win over both: a dict or
a JSON file of ``{model: {input, output, cached_input, cache_write_input}}`` in USD per million
tokens. A model no one prices has an unknown cost (``None``), never zero. Tokens are what
PipeLens stores; a cost is derived from them, so the server recomputes it when it reads them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from pipelens import _pricing
from pipelens._core.errors import ConfigurationError
from pipelens._core.settings import settings
from pipelens._pricing import Price, PriceTable, shipped_prices

__all__ = ["Price", "PriceTable", "cost_usd", "load_prices", "price_for", "shipped_prices"]


def load_prices(value: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Price]:
    """Prices from a ``{model: {input, cached_input, output}}`` dict, or a JSON file's path.

    A file may hold either that mapping or a whole table (``{"models": {...}, "date": ...}``).

    Raises:
        ConfigurationError: naming the file, model or field at fault.
    """
    if isinstance(value, str | os.PathLike):
        read = functools.partial(_pricing.read_prices_file, value)
        where = f"configure(prices={os.fspath(value)!r})"
    elif isinstance(value, Mapping):
        read = functools.partial(_pricing.read_prices, value)
        where = "configure(prices=...)"
    else:
        raise ConfigurationError(
            f"configure(prices={value!r}): expected a dict {{model: {{'input': ..., "
            "'output': ...}} in USD per million tokens, or the path of a JSON file"
        )
    try:
        return read(where)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def price_for(model: str | None, provider: str | None = None) -> Price | None:
    """The price of ``model`` (the user's first, then :func:`pipelens._pricing.price_of`), or
    ``None``."""
    return _pricing.price_of(provider, model, overrides=settings.prices)


def cost_usd(
    model: str | None,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    provider: str | None = None,
) -> float | None:
    """USD cost of one call, or ``None`` when the model's price is unknown.

    ``input_tokens`` includes ``cached_tokens`` and ``cache_write_tokens``; reasoning tokens are
    part of ``output_tokens``.
    """
    return _pricing.cost_usd(
        price_for(model, provider), input_tokens, output_tokens, cached_tokens, cache_write_tokens
    )

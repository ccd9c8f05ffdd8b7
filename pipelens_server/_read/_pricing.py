"""LLM prices on the server: the client's shipped price table, read as a data file.

The server imports nothing of the client but ``pipelens.events``, so it reads ``prices.json``
beside it and mirrors the lookup of ``pipelens/_prices.py``: a dated model name
(``gpt-4o-2024-08-06``) is priced as its base model, cached input tokens at the cached price (the
input price when the table has none), and a model not in the table has an unknown cost (``None``),
never zero. Costs are computed when pages read tokens, so a corrected table fixes past runs too.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated

import msgspec

import pipelens.events

#: The same pattern as ``pipelens._prices._DATE_SUFFIX`` (a test keeps them equal).
DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")

_USD = Annotated[float, msgspec.Meta(ge=0)]


class Price(msgspec.Struct, kw_only=True, frozen=True):
    """USD per million tokens for one model."""

    input: _USD = 0.0
    output: _USD = 0.0
    cached_input: _USD | None = None


class PriceTable(msgspec.Struct, kw_only=True, frozen=True):
    """The parts of ``prices.json`` the server uses."""

    models: dict[str, Price]
    date: str | None = None


def prices_file() -> Path:
    """The client's shipped price table."""
    return Path(pipelens.events.__file__).parent / "prices.json"


@functools.cache
def price_table() -> PriceTable:
    """The shipped price table (read once per process)."""
    return msgspec.json.decode(prices_file().read_bytes(), type=PriceTable)


def price_for(model: str | None) -> Price | None:
    """The price of ``model`` or of its undated base name; ``None`` when unknown."""
    if not model:
        return None
    models = price_table().models
    if model in models:
        return models[model]
    return models.get(DATE_SUFFIX.sub("", model))


def cost_usd(
    model: str | None, input_tokens: int, output_tokens: int, cached_tokens: int = 0
) -> float | None:
    """USD cost of tokens of ``model``, or ``None`` when its price is unknown.

    ``input_tokens`` includes ``cached_tokens``; ``output_tokens`` includes reasoning tokens.
    """
    price = price_for(model)
    if price is None:
        return None
    cached = min(max(cached_tokens, 0), input_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    total = (
        (input_tokens - cached) * price.input + cached * cached_price + output_tokens * price.output
    )
    return round(total / 1_000_000, 10)

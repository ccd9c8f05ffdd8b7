"""LLM prices: the table shipped in ``prices.json``, the user's overrides, and the cost of a call.

Prices are USD per million tokens, per model: ``input``, ``cached_input`` (``None``: the input
price) and ``output``. A model that is not in the table has an unknown cost (``None``), never zero.
Tokens are what PipeLens stores; a cost is derived from them, so the server can recompute it with
a corrected table.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from importlib import resources
from typing import Annotated, Any, TypeAlias

import msgspec

from pipelens._core.errors import ConfigurationError
from pipelens._core.settings import settings

USD: TypeAlias = Annotated[float, msgspec.Meta(ge=0)]

#: A dated model name (``gpt-4o-2024-08-06``, ``o3-mini-0131``) is priced as its base name.
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")


class Price(
    msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, forbid_unknown_fields=True
):
    """USD per million tokens for one model."""

    input: USD = 0.0
    output: USD = 0.0
    cached_input: USD | None = None


class PriceTable(msgspec.Struct, kw_only=True, frozen=True):
    """The shape of ``prices.json`` (and of a file given to ``configure(prices=...)``)."""

    models: dict[str, Price]
    date: str | None = None
    currency: str = "USD"
    unit: str = "per million tokens"
    note: str | None = None


@functools.cache
def shipped_prices() -> PriceTable:
    """The table shipped with PipeLens (read once)."""
    data = resources.files("pipelens").joinpath("prices.json").read_bytes()
    return msgspec.json.decode(data, type=PriceTable)


def load_prices(value: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Price]:
    """Prices from a ``{model: {input, cached_input, output}}`` dict, or a JSON file's path.

    A file may hold either that mapping or a whole table (``{"models": {...}, "date": ...}``).

    Raises:
        ConfigurationError: naming the file, model or field at fault.
    """
    where = "configure(prices=...)"
    if isinstance(value, str | os.PathLike):
        where = f"configure(prices={os.fspath(value)!r})"
        try:
            with open(value, "rb") as f:
                raw: Any = msgspec.json.decode(f.read())
        except OSError as exc:
            raise ConfigurationError(f"{where}: cannot read the file: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ConfigurationError(f"{where}: not JSON: {exc}") from None
    elif isinstance(value, Mapping):
        raw = value
    else:
        raise ConfigurationError(
            f"configure(prices={value!r}): expected a dict {{model: {{'input': ..., "
            "'output': ...}} in USD per million tokens, or the path of a JSON file"
        )
    if isinstance(raw, Mapping) and isinstance(raw.get("models"), Mapping):
        raw = raw["models"]
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where}: expected a JSON object of models, got {raw!r:.80}")
    prices = {}
    for model, entry in raw.items():
        try:
            prices[str(model)] = msgspec.convert(entry, type=Price)
        except msgspec.ValidationError as exc:
            raise ConfigurationError(
                f"{where}: model {model!r}: {exc}; each model maps to {{'input': USD, "
                "'output': USD, 'cached_input': USD}, per million tokens"
            ) from None
    return prices


def price_for(model: str | None) -> Price | None:
    """The price of ``model`` (the user's first, then the shipped table), or ``None``."""
    if not model:
        return None
    overrides: dict[str, Price] | None = settings.prices
    table = shipped_prices().models
    names = [model]
    base = _DATE_SUFFIX.sub("", model)
    if base != model:
        names.append(base)
    for name in names:
        if overrides is not None and name in overrides:
            return overrides[name]
        if name in table:
            return table[name]
    return None


def cost_usd(
    model: str | None, input_tokens: int, output_tokens: int, cached_tokens: int = 0
) -> float | None:
    """USD cost of a call, or ``None`` when the model's price is unknown.

    ``input_tokens`` includes ``cached_tokens`` (as OpenAI counts them); reasoning tokens are
    part of ``output_tokens``.
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

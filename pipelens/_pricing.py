"""LLM prices and the cost of tokens: one lookup for the client and the server alike (a leaf).

Where a price comes from, first to last:

1. **genai-prices** (the ``prices`` extra; the server's ``server`` extra brings it), when it is
   installed: its bundled data (tens of providers, thousands of models, prices dated by when
   they took effect, cache read and write prices, tiers above a number of input tokens) — read
   from the installed package, never fetched: PipeLens never starts its updater, so it works
   offline. A call is priced at the prices of its own day.
2. **prices.json** beside this module, the short table PipeLens ships (``date`` says when it
   was true): used when genai-prices is not installed or does not know the model.
3. Neither knows the model: the cost is unknown (``None``), never zero.

The user's own prices go before both: on the client ``configure(prices=...)``
(``pipelens._llm.prices``), on the server ``pipelens serve --prices FILE``; both are read by
:func:`read_prices` and handed to :func:`price_of` as its ``overrides``. Prices are USD per
million tokens. Token counts follow ``pipelens._core.llm_record``: ``input_tokens`` includes
``cached_tokens`` (read from a prompt cache) and ``cache_write_tokens`` (written to it);
``output_tokens`` includes reasoning.

This module imports nothing of PipeLens, so the server may import it beside ``events``;
genai-prices is imported on the first lookup (about 50 ms once ``openai`` is loaded), and each
(provider, model, day) is resolved once, so pricing 10,000 calls costs a dictionary lookup and a
few multiplications each.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
import time
from collections.abc import Mapping
from importlib import resources
from typing import Annotated, Any, TypeAlias

import msgspec

USD: TypeAlias = Annotated[float, msgspec.Meta(ge=0)]

#: A dated model name (``gpt-4o-2024-08-06``, ``o3-mini-0131``) is priced as its base name in
#: prices.json (genai-prices matches dated names itself).
DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")
_NS_PER_DAY = 86_400 * 1_000_000_000


class Price(
    msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, forbid_unknown_fields=True
):
    """USD per million tokens for one model; ``None`` cache prices are the input price.

    ``tiers``: ``(above, price)`` pairs, ascending — a call with more than ``above`` input tokens
    pays ``price`` for all its tokens (the long-context prices of Anthropic and Google).
    """

    input: USD = 0.0
    output: USD = 0.0
    cached_input: USD | None = None
    cache_write_input: USD | None = None
    tiers: tuple[tuple[int, Price], ...] = ()


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


def table_price(table: Mapping[str, Price], model: str) -> Price | None:
    """``model``'s price in ``table``, or its undated base name's."""
    found = table.get(model)
    if found is None:
        base = DATE_SUFFIX.sub("", model)
        found = table.get(base) if base != model else None
    return found


def read_prices(raw: Any, where: str) -> dict[str, Price]:
    """Prices of a ``{model: {input, output, cached_input, cache_write_input}}`` mapping, or of
    a whole table (``{"models": {...}, "date": ...}``): the user's (``configure(prices=...)``)
    and the server operator's (``pipelens serve --prices``).

    Raises:
        ValueError: naming ``where`` (the setting or file), the model and the field at fault.
    """
    if isinstance(raw, Mapping) and isinstance(raw.get("models"), Mapping):
        raw = raw["models"]
    if not isinstance(raw, Mapping):
        # ValueError, not TypeError: the callers report one kind of bad setting
        raise ValueError(f"{where}: expected a JSON object of models, got {raw!r:.80}")  # noqa: TRY004
    prices = {}
    for model, entry in raw.items():
        try:
            prices[str(model)] = msgspec.convert(entry, type=Price)
        except msgspec.ValidationError as exc:
            raise ValueError(
                f"{where}: model {model!r}: {exc}; each model maps to {{'input': USD, "
                "'output': USD, 'cached_input': USD}, per million tokens"
            ) from None
    return prices


def read_prices_file(path: str | os.PathLike[str], where: str) -> dict[str, Price]:
    """The prices of a JSON file, as :func:`read_prices` reads them.

    Raises:
        ValueError: the file cannot be read, is not JSON, or has a bad price (named).
    """
    try:
        with open(path, "rb") as f:
            raw: Any = msgspec.json.decode(f.read())
    except OSError as exc:
        raise ValueError(f"{where}: cannot read the file: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"{where}: not JSON: {exc}") from None
    return read_prices(raw, where)


def price_of(
    provider: str | None,
    model: str | None,
    at_ns: int | None = None,
    overrides: Mapping[str, Price] | None = None,
) -> Price | None:
    """The price of ``model`` served by ``provider`` on the day of ``at_ns`` (default: today):
    from ``overrides`` (the user's own prices) when they have it; ``None`` when it is unknown."""
    if not model:
        return None
    if overrides:
        mine = table_price(overrides, model)
        if mine is not None:
            return mine
    day = (time.time_ns() if at_ns is None else at_ns) // _NS_PER_DAY
    return _price_on(provider or None, model, day)


@functools.lru_cache(maxsize=4096)
def _price_on(provider: str | None, model: str, day: int) -> Price | None:
    found = _genai_price(provider, model, day)
    return found if found is not None else table_price(shipped_prices().models, model)


def source() -> str:
    """Where prices come from, for the pages and the API (``genai-prices 0.2.3``)."""
    version = _genai_version()
    if version is not None:
        return f"genai-prices {version}, then PipeLens prices.json of {shipped_prices().date}"
    return f"PipeLens prices.json of {shipped_prices().date}"


def cost_usd(
    price: Price | None,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    *,
    calls: int = 1,
) -> float | None:
    """USD cost of tokens at ``price``; ``None`` when the price is unknown.

    Tiers apply to one call (``calls=1``): a sum over several calls is priced at the base
    prices, since a tier is decided by each call's own input.
    """
    if price is None:
        return None
    if calls == 1 and price.tiers:
        for above, tier in reversed(price.tiers):
            if input_tokens > above:
                price = tier
                break
    # The common case of each bound tested first: a call is priced on the caller's thread.
    cached = cached_tokens
    if not 0 <= cached <= input_tokens:
        cached = min(max(cached, 0), input_tokens)
    written = cache_write_tokens
    if not 0 <= written <= input_tokens - cached:
        written = min(max(written, 0), input_tokens - cached)
    read_price = price.input if price.cached_input is None else price.cached_input
    write_price = price.input if price.cache_write_input is None else price.cache_write_input
    total = (
        (input_tokens - cached - written) * price.input
        + cached * read_price
        + written * write_price
        + output_tokens * price.output
    )
    return round(total / 1_000_000, 10)


# --- genai-prices ------------------------------------------------------------------------------

#: Our price fields and genai-prices' names for them.
_FIELDS = (
    ("input", "input_mtok"),
    ("output", "output_mtok"),
    ("cached_input", "cache_read_mtok"),
    ("cache_write_input", "cache_write_mtok"),
)


@functools.cache
def _genai_version() -> str | None:
    try:
        import genai_prices  # the optional `prices` extra
    except ImportError:
        return None
    return str(genai_prices.__version__)


def _genai_price(provider: str | None, model: str, day: int) -> Price | None:
    """genai-prices' price of ``model`` on ``day``; ``None``: not installed, or it does not know
    the model (under ``provider``, or under any provider)."""
    if _genai_version() is None:
        return None
    try:
        return _genai_lookup(provider, model, day)
    except Exception as exc:  # a genai-prices whose internals changed must not break a caller
        _warn_once(repr(exc))
        return None


@functools.cache
def _warn_once(error: str) -> None:
    logging.getLogger("pipelens").warning(
        "pipelens: genai-prices %s could not price a model (%s); prices.json is used instead",
        _genai_version(),
        error,
    )


def _genai_lookup(provider: str | None, model: str, day: int) -> Price | None:
    # Its snapshot's lookups, not calc_price: they are cached (a microsecond), and a call is then
    # priced by the arithmetic above rather than by calc_price's ~250 us of Decimal arithmetic.
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()
    info = None
    for provider_id in dict.fromkeys((provider, None)):
        try:
            info = snapshot.find_provider_model(model, None, provider_id, None)[1]
            break
        except LookupError:
            continue
    if info is None:
        return None
    when = dt.datetime.fromtimestamp(day * 86_400, dt.UTC) + dt.timedelta(hours=12)
    return _from_genai(info.get_prices(when))


def _from_genai(model_price: Any) -> Price | None:
    """Our :class:`Price` of a genai-prices ``ModelPrice``; ``None`` without an input price."""
    rates = {ours: getattr(model_price, theirs, None) for ours, theirs in _FIELDS}
    if rates["input"] is None:
        return None  # priced by something else than text tokens (images, requests)
    starts = sorted({tier.start for rate in rates.values() for tier in getattr(rate, "tiers", ())})

    def at(above: int | None) -> Price:
        values: dict[str, Any] = {}
        for name, rate in rates.items():
            if rate is None:
                continue
            tiers = getattr(rate, "tiers", None)
            if tiers is None:
                values[name] = float(rate)
                continue
            chosen = rate.base
            for tier in tiers:  # ascending: the last one at or below ``above`` applies
                if above is not None and tier.start <= above:
                    chosen = tier.price
            values[name] = float(chosen)
        return Price(**values)

    base = at(None)
    if not starts:
        return base
    return msgspec.structs.replace(base, tiers=tuple((above, at(above)) for above in starts))

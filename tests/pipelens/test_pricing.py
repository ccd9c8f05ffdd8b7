"""The shared price lookup: genai-prices when installed, the shipped prices.json without it."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import genai_prices
import pytest

from pipelens import _pricing

ROOT = Path(__file__).resolve().parents[2]


def _ns(day: str) -> int:
    return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()) * 10**9


@pytest.mark.parametrize(
    ("provider", "model", "tokens"),
    [
        ("openai", "gpt-4o-2024-08-06", (1000, 500, 200, 0)),
        ("openai", "gpt-4o-mini", (12_345, 678, 2_000, 0)),
        ("anthropic", "claude-sonnet-4-20250514", (1000, 100, 600, 300)),
        ("anthropic", "claude-sonnet-4-5", (250_000, 1000, 10_000, 5_000)),  # above its tier
        ("google", "gemini-2.5-pro", (300_000, 2000, 0, 0)),  # above its tier
        ("openai", "text-embedding-3-small", (6, 0, 0, 0)),
    ],
)
def test_cost_is_genai_prices_own_figure(
    provider: str, model: str, tokens: tuple[int, int, int, int]
) -> None:
    """Our arithmetic on the resolved price equals genai-prices' calc_price, tiers and cache
    reads and writes included."""
    inputs, outputs, cached, written = tokens
    usage = genai_prices.Usage(
        input_tokens=inputs,
        output_tokens=outputs,
        cache_read_tokens=cached,
        cache_write_tokens=written,
    )
    theirs = float(genai_prices.calc_price(usage, model, provider_id=provider).total_price)
    ours = _pricing.cost_usd(_pricing.price_of(provider, model), inputs, outputs, cached, written)
    assert pytest.approx(theirs, rel=1e-9) == ours


def test_a_call_is_priced_at_the_prices_of_its_day() -> None:
    """o3's price fell on 2025-06-10: a call before it costs the old price."""
    before = _pricing.price_of("openai", "o3", _ns("2025-06-01"))
    after = _pricing.price_of("openai", "o3", _ns("2025-06-20"))
    assert (before and before.input, after and after.input) == (10.0, 2.0)


def test_a_sum_of_calls_is_priced_at_the_base_prices() -> None:
    """A tier is decided per call: a sum of many calls is not pushed into it."""
    price = _pricing.price_of("anthropic", "claude-sonnet-4-5")
    assert pytest.approx(300_000 * 3.0 / 1e6) == _pricing.cost_usd(price, 300_000, 0, calls=3)


def test_unknown_model_and_provider() -> None:
    """A model no one prices is unknown; an unknown provider name still finds a known model."""
    assert _pricing.price_of("openai", "my-finetune") is None
    assert _pricing.cost_usd(None, 10, 10) is None
    assert _pricing.price_of("mycorp-gateway", "gpt-4o") == _pricing.price_of("openai", "gpt-4o")


def test_without_genai_prices_the_shipped_table_prices() -> None:
    """Without genai-prices importable, prices.json prices what it lists; the rest is unknown."""
    code = (
        "import sys; sys.modules['genai_prices'] = None\n"
        "from pipelens import _pricing\n"
        "print(_pricing.source())\n"
        "print(_pricing.price_of('openai', 'gpt-4o-2024-08-06'))\n"
        "print(_pricing.price_of('anthropic', 'claude-sonnet-4-5'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.splitlines()
    date = _pricing.shipped_prices().date
    assert out == [
        f"PipeLens prices.json of {date}",
        "Price(input=2.5, output=10.0, cached_input=1.25, cache_write_input=None, tiers=())",
        "None",
    ]

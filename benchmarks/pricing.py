"""Pricing LLM calls: what one cost costs on a read path that prices 10,000 calls.

Contenders, measured in this run: PipeLens's lookup (``pipelens._pricing``: genai-prices'
resolved price per provider, model and day, then plain arithmetic), genai-prices' own
``calc_price`` per call (the baseline), and the shipped ``prices.json`` alone. Also the one-time
costs: importing genai-prices (with ``openai`` already loaded, as in a patched program) and a
model's first lookup. Run with ``python -m benchmarks.pricing`` (``--quick``: fewer calls).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from benchmarks._machine import machine_lines
from pipelens import _pricing

#: (provider, model) of the calls priced, round-robin; one is unknown to everyone.
MODELS = [
    ("openai", "gpt-4o-2024-08-06"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("google", "gemini-2.5-pro"),
    ("openai", "my-finetune"),
]
TOKENS = (12_000, 800, 4_000, 1_000)


def _per_call_us(price_one: Callable[[str, str], object], calls: int, repeat: int) -> list[float]:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(calls):
            provider, model = MODELS[i % len(MODELS)]
            price_one(provider, model)
        runs.append((time.perf_counter() - t0) / calls * 1e6)
    return runs


def _ours(provider: str, model: str) -> object:
    return _pricing.cost_usd(_pricing.price_of(provider, model), *TOKENS)


def _table_only(provider: str, model: str) -> object:
    return _pricing.cost_usd(_pricing.table_price(_pricing.shipped_prices().models, model), *TOKENS)


def _genai_calc() -> Callable[[str, str], object]:
    import genai_prices

    usage = genai_prices.Usage(
        input_tokens=TOKENS[0],
        output_tokens=TOKENS[1],
        cache_read_tokens=TOKENS[2],
        cache_write_tokens=TOKENS[3],
    )

    def calc(provider: str, model: str) -> object:
        try:
            return genai_prices.calc_price(usage, model, provider_id=provider).total_price
        except LookupError:
            return None

    return calc


def _import_ms() -> float:
    code = (
        "import time, openai\n"
        "from pipelens import _pricing\n"
        "t = time.perf_counter()\n"
        "_pricing.price_of('openai', 'gpt-4o')\n"
        "print((time.perf_counter() - t) * 1e3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the machine, then each contender's µs per priced call and the one-time costs."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pricing", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000 calls, 3 repeats")
    args = parser.parse_args(argv)
    calls, repeat = (1_000, 3) if args.quick else (10_000, 5)
    first = _import_ms()
    _pricing.price_of("openai", "gpt-4o")  # genai-prices imported here, not in the figure below
    t0 = time.perf_counter()
    _pricing.price_of("anthropic", "claude-opus-4-1")
    first_lookup_ms = (time.perf_counter() - t0) * 1e3
    contenders = [
        ("genai-prices calc_price (baseline)", _genai_calc()),
        ("pipelens._pricing", _ours),
        ("prices.json alone", _table_only),
    ]
    rows = [(label, _per_call_us(fn, calls, repeat)) for label, fn in contenders]
    base = statistics.median(rows[0][1])
    print("\n".join(machine_lines(["genai-prices", "openai"])))
    print(f"\n{calls:,} calls priced over {len(MODELS)} models, {repeat} repeats")
    print(f"{'contender':<38}{'min µs':>10}{'median µs':>12}{'x baseline':>12}")
    for label, runs in rows:
        median = statistics.median(runs)
        print(f"{label:<38}{min(runs):>10.2f}{median:>12.2f}{median / base:>12.3f}")
    print(f"\nfirst price in a process (genai-prices imported, openai loaded): {first:.1f} ms")
    print(
        f"a model's first lookup (then cached per provider, model, day): {first_lookup_ms:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The overhead benchmark runs end to end; its figures are never checked (timings are noisy)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks._contenders import CONTENDERS, MEMORY_LABEL
from benchmarks.overhead import LLM_ROWS

ROOT = Path(__file__).resolve().parent.parent
# A table row: the label, then the min and median µs per call.
ROW = re.compile(r"^(?P<label>\S.*?)\s{2,}\d+\.\d+\s+\d+\.\d+\s")


def _benchmark(module: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks.<module> *args`` from the checkout, its output captured; the
    default ``timeout`` is for a run that refuses its options at once."""
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(340)
def test_quick_run_prints_every_row_and_exits_0() -> None:
    """``--quick`` exits 0 and prints a row per contender and per LLM row (the SDK calls timed by
    the interleaved method of ``llm_patches``) (the @step generator, the minimal-span
    floor and a run per call among them), the memory line, the floor line, the run's share in
    each step and the five targets (@step sync, async and generator overhead, the @step overhead
    with the OTLP export, RSS growth)."""
    # A process per contender (two dozen), the LLM SDKs slow to import: on a loaded shared
    # machine (load 15 on 2 cores) a quick run took three minutes.
    proc = _benchmark("overhead", "--quick", timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    rows = [m["label"] for m in map(ROW.match, lines) if m is not None]
    assert [*(c.label for c in CONTENDERS), *LLM_ROWS] == rows
    assert {
        "bare generator",
        "@step generator",
        "minimal-span floor",
        "@step sync, a run per call",
    } <= set(rows)
    memory = [line for line in lines if line.startswith(f"{MEMORY_LABEL}: ")]
    assert len(memory) == 1, proc.stdout
    assert "1,000 @step calls over 10 runs" in memory[0]
    targets = [m[1] for m in map(re.compile(r"^  (.*?): (?:met|missed) \(").match, lines) if m]
    assert targets == [
        "@step sync overhead <= 1.5 µs over a bare call",
        "@step async overhead <= 2.5 µs over a bare await",
        "@step generator overhead <= 3 µs over a bare generator",
        "@step + OTLP export <= 3 µs more than a bare call on the caller's thread",
        "RSS growth < 30 MB for 1,000 steps",
    ]
    floor = r"^  \(the minimal-span floor: -?\d+\.\d+ µs over a bare call\)$"
    assert re.search(floor, proc.stdout, re.M), proc.stdout
    root = (
        r"^  \(a run per call: -?\d+\.\d+ µs over a bare call, "
        r"-?\d+\.\d+ µs of each step in runs of 100\)$"
    )
    assert re.search(root, proc.stdout, re.M), proc.stdout


def test_bad_count_is_refused_with_its_option_named() -> None:
    """A non-positive count exits 2 with a message naming the option and the value."""
    proc = _benchmark("overhead", "--number", "0", timeout=300)
    assert proc.returncode == 2
    assert "--number 0: expected a positive integer" in proc.stderr


@pytest.mark.timeout(300)  # past the run's own 180 s limit, so that limit names the cause
def test_ingest_quick_run_prints_every_figure_and_exits_0() -> None:
    """``benchmarks.ingest --quick`` exits 0 and prints the end-to-end, latency, COPY and target
    lines, with every step of the end-to-end run stored."""
    proc = _benchmark("ingest", "--quick", timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"^  1 producers: 200 steps in [\d.]+ s = [\d,]+ steps/s", out, re.M), out
    assert re.search(r"^    CPU µs per step: producers [\d.]+, server [\d.]+", out, re.M), out
    assert re.search(r"3 sequential requests of 1,000 events .*: p50 [\d.]+ ms, p99 [\d.]+ ms", out)
    assert re.search(r"^raw COPY baseline .*: [\d,]+ step rows in [\d.]+ s", out, re.M), out
    assert re.search(r"end to end >= 100,000 steps/s: (met|missed) \(", out), out


def test_ingest_otlp_quick_run_prints_otlp_beside_msgpack_and_exits_0() -> None:
    """``benchmarks.ingest --otlp --quick`` exits 0 and prints msgpack's and OTLP's figures
    (every step stored), OTLP's ratio to msgpack and its target line."""
    proc = _benchmark("ingest", "--otlp", "--quick", timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"^ +msgpack: 3,000 steps in [\d.]+ s = [\d,]+ steps/s \(1\.00x", out, re.M)
    otlp = r"^  OTLP protobuf: 3,000 steps in [\d.]+ s = [\d,]+ steps/s \([\d.]+x msgpack"
    assert re.search(otlp, out, re.M), out
    assert re.search(r"OTLP >= 30,000 spans/s .*: (met|missed) \(", out), out


def test_ingest_bad_count_is_refused_with_its_option_named() -> None:
    """A non-positive producer count exits 2 with a message naming the option and the value."""
    proc = _benchmark("ingest", "--producers", "0")
    assert (proc.returncode, "--producers 0: expected a positive integer" in proc.stderr) == (
        2,
        True,
    )


def test_dashboard_quick_run_times_every_page_and_exits_0() -> None:
    """``benchmarks.dashboard --quick`` exits 0 and prints the data loaded at each of its two
    sizes, a row per page and API route with both times, the ratio, status and size, and a
    target line per page."""
    proc = _benchmark("dashboard", "--quick", timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    # 100 then 200 runs of 20 steps, three runs of 1 + 3 * (1 + 4) steps and one of 300 roots.
    loaded = r"\(loaded in [\d.]+ s, rolled up in [\d.]+ s\)"
    assert re.search(
        rf"^data: +104 runs, 2,348 steps over 30 days, 4 pipelines {loaded}", out, re.M
    )
    assert re.search(r"^data: +204 runs, 4,348 steps over 30 days, 4 pipelines", out, re.M), out
    rows = re.findall(r"^(\S.*?) {2,}[\d.]+ +[\d.]+ +[\d.]+x +(\d{3}) +[\d.]+$", out, re.M)
    labels = [label for label, _ in rows]
    assert labels[:16] == [
        "overview (24 hours)",
        "overview (30 days)",
        "runs page (30 days, first page)",
        "runs timeline (30 days, htmx)",
        "runs page (30 days, failed only)",
        "runs page (search q=step_1, every run)",
        "runs page (search q=input 12, 1 in 20)",
        "run page (big-run, finished)",
        "run page (big-run, every row open)",
        "run page (loop-run, finished)",
        "run page (loop-run, every row open)",
        "run page (wide-run, finished)",
        "run page (big-run-running, running)",
        "run strip (big-run, htmx)",
        "run strip (wide-run, htmx)",
        "poll of big-run-running (htmx run_live)",
    ]
    assert "step stats page (30 days)" in labels
    assert "API step stats (30 days)" in labels
    assert {status for _, status in rows} == {"200"}
    targets = re.findall(
        r"^  (.*?): (?:< \d+ ms: (?:met|missed).*; )?ratio [\d.]+ <= 1.5", out, re.M
    )
    assert targets == labels


def test_dashboard_bad_count_is_refused_with_its_option_named() -> None:
    """A non-positive run count exits 2 with a message naming the option and the value."""
    proc = _benchmark("dashboard", "--runs", "0,10")
    message = "--runs: 0,10: expected a positive integer"
    assert (proc.returncode, message in proc.stderr) == (2, True), proc.stderr


def test_processes_quick_run_prints_both_rows_and_loses_nothing() -> None:
    """``benchmarks.processes`` with a few tasks exits 0 (every event received) and prints the
    baseline and the carried row."""
    proc = _benchmark("processes", "--tasks", "5", "--repeat", "1", timeout=200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    labels = [line.split("  ")[0] for line in proc.stdout.splitlines()]
    assert {"no transport (baseline)", "carried, HttpTransport"} <= set(labels)
    assert "events received: 48 of 48 expected" in proc.stdout


@pytest.mark.timeout(300)
def test_llm_patches_quick_run_prints_every_case_and_the_chunk_gaps() -> None:
    """``benchmarks.llm_patches --quick`` exits 0 and prints a row per provider case, the
    engine's own work, and the p50/p99 chunk inter-arrival of a stream unpatched and patched."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.llm_patches", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=480,  # four SDKs imported (litellm alone takes seconds) on a shared machine
        check=False,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for case in (
        "openai chat.completions.create",
        "anthropic messages.create",
        "litellm.completion",
    ):
        assert re.search(rf"^{re.escape(case)} +[\d.]+ +[\d.]+ +[+-][\d.]+ ", out, re.M), out
    gaps = re.findall(r"^openai stream chunk gap (p50|p99) +[\d.]+ +[\d.]+ +[+-][\d.]+$", out, re.M)
    assert gaps == ["p50", "p99"], out


@pytest.mark.timeout(300)  # past the run's own 180 s limit, so that limit names the cause
def test_search_quick_run_prints_ingest_and_every_search_row() -> None:
    """``benchmarks.search --quick`` exits 0 and prints the ingest rates with the index and
    without for both workloads, a row per searched text and the target line."""
    proc = _benchmark("search", "--quick", timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for workload in ("records", "no records"):
        row = (
            rf"^  {workload} +[\d,]+ steps/s with steps_search_grams_idx, +[\d,]+ without: x[\d.]+$"
        )
        assert re.search(row, out, re.M), out
    for label in ("step name, every run (step_1)", "found nowhere", "run id prefix (100 runs)"):
        assert re.search(rf"^  {re.escape(label)} +[\d.]+$", out, re.M), out
    assert "target: a rare text <= 100 ms at 100,000 runs" in out


def test_scale_quick_run_measures_ingest_and_pages_on_one_history_and_exits_0() -> None:
    """``benchmarks.scale --quick`` exits 0 and prints ingest on the empty history and at the
    large size (every step stored, none dropped), their ratio, the data loaded at both sizes
    and a row per page of the dashboard benchmark with both times."""
    proc = _benchmark("scale", "--quick", timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert re.search(r"^PipeLens at scale: ingest and reads with 4,988 steps stored$", out, re.M)
    flows = re.findall(
        r"^  (empty history|4,988 steps stored): 1 producers, 200 steps in [\d.]+ s = [\d,]+ "
        r"steps/s \(retried \d+, spooled \d+, dropped 0\)",
        out,
        re.M,
    )
    assert flows == ["empty history", "4,988 steps stored"], out
    requests = r"^    1 sequential requests of 5,000 events: p50 [\d.]+ ms, p99 [\d.]+ ms$"
    assert len(re.findall(requests, out, re.M)) == 2, out
    ratio = r"^  at 4,988 steps over empty: steps/s [\d.]+x, request p50 [\d.]+x, CPU per step"
    assert re.search(ratio, out, re.M), out
    assert re.search(r"^  \(ingest cost (does not grow|grows) with the history", out, re.M), out
    # 100 runs then enough for 5,000 steps with the big runs (348 steps): 232 runs.
    assert re.search(r"^data: +104 runs, 2,348 steps over 30 days", out, re.M), out
    assert re.search(r"^data: +236 runs, 4,988 steps over 30 days", out, re.M), out
    rows = re.findall(r"^(\S.*?) {2,}[\d.]+ +[\d.]+ +[\d.]+x +(\d{3}) +[\d.]+$", out, re.M)
    assert [label for label, _ in rows][:3] == [
        "overview (24 hours)",
        "overview (30 days)",
        "runs page (30 days, first page)",
    ]
    assert {status for _, status in rows} == {"200"}, out


def test_scale_too_few_steps_are_refused_with_the_least_named() -> None:
    """``--steps`` not above the small size exits 2 naming the value and the least it takes."""
    proc = _benchmark("scale", "--quick", "--steps", "1000")
    message = "--steps 1000: expected at least 2,368 (more than the small size)"
    assert (proc.returncode, message in proc.stderr) == (2, True), proc.stderr


@pytest.mark.timeout(300)
def test_payloads_quick_run_prints_a_row_per_kind_of_text_and_exits_0() -> None:
    """``benchmarks.payloads --quick`` exits 0, which it does only if every event reached the
    file and the secret did not, and prints a row of figures for each kind of text."""
    from benchmarks.payloads import KINDS

    proc = _benchmark("payloads", "--quick", timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for kind in KINDS:
        assert re.search(
            rf"^{re.escape(kind)} +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+x ", proc.stdout, re.M
        )


def test_payloads_bad_count_is_refused_with_its_option_named() -> None:
    """Too few steps for one run, or no repeat, exits 2 naming the option, the value and the
    least it takes."""
    proc = _benchmark("payloads", "--steps", "10")
    assert proc.returncode == 2
    assert "--steps 10: expected at least 100 (one run of 100 steps)" in proc.stderr
    proc = _benchmark("payloads", "--repeat", "0")
    assert proc.returncode == 2
    assert "--repeat 0: expected at least 1" in proc.stderr

"""Per-call cost of the tracing core, against a bare call and an OpenTelemetry SDK span.

Run ``python -m benchmarks.overhead`` (``--quick`` for a smoke run whose figures mean nothing).
Each contender runs in its own subprocess, so none inherits another's heap, threads or warm caches.
Steps are measured where users call them: as children inside an open run, a new run every 100 calls
(the run's own root step is part of the cost); a row where every call is a run of its own shows
that share, what opening and ending a run costs. A ``@step`` generator (one item, read to its end)
is timed against a bare generator read the same way, and the minimal-span floor (a decorator that
sets a ContextVar, reads two clocks, builds a small msgspec Struct and resets the ContextVar) shows
what any contextvar tracer pays, to read the @step rows against. The table shows the minimum and
median of the repeats in µs per call, the overhead over the contender's bare twin, the ratio to an
OpenTelemetry SDK span, the baseline users know, and the calling thread's CPU time per call (the
least of the repeats: on a loaded machine, the cost without the waits for a core). A last
subprocess makes 1,000,000 steps over 10,000 runs and reports how much the process's RSS grew.
A second table times LLM calls through the real SDKs (OpenAI ``create`` and a stream read to its
end, Anthropic's ``create``) over an in-process HTTP transport, events going to a file through a
batching transport, by the interleaved method of ``benchmarks.llm_patches`` (its code: one call
unpatched, one patched, in turn, 1/20 as many calls as steps; blocks of calls drift by hundreds
of µs on a shared machine): the median of each pair's difference is what PipeLens adds to an LLM
call outside network time. Its last row is PipeLens's own work with the SDK's cut out (its noise
hides tens of µs). Three rows measure OpenTelemetry's side: a ``@step`` in a program that
imported the OTel SDK (the bridge armed, no span current), and a ``@step`` with the OTLP export
on — once for the caller's thread (its CPU time is the figure: the export's thread encodes
each run once it ends, as in use, but the flush is outside the timing), once with the encoding
and posting to a collector stand-in (another process) timed to the last span.

The targets are printed as information, never as an exit status: timings belong here, and a
noisy machine must not fail anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import llm_patches
from benchmarks._contenders import (
    BASELINE,
    CONTENDERS,
    CPU_TIMES,
    MEMORY_LABEL,
    RUN_SIZE,
    Plan,
    memory_growth,
)
from benchmarks._machine import machine_lines

ROOT = Path(__file__).resolve().parent.parent
MEMORY_RUNS = 10_000
#: The hot path's targets (issue 13): µs over the bare twin (a bare call, await, generator).
TARGET_STEP_US = {"step": 1.5, "step_async": 2.5, "step_generator": 3.0}
TARGET_OTLP_US = 3.0
TARGET_RSS_MB = 30.0
TARGET_LLM_PATCH_US = 50.0
#: The LLM calls timed through their SDK, unpatched and patched in turn (``llm_patches.CASES``).
LLM_CASES = (
    "openai chat.completions.create",
    "openai create stream (5 chunks)",
    "anthropic messages.create",
)
#: The call whose own work (the SDK cut out) is timed too, and that row's label.
OWN_WORK_CASE = "anthropic messages.create"
OWN_WORK_LABEL = "anthropic, SDK cut out"
#: Every row of the LLM table, in order.
LLM_ROWS = (*LLM_CASES, OWN_WORK_LABEL)
#: An LLM call costs far more than a step: fewer calls keep the run short.
LLM_CALL_SHARE = 20
TIMES = "\N{MULTIPLICATION SIGN}"


def _spawn(args: list[str]) -> Any:
    """Run one worker subprocess and return the JSON it printed on its last line."""
    command = [sys.executable, "-m", "benchmarks.overhead", *args]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SystemExit(f"benchmark worker {' '.join(args)} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.splitlines()[-1])


def _report(
    plan: Plan,
    times: dict[str, list[float]],
    cpu: dict[str, list[float]],
    memory: dict[str, float],
    llm: dict[str, list[llm_patches.Figure]],
    quick: bool,
) -> str:
    best = {key: min(values) * 1e6 for key, values in times.items()}
    best_cpu = {key: min(values) * 1e6 for key, values in cpu.items() if values}
    lines = [
        "PipeLens tracing overhead: µs per call, each contender in its own process",
        f"(min/median of {plan.repeat} {TIMES} {plan.number:,} calls, "
        f"a new run every {RUN_SIZE} calls)",
        *machine_lines(
            ("pipelens", "msgspec", "wrapt", "opentelemetry-sdk", "openai", "anthropic")
        ),
        "",
        f"{'contender':<34}{'min µs':>9}{'median µs':>11}{'overhead µs':>13}  "
        f"{'over':<18}{TIMES + ' vs OTel span':>14}{'CPU µs':>9}",
    ]
    labels = {c.key: c.label for c in CONTENDERS}
    twins = {c.key: c.twin for c in CONTENDERS if c.twin}
    overhead = {key: best[key] - best[twin] for key, twin in twins.items()}
    for c in CONTENDERS:
        median = statistics.median(times[c.key]) * 1e6
        shown = f"{overhead[c.key]:+.2f}" if c.twin else "—"
        lines.append(
            f"{c.label:<34}{best[c.key]:>9.2f}{median:>11.2f}{shown:>13}  "
            f"{labels[c.twin] if c.twin else '':<18}{best[c.key] / best[BASELINE]:>13.2f}{TIMES}"
            + (f"{best_cpu[c.key]:>9.2f}" if c.key in best_cpu else f"{'—':>9}")
        )
    otlp_cpu = best_cpu["step_otlp"] - best_cpu["bare"]
    lines += [
        "",
        f"{MEMORY_LABEL}: {memory['steps']:,.0f} @step calls over {memory['runs']:,.0f} runs "
        f"(default settings, no transport) in {memory['seconds']:.1f} s: RSS "
        f"{memory['growth_mb']:+.1f} MB after gc.collect() "
        f"(peak {memory['peak_growth_mb']:+.1f} MB)",
        "",
        "targets (information, never an exit status"
        + ("; --quick figures mean nothing):" if quick else "):"),
        *(
            f"  {labels[key]} overhead <= {target:g} µs over a {labels[twins[key]]}: "
            f"{'met' if overhead[key] <= target else 'missed'} ({overhead[key]:.2f} µs)"
            for key, target in TARGET_STEP_US.items()
        ),
        # The floor is no target: what a tracer cannot go under, to read the targets against.
        f"  (the minimal-span floor: {overhead['floor']:.2f} µs over a bare call)",
        # Neither a target: the share of a run's opening and end in each step of the sync row.
        f"  (a run per call: {overhead['step_root']:.2f} µs over a bare call, "
        f"{overhead['step_root'] / RUN_SIZE:.3f} µs of each step in runs of {RUN_SIZE})",
        # The calling thread's CPU: its wall time also holds the waits for the GIL while the
        # export's thread encodes the runs that ended (the "+encode,post" row times that work).
        f"  @step + OTLP export <= {TARGET_OTLP_US:g} µs more than a bare call on the "
        f"caller's thread: {'met' if otlp_cpu <= TARGET_OTLP_US else 'missed'} "
        f"({otlp_cpu:.2f} µs of its CPU, {overhead['step_otlp']:.2f} µs wall; an OTel SDK "
        f"span {best[BASELINE] - best['bare']:.2f} µs)",
        f"  RSS growth < {TARGET_RSS_MB:g} MB for {memory['steps']:,.0f} steps: "
        f"{'met' if memory['growth_mb'] < TARGET_RSS_MB else 'missed'} "
        f"({memory['growth_mb']:.1f} MB)",
        # Not a met/missed line: the LLM figures come from far fewer calls, so they are noisier.
        f"  auto_patch adds < {TARGET_LLM_PATCH_US:g} µs of the calling thread's CPU per LLM "
        "call (no network): "
        + ", ".join(f"{label} {llm[label][2][1]:+.1f} µs" for label in LLM_ROWS)
        + " measured",
        "",
        "LLM calls through the real SDKs, in-process HTTP stub, events to a file: medians of "
        f"{llm_number(plan):,} calls unpatched and as many patched, one of each in turn, in runs "
        f"of {llm_size(plan):,} ('+µs': the median of each pair's difference); the last row the "
        "patch engine around an original answering at once with a recorded result (min of "
        f"{plan.repeat} repeats)",
        llm_patches.HEAD,
        *(llm_patches.row(label, *llm[label], digits=1) for label in LLM_ROWS),
    ]
    return "\n".join(lines)


def llm_number(plan: Plan) -> int:
    """LLM calls of each kind (unpatched, patched) per case."""
    return max(plan.number // LLM_CALL_SHARE, 10)


def llm_size(plan: Plan) -> int:
    """Patched LLM calls per run."""
    return min(RUN_SIZE, llm_number(plan))


def _llm_worker(label: str, plan: Plan) -> list[llm_patches.Figure]:
    """The bare, patched and added figures of one LLM row (``llm_patches``' own measures)."""
    with llm_patches.events_to_file():
        if label == OWN_WORK_LABEL:
            bare, patched = llm_patches.wrapper_cost(OWN_WORK_CASE, llm_number(plan), plan.repeat)
            return [bare, patched, llm_patches.difference(bare, patched)]
        return list(llm_patches.measure(label, llm_number(plan), llm_size(plan)))


def _worker(key: str, plan: Plan, memory_runs: int) -> Any:
    if key == MEMORY_LABEL:
        return memory_growth(memory_runs)
    if key in LLM_ROWS:
        return _llm_worker(key, plan)
    for c in CONTENDERS:
        if c.key == key:
            return {"times": c.measure(plan), "cpu": CPU_TIMES}
    raise SystemExit(f"unknown worker {key!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every contender, each in its own subprocess, and print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--number", type=int, help="calls per repeat (default 20000)")
    parser.add_argument("--repeat", type=int, help="timed repeats per contender (default 5)")
    parser.add_argument("--memory-runs", type=int, help=f"runs of {RUN_SIZE} steps (10000)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    number = args.number if args.number is not None else (200 if quick else 20_000)
    repeat = args.repeat if args.repeat is not None else (1 if quick else 5)
    memory_runs = (
        args.memory_runs if args.memory_runs is not None else (10 if quick else MEMORY_RUNS)
    )
    for name, value in (("--number", number), ("--repeat", repeat), ("--memory-runs", memory_runs)):
        if value < 1:
            parser.error(f"{name} {value}: expected a positive integer")
    # Whole runs only: round the calls per repeat up to a multiple of the run size.
    plan = Plan(number=-(-number // RUN_SIZE) * RUN_SIZE, repeat=repeat)

    if args.worker:
        print(json.dumps(_worker(args.worker, plan, memory_runs)))
        return 0

    common = ["--number", str(plan.number), "--repeat", str(repeat)]
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for c in CONTENDERS:
        print(f"measuring {c.label} ...", file=sys.stderr, flush=True)
        measured = _spawn(["--worker", c.key, *common])
        times[c.key], cpu[c.key] = measured["times"], measured["cpu"]
    print(f"measuring {MEMORY_LABEL} ...", file=sys.stderr, flush=True)
    memory = _spawn(["--worker", MEMORY_LABEL, "--memory-runs", str(memory_runs)])
    llm: dict[str, list[llm_patches.Figure]] = {}
    for label in LLM_ROWS:
        print(f"measuring {label} ...", file=sys.stderr, flush=True)
        llm[label] = [tuple(f) for f in _spawn(["--worker", label, *common])]  # type: ignore[misc]
    print(_report(plan, times, cpu, memory, llm, args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

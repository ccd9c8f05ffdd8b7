"""The overhead benchmark runs end to end; its figures are never checked (timings are noisy)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from benchmarks._contenders import CONTENDERS, MEMORY_LABEL

ROOT = Path(__file__).resolve().parent.parent
# A table row: the label, then the min and median µs per call.
ROW = re.compile(r"^(?P<label>\S.*?)\s{2,}\d+\.\d+\s+\d+\.\d+\s")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.overhead", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


def test_quick_run_prints_every_row_and_exits_0() -> None:
    """``--quick`` exits 0 and prints a row per contender, the memory line and both targets."""
    proc = _run("--quick")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    rows = [m["label"] for m in map(ROW.match, lines) if m is not None]
    assert [c.label for c in CONTENDERS] == rows
    memory = [line for line in lines if line.startswith(f"{MEMORY_LABEL}: ")]
    assert len(memory) == 1, proc.stdout
    assert "1,000 @step calls over 10 runs" in memory[0]
    targets = [line for line in lines if re.search(r": (met|missed) \(", line)]
    assert len(targets) == 2, proc.stdout


def test_bad_count_is_refused_with_its_option_named() -> None:
    """A non-positive count exits 2 with a message naming the option and the value."""
    proc = _run("--number", "0")
    assert proc.returncode == 2
    assert "--number 0: expected a positive integer" in proc.stderr

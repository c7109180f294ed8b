"""Shared timing for the benchmarks: every contender runs in the same process,
interleaved, so machine noise hits them alike. Numbers live here, never in tests."""

from __future__ import annotations

import gc
import time
from statistics import median
from typing import Callable, Dict, List, Sequence, Tuple

RUNS = 9  # >= 7 runs each, as the README promises


def measure(
    contenders: Sequence[Tuple[str, Callable[[], object]]], runs: int = RUNS
) -> Dict[str, List[float]]:
    """Times each contender `runs` times, round-robin; returns seconds per run."""
    times: Dict[str, List[float]] = {name: [] for name, _ in contenders}
    for _, fn in contenders:  # warm-up: imports, caches, first-touch allocations
        fn()
    for _ in range(runs):
        for name, fn in contenders:
            gc.collect()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def table(title: str, times: Dict[str, List[float]], baseline: str) -> str:
    """A Markdown table: min and median in ms, and speed-up against `baseline`."""
    base = median(times[baseline])
    lines = [
        f"**{title}**",
        "",
        "| contender | min (ms) | median (ms) | vs. " + baseline + " |",
        "|---|---:|---:|---:|",
    ]
    for name, samples in times.items():
        speedup = base / median(samples)
        lines.append(
            f"| {name} | {min(samples) * 1e3:.3f} | {median(samples) * 1e3:.3f} | {speedup:.1f}× |"
        )
    return "\n".join(lines)

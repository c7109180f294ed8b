"""What ``import tbcollect`` costs over the interpreter's own start: fresh
interpreters, one running ``pass`` and one ``import tbcollect``, interleaved.
The goal is under 10 ms; submodules (aio, gevent, sentry, watchdog, ...) load
only when first used."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from statistics import median
from typing import Dict, List

try:
    from benches.common import table
except ImportError:  # run as a script from benches/
    from common import table  # type: ignore[no-redef]

RUNS = 21

CONTENDERS = {
    "python -c pass": "pass",
    "python -c 'import tbcollect'": "import tbcollect",
    "python -c 'import tbcollect; tbcollect.collect()'": "import tbcollect; tbcollect.collect()",
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time(code: str) -> tuple[float, float]:
    """(wall, CPU) seconds of a fresh interpreter running ``code``."""
    cpu, start = _children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start, _children_cpu() - cpu


def run() -> str:
    wall: Dict[str, List[float]] = {name: [] for name in CONTENDERS}
    cpu: Dict[str, List[float]] = {name: [] for name in CONTENDERS}
    for code in CONTENDERS.values():  # warm-up: the page cache
        _time(code)
    for _ in range(RUNS):
        for name, code in CONTENDERS.items():
            w, c = _time(code)
            wall[name].append(w)
            cpu[name].append(c)
    version = ".".join(map(str, sys.version_info[:3]))
    base, mine = "python -c pass", "python -c 'import tbcollect'"
    # The CPU time (user + system) of the child hardly moves with the load
    # of other processes; elapsed time does.
    over_cpu = min(cpu[mine]) - min(cpu[base])
    over_wall = median(wall[mine]) - median(wall[base])
    return (
        table(f"Interpreter start, elapsed (Python {version})", wall, base)
        + "\n\n"
        + table(f"Interpreter start, CPU time (Python {version})", cpu, base)
        + f"\n\n`import tbcollect` adds {over_cpu * 1e3:.1f} ms of CPU time (min against min)"
        + f" and {over_wall * 1e3:.1f} ms elapsed (median against median) to the"
        + " interpreter's start; goal: under 10 ms."
    )


if __name__ == "__main__":
    print(run())

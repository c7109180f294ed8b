"""What ``import tbcollect`` costs over the interpreter's own start: fresh
interpreters, one running ``pass`` and one ``import tbcollect``, interleaved.
The goal is under 10 ms; submodules (aio, gevent, sentry, watchdog, ...) load
only when first used."""

from __future__ import annotations

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


def _time(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def run() -> str:
    times: Dict[str, List[float]] = {name: [] for name in CONTENDERS}
    for code in CONTENDERS.values():  # warm-up: the page cache
        _time(code)
    for _ in range(RUNS):
        for name, code in CONTENDERS.items():
            times[name].append(_time(code))
    base = median(times["python -c pass"])
    over = median(times["python -c 'import tbcollect'"]) - base
    version = ".".join(map(str, sys.version_info[:3]))
    out = table(
        f"Interpreter start, with and without tbcollect (Python {version})", times, "python -c pass"
    )
    return (
        out
        + f"\n\n`import tbcollect` adds {over * 1e3:.1f} ms over the interpreter's start"
        + " (median against median; goal: under 10 ms)."
    )


if __name__ == "__main__":
    print(run())

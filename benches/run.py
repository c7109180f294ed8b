"""Runs every benchmark side by side and writes the tables into
docs/performance.md between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`
markers, with the date and the machine they were measured on.

    make bench                     # all, docs/performance.md updated
    python benches/run.py threads  # one, printed only
    python benches/run.py --write import   # one, printed and written
"""

from __future__ import annotations

import datetime
import importlib
import os
import platform
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCHES = ["import", "threads", "tasks", "greenlets"]
TARGET = ROOT / "docs" / "performance.md"


def machine() -> str:
    """The date and the machine, for the tables that follow."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Measured {today} on {cpu}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}."
    )


def main(argv: list) -> int:
    write = not argv or "--write" in argv
    names = [a for a in argv if a != "--write"] or BENCHES
    text = TARGET.read_text()
    for name in names:
        try:
            module = importlib.import_module(f"benches.bench_{name}")
        except ImportError as e:
            print(f"skipping {name}: {e}", file=sys.stderr)
            continue
        result = module.run()
        print(result, end="\n\n", flush=True)
        marker = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        if write and marker.search(text):
            result += f"\n\n_{machine()}_"
            text = marker.sub(lambda m, r=result: m.group(1) + r + "\n" + m.group(2), text)
    if not argv:  # every table is new: say once where and when
        marker = re.compile(r"(<!-- bench:machine -->\n).*?(<!-- /bench:machine -->)", re.S)
        text = marker.sub(lambda m: m.group(1) + machine() + "\n" + m.group(2), text)
    if write:
        TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

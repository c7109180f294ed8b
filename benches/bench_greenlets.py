"""Greenlet dump speed: tbcollect against the usual Python recipe and gevent.

10,000 gevent greenlets, each two calls deep and blocked on an Event, dumped
as text with the heap holding no extra objects, then 1,000,000 extra
GC-tracked objects (the heap scan is the part that grows with the heap).

    .venv/bin/python benches/bench_greenlets.py [--greenlets N] [--extra N]
"""

from __future__ import annotations

import argparse
import gc
import sys
import traceback
from pathlib import Path

import gevent
import gevent.event
import gevent.util
import greenlet
import tbcollect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import measure, table  # noqa: E402


def inner(event: gevent.event.Event) -> None:
    event.wait()


def outer(event: gevent.event.Event) -> None:
    inner(event)


def recipe() -> str:
    """What people write today: scan the heap in Python, format each stack."""
    blocks = []
    for obj in gc.get_objects():
        if isinstance(obj, greenlet.greenlet) and obj.gr_frame is not None:
            frames = traceback.extract_stack(obj.gr_frame)
            blocks.append(f"Greenlet {id(obj):#x}\n" + "".join(traceback.format_list(frames)))
    return "\n".join(blocks)


def tbcollect_text() -> str:
    return tbcollect.collect(threads=False, tasks=False).to_text()


def gevent_run_info() -> str:
    return "".join(gevent.util.format_run_info())


def run(greenlets: int = 10_000, extra: int = 1_000_000) -> str:
    """Both heap sizes, side by side; returns the Markdown tables."""
    event = gevent.event.Event()
    workers = [gevent.spawn(outer, event) for _ in range(greenlets)]
    gevent.sleep(0)
    assert all(w.gr_frame is not None for w in workers), "every greenlet must be blocked"
    snap = tbcollect.collect(threads=False, tasks=False)
    assert len(snap.stacks) >= greenlets and not snap.errors, snap.errors

    contenders = [
        ("recipe: gc + isinstance + traceback", recipe),
        ("gevent.util.format_run_info()", gevent_run_info),
        ("tbcollect collect(threads=False, tasks=False).to_text()", tbcollect_text),
    ]
    version = ".".join(map(str, sys.version_info[:3]))
    heap: list = []
    tables = []
    for size in (0, extra):
        heap.extend([] for _ in range(size - len(heap)))
        tracked = len(gc.get_objects())
        times = measure(contenders)
        title = (
            f"{greenlets:,} greenlets, 2 calls deep, {size:,} extra objects "
            f"({tracked:,} tracked; Python {version})"
        )
        tables.append(table(title, times, baseline="recipe: gc + isinstance + traceback"))
    event.set()
    gevent.joinall(workers)
    return "\n\n".join(tables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--greenlets", type=int, default=10_000)
    parser.add_argument("--extra", type=int, default=1_000_000)
    args = parser.parse_args()
    print(run(args.greenlets, args.extra))


if __name__ == "__main__":
    main()

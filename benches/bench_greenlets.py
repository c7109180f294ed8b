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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--greenlets", type=int, default=10_000)
    parser.add_argument("--extra", type=int, default=1_000_000)
    args = parser.parse_args()

    event = gevent.event.Event()
    workers = [gevent.spawn(outer, event) for _ in range(args.greenlets)]
    gevent.sleep(0)
    assert all(w.gr_frame is not None for w in workers), "every greenlet must be blocked"
    snap = tbcollect.collect(threads=False, tasks=False)
    assert len(snap.stacks) >= args.greenlets and not snap.errors, snap.errors

    contenders = [
        ("tbcollect collect().to_text()", tbcollect_text),
        ("recipe: gc + isinstance + traceback", recipe),
        ("gevent.util.format_run_info()", gevent_run_info),
    ]
    version = "{}.{}".format(*sys.version_info[:2])
    heap = []
    for extra in (0, args.extra):
        heap.extend([] for _ in range(extra - len(heap)))
        tracked = len(gc.get_objects())
        times = measure(contenders)
        title = (
            f"Python {version}, {args.greenlets:,} greenlets, "
            f"{extra:,} extra objects ({tracked:,} tracked)"
        )
        print(table(title, times, baseline="recipe: gc + isinstance + traceback"))
        print()
    event.set()


if __name__ == "__main__":
    main()

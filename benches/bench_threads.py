"""90 threads (faulthandler stops at 100), each 3 calls deep, in one process:
tbcollect.collect().to_text() against the seed recipe and faulthandler."""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import traceback

try:
    from benches.common import measure, table
except ImportError:  # run as a script from benches/
    from common import measure, table  # type: ignore[no-redef]

import tbcollect

THREADS = 90


def level_three(stop: threading.Event) -> None:
    stop.wait()


def level_two(stop: threading.Event) -> None:
    level_three(stop)


def level_one(stop: threading.Event) -> None:
    level_two(stop)


def seed_recipe() -> str:
    """Seed 003: threading.enumerate() + sys._current_frames() + traceback."""
    id2thread = {t.ident: t for t in threading.enumerate()}
    out = []
    for thread_id, stack in sys._current_frames().items():
        out.append(f"thread {id2thread.get(thread_id)}:")
        out.append("".join(traceback.format_list(traceback.extract_stack(stack))))
    return "\n".join(out)


def run() -> str:
    stop = threading.Event()
    threads = [
        threading.Thread(target=level_one, args=(stop,), name=f"worker-{i}") for i in range(THREADS)
    ]
    for t in threads:
        t.start()
    devnull = open(os.devnull, "w")
    try:
        times = measure(
            [
                ("seed recipe (extract_stack + format_list)", seed_recipe),
                (
                    "faulthandler.dump_traceback(all_threads=True)",
                    lambda: faulthandler.dump_traceback(devnull, all_threads=True),
                ),
                ("tbcollect.collect().to_text()", lambda: tbcollect.collect().to_text()),
                ("tbcollect.collect() (capture only)", lambda: tbcollect.collect()),
            ]
        )
    finally:
        stop.set()
        for t in threads:
            t.join()
        devnull.close()
    return table(
        f"{THREADS + 1} threads, 3 calls deep (Python {sys.version.split()[0]})",
        times,
        baseline="seed recipe (extract_stack + format_list)",
    )


if __name__ == "__main__":
    print(run())

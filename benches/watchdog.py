"""What a watchdog costs the watched code: a heartbeat call, an event loop
under ping, and the watcher thread's own CPU while all is well.

    .venv/bin/python benches/watchdog.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tbcollect  # noqa: E402
from common import measure, table  # noqa: E402

CALLS = 100_000
CALLBACKS = 50_000


def heartbeat_calls(wd: tbcollect.Watchdog) -> str:
    beat = wd.watch_thread(threshold=60)
    now = time.monotonic

    def clock() -> None:
        for _ in range(CALLS):
            now()

    def beat_method() -> None:
        b = beat.beat
        for _ in range(CALLS):
            b()

    def module_heartbeat() -> None:
        hb = tbcollect.heartbeat
        for _ in range(CALLS):
            hb()

    times = measure(
        [
            ("time.monotonic()", clock),
            ("Heartbeat.beat()", beat_method),
            ("tbcollect.heartbeat()", module_heartbeat),
        ]
    )
    beat.cancel()
    return table(f"{CALLS:,} calls", times, "time.monotonic()")


def loop_throughput(wd: tbcollect.Watchdog) -> str:
    def run(threshold: float | None) -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            watch = wd.watch_loop(threshold=threshold) if threshold else None
            done = loop.create_future()
            left = [CALLBACKS]

            def step() -> None:
                left[0] -= 1
                if left[0]:
                    loop.call_soon(step)
                else:
                    done.set_result(None)

            loop.call_soon(step)
            await done
            if watch is not None:
                watch.cancel()

        asyncio.run(main())

    times = measure(
        [
            ("no watch", lambda: run(None)),
            ("watch_loop(threshold=1.0)", lambda: run(1.0)),
            ("watch_loop(threshold=0.02)", lambda: run(0.02)),
        ]
    )
    return table(f"asyncio loop running {CALLBACKS:,} callbacks", times, "no watch")


def watcher_cpu(wd: tbcollect.Watchdog, seconds: float = 10.0) -> str:
    [watcher] = [t for t in threading.enumerate() if t.name == "tbcollect-watchdog"]

    def cpu() -> float:
        # schedstat's first field: nanoseconds this thread spent on a CPU.
        with open(f"/proc/self/task/{watcher.native_id}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9

    stop = threading.Event()

    def worker() -> None:
        beat = wd.watch_thread(threshold=1.0)
        while not stop.wait(0.01):
            beat.beat()

    async def idle_loop() -> None:
        wd.watch_loop(threshold=1.0)
        while not stop.is_set():
            await asyncio.sleep(0.01)

    threads = [
        threading.Thread(target=worker),
        threading.Thread(target=lambda: asyncio.run(idle_loop())),
    ]
    before = cpu()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    used = cpu() - before
    return (
        f"**watcher thread CPU** over {seconds:.0f} s with one heartbeat (100 beats/s) "
        f"and one loop watch, both threshold 1.0 s: {used * 1e3:.2f} ms, {wd.reports} reports"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        with tbcollect.watchdog(directory=directory) as wd:
            print(heartbeat_calls(wd), end="\n\n")
            print(loop_throughput(wd), end="\n\n")
            print(watcher_cpu(wd))


if __name__ == "__main__":
    main()

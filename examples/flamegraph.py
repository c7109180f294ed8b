"""A small service stuck in a few typical places, drawn as a flamegraph.

    python examples/flamegraph.py [OUT.svg]      (default: docs/flamegraph.svg)

Eight pool workers idle on their queue, three request handlers wait for a
database lock that a stuck migration thread holds, and an asyncio loop runs
2,000 tasks: most fetching (sleeping), the rest consuming a queue. Every
thread, greenlet and task is one unit of width, so the 1,500 fetch tasks are
one wide bar. The same dump is also written as folded stacks (``.folded``)
next to the SVG, for other flamegraph tools.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
from pathlib import Path

import tbcollect

db_lock = threading.Lock()


def pool_worker(jobs: queue.Queue[object]) -> None:
    while True:
        job = jobs.get()
        if job is None:
            return


def run_migration(done: threading.Event) -> None:
    with db_lock:
        done.wait()  # stuck while holding the lock


def query_orders(customer: int) -> None:
    with db_lock:
        pass


def handle_request(customer: int) -> None:
    query_orders(customer)


async def fetch(url: str, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(3600)


async def consume(items: asyncio.Queue[int]) -> None:
    while True:
        await items.get()


async def service(ready: threading.Event, stop: asyncio.Event) -> None:
    items: asyncio.Queue[int] = asyncio.Queue()
    tasks = [asyncio.ensure_future(fetch(f"https://example.test/{i}", stop)) for i in range(1500)]
    tasks += [asyncio.ensure_future(consume(items)) for _ in range(500)]
    await asyncio.sleep(0)
    ready.set()
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main(out: Path) -> None:
    jobs: queue.Queue[object] = queue.Queue()
    done = threading.Event()
    threads = [
        threading.Thread(target=pool_worker, args=(jobs,), name=f"pool-{i}") for i in range(8)
    ]
    threads.append(threading.Thread(target=run_migration, args=(done,), name="migration"))
    for t in threads:
        t.start()
    handlers = [
        threading.Thread(target=handle_request, args=(c,), name=f"request-{c}") for c in range(3)
    ]
    for t in handlers:
        t.start()

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event() if sys.version_info >= (3, 10) else None

    def run_loop() -> None:
        nonlocal stop
        asyncio.set_event_loop(loop)
        if stop is None:  # 3.9: the Event must be made inside its loop
            stop = asyncio.Event()
        loop.run_until_complete(service(ready, stop))

    loop_thread = threading.Thread(target=run_loop, name="event-loop")
    loop_thread.start()
    ready.wait()

    out.parent.mkdir(parents=True, exist_ok=True)
    tbcollect.dump_all(out, format="svg")
    tbcollect.dump_all(out.with_suffix(".folded"), format="collapsed")
    print(f"wrote {out} and {out.with_suffix('.folded')}")

    loop.call_soon_threadsafe(stop.set)  # type: ignore[union-attr]
    loop_thread.join()
    done.set()
    for _ in range(8):
        jobs.put(None)
    for t in threads + handlers:
        t.join()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/flamegraph.svg"))

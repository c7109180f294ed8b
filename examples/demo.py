"""A small busy process — threads, gevent greenlets and asyncio tasks — that
dumps itself with tbcollect: the text dump, then a short excerpt of the JSON
one, whose whole is written to a file named at the end.

    make demo            # or: python examples/demo.py [--json-only | --text-only]
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import sys
import tempfile
import threading
import time

import tbcollect

stop = threading.Event()
ready = threading.Barrier(4)  # main + pool feeder + greenlet thread + asyncio thread


# --- threads: a pool waiting for work, a refresher three calls deep, a lock convoy
jobs: queue.Queue = queue.Queue()


def pool_worker() -> None:
    while True:
        job = jobs.get()
        if job is None:
            return


class CacheRefresher(threading.Thread):
    def run(self) -> None:
        self.refresh_all()

    def refresh_all(self) -> None:
        self.refresh_one("users")

    def refresh_one(self, table: str) -> None:
        while not stop.wait(0.2):
            pass


# An RLock records its owner, so the dump names who holds it (a plain Lock
# cannot: the dump then says "threading.Lock records no holder").
registry_lock = threading.RLock()


def registry_writer() -> None:
    with registry_lock:
        stop.wait()


def registry_reader() -> None:
    with registry_lock:
        pass


# --- gevent: a hub in its own thread with greenlets parked in different places
def gevent_thread() -> None:
    try:
        import gevent
        import gevent.event
        import gevent.queue
    except ImportError:
        ready.wait()
        return
    inbox = gevent.queue.Queue()
    shutdown = gevent.event.Event()

    def poller(n: int) -> None:
        while not shutdown.is_set():
            gevent.sleep(0.5)

    def mail_reader() -> None:
        inbox.get()

    def watcher() -> None:
        shutdown.wait()

    greenlets = [gevent.spawn(poller, i) for i in range(5)]
    greenlets += [gevent.spawn(mail_reader), gevent.spawn(watcher)]
    gevent.sleep(0.05)
    ready.wait()
    while not stop.is_set():
        gevent.sleep(0.05)
    shutdown.set()
    inbox.put("bye")
    gevent.joinall(greenlets, timeout=5)


# --- asyncio: a loop in its own thread with tasks that await each other
async def fetch(url: str) -> str:
    await asyncio.sleep(3600)
    return url


async def crawl(urls) -> list:
    return await asyncio.gather(*(fetch(u) for u in urls))


async def consumer(q: asyncio.Queue) -> None:
    await q.get()


async def supervisor(child: asyncio.Task) -> None:
    await child


async def async_main() -> None:
    crawler = asyncio.create_task(crawl(["a", "b", "c"]), name="crawler")
    q: asyncio.Queue = asyncio.Queue()
    tasks = [
        crawler,
        asyncio.create_task(consumer(q), name="consumer"),
        asyncio.create_task(supervisor(crawler), name="supervisor"),
    ]
    await asyncio.sleep(0.05)
    await asyncio.get_running_loop().run_in_executor(None, ready.wait)
    while not stop.is_set():
        await asyncio.sleep(0.05)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> int:
    threads = [
        threading.Thread(target=pool_worker, name=f"pool-{i}", daemon=True) for i in range(4)
    ]
    threads.append(CacheRefresher(name="cache-refresher", daemon=True))
    threads.append(threading.Thread(target=registry_writer, name="registry-writer", daemon=True))
    threads.append(threading.Thread(target=gevent_thread, name="gevent-hub", daemon=True))
    threads.append(
        threading.Thread(target=lambda: asyncio.run(async_main()), name="asyncio-loop", daemon=True)
    )
    for t in threads:
        t.start()
    time.sleep(0.05)
    reader = threading.Thread(target=registry_reader, name="registry-reader", daemon=True)
    reader.start()
    feeder = threading.Thread(target=ready.wait, name="feeder", daemon=True)
    feeder.start()
    ready.wait()
    time.sleep(0.1)

    show_text = "--json-only" not in sys.argv
    show_json = "--text-only" not in sys.argv
    if show_text:
        print(tbcollect.dump_all())
    if show_json:
        path = os.path.join(tempfile.gettempdir(), f"tbcollect-demo-{os.getpid()}.json")
        data = json.loads(tbcollect.dump_all(path, format="json"))
        stacks = data.pop("stacks")
        header = {k: v for k, v in data.items() if not isinstance(v, (dict, list)) or not v}
        rest = [k for k in data if k not in header]
        print(f"JSON excerpt (the header and the first of {len(stacks)} stacks):")
        print(json.dumps(dict(header, stacks=stacks[:1]), indent=2))
        print(f"The whole JSON dump is in {path}" + (f" (also: {', '.join(rest)})" if rest else ""))

    stop.set()
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A small asyncio service that dumps its own task tree.

    python examples/asyncio_tasks.py             # one dump from inside a task, as text
    python examples/asyncio_tasks.py --periodic  # a dumper task writing /tmp/tasks-{n}.txt

Every task of every loop is listed with its whole await chain, what it waits
for and which task waits for it; the task that takes the dump shows as
`running`, its frames ending at the `await tbcollect.aio.dump()` line. Each
handler sets a context variable registered with `tbcollect.label()`, so its
stack says which request it serves (`request_id='req-1'`).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading

import tbcollect

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
tbcollect.label(REQUEST_ID)


async def fetch(queue: asyncio.Queue[int]) -> None:
    await queue.get()


async def handle(n: int) -> None:
    REQUEST_ID.set(f"req-{n}")  # in this task's own context
    await asyncio.sleep(30 + n)


async def serve(queue: asyncio.Queue[int]) -> None:
    await asyncio.gather(*(asyncio.create_task(handle(n), name=f"handler-{n}") for n in range(3)))


async def main() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    server = asyncio.create_task(serve(queue), name="server")
    fetcher = asyncio.create_task(fetch(queue), name="fetcher")
    stop = threading.Event()
    worker = asyncio.create_task(asyncio.to_thread(stop.wait, 30), name="blocking-call")
    await asyncio.sleep(0.1)
    if "--periodic" in sys.argv:
        dumper = asyncio.create_task(tbcollect.aio.periodic_dump(0.5, "/tmp/tasks-{n}.txt"))
        await asyncio.sleep(1.2)
        dumper.cancel()
        print("wrote /tmp/tasks-1.txt and /tmp/tasks-2.txt")
    else:
        print(await tbcollect.aio.dump(threads=False, greenlets=False))
    for task in (server, fetcher):
        task.cancel()
    stop.set()
    await worker


if __name__ == "__main__":
    asyncio.run(main())

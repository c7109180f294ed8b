"""Real event loops in real threads for the asyncio tests.

Scenarios run on a loop in a background thread while the test thread
collects, so every capture crosses threads the way a dump of a hung service
does. Synchronization is by loop turns and events, never by elapsed time;
the timeouts are hang guards only.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Coroutine, Dict, List, TypeVar

import tbcollect

HANG_GUARD = 60.0
T = TypeVar("T")


async def settle(turns: int = 20) -> None:
    """Lets every ready task run until it suspends: `turns` loop iterations."""
    for _ in range(turns):
        await asyncio.sleep(0)


class LoopThread:
    """An event loop running forever in a thread of its own."""

    def __init__(
        self,
        factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
        name: str = "loop-thread",
    ) -> None:
        self.loop = factory()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()
        assert self._ready.wait(HANG_GUARD), "the loop thread did not start"
        assert self.thread.ident is not None
        self.ident: int = self.thread.ident

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs `coro` on the loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(HANG_GUARD)

    def call(self, fn: Callable[[], T]) -> T:
        """Calls `fn` in the loop's thread (outside any task) and returns its result."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def close(self) -> None:
        async def cancel_all() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        if self.loop.is_running():
            self.run(cancel_all())
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(HANG_GUARD)
        assert not self.thread.is_alive(), "the loop thread did not stop"
        if hasattr(self.loop, "shutdown_default_executor"):
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()

    def __enter__(self) -> LoopThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def task_stacks(snapshot: tbcollect.Snapshot) -> Dict[str, tbcollect.Stack]:
    """Task stacks by name (the scenarios name every task they care about)."""
    return {s.name: s for s in snapshot.stacks if s.kind == "task"}


def task_id(task: asyncio.Task[Any]) -> str:
    return f"task:{id(task):#x}"


def loop_id(loop: asyncio.AbstractEventLoop) -> str:
    return f"loop:{id(loop):#x}"


def short(stack: tbcollect.Stack) -> List[str]:
    """Function names without qualification (3.9/3.10 frames have no qualname)."""
    return [f.function.rsplit(".", 1)[-1] for f in stack.frames]


async def forever() -> None:
    await asyncio.sleep(3600)

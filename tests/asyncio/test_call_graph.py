"""3.14+: every task checked against the interpreter's own answer,
`asyncio.capture_call_graph()`, task by task.

Two loops in two threads (the second with eager tasks) hold a TaskGroup, a
gather, a task awaiting a task, and waits on a Lock, a Queue and an Event.
With both loops idle (every task waits for something nobody sets), the test
thread takes one snapshot and, for each task of the two loops, the
interpreter's call graph. They must name the same tasks, the same chain of
coroutines (qualified name and line, outermost first), and tbcollect's
`awaited_by` must cover the awaiters the interpreter records (it derives
more: see docs/versions.md).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Dict, List, Tuple

import pytest
import tbcollect

from tests.helpers import LoopThread, check_snapshot, loop_id, settle, task_id

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 14), reason="asyncio.capture_call_graph is new in 3.14"
)


async def wait_event(event: asyncio.Event) -> None:
    await event.wait()


async def wait_lock(lock: asyncio.Lock) -> None:
    async with lock:
        pass


async def wait_queue(queue: asyncio.Queue[int]) -> None:
    await queue.get()


async def group_parent(tag: str, event: asyncio.Event, lock: asyncio.Lock) -> None:
    async with asyncio.TaskGroup() as tg:
        tg.create_task(wait_event(event), name=f"{tag}group-event")
        tg.create_task(wait_lock(lock), name=f"{tag}group-lock")


async def gatherer(tag: str, event: asyncio.Event, queue: asyncio.Queue[int]) -> None:
    first = asyncio.create_task(wait_event(event), name=f"{tag}gathered-event")
    second = asyncio.create_task(wait_queue(queue), name=f"{tag}gathered-queue")
    await asyncio.gather(first, second)


async def awaits_task(child: asyncio.Task[None]) -> None:
    await child


async def build(eager: bool) -> Dict[str, Any]:
    """The scenario on the running loop; returns what must outlive it."""
    loop = asyncio.get_running_loop()
    if eager:
        loop.set_task_factory(asyncio.eager_task_factory)
    tag = "eager-" if eager else ""
    event = asyncio.Event()
    lock = asyncio.Lock()
    await lock.acquire()  # held by nobody that will let go
    queue: asyncio.Queue[int] = asyncio.Queue()
    child = asyncio.create_task(wait_event(event), name=f"{tag}awaited-child")
    tasks = [
        child,
        asyncio.create_task(awaits_task(child), name=f"{tag}awaits-child"),
        asyncio.create_task(group_parent(tag, event, lock), name=f"{tag}group-parent"),
        asyncio.create_task(gatherer(tag, event, queue), name=f"{tag}gatherer"),
        asyncio.create_task(wait_lock(lock), name=f"{tag}lock-waiter"),
        asyncio.create_task(wait_queue(queue), name=f"{tag}queue-waiter"),
        asyncio.create_task(wait_event(event), name=f"{tag}event-waiter"),
    ]
    await settle()
    return {"event": event, "lock": lock, "queue": queue, "tasks": tasks}


def all_tasks(lt: LoopThread) -> List[asyncio.Task[Any]]:
    async def pending() -> List[asyncio.Task[Any]]:
        me = asyncio.current_task()
        return [t for t in asyncio.all_tasks() if t is not me]

    return lt.run(pending())


def chain(graph: asyncio.FutureCallGraph) -> List[Tuple[str, int]]:
    # The interpreter lists the innermost coroutine first.
    return [(e.frame.f_code.co_qualname, e.frame.f_lineno) for e in reversed(graph.call_stack)]


def test_every_task_matches_capture_call_graph() -> None:
    with LoopThread(name="plain-loop") as plain, LoopThread(name="eager-loop") as eager:
        keep = [plain.run(build(False)), eager.run(build(True))]
        # Wait for the helpers `run` made on each loop to be gone: their tasks
        # end and unlink only once the loop has run past them.
        for lt in (plain, eager):
            lt.run(settle())
        expected = {t for lt in (plain, eager) for t in all_tasks(lt)}
        for lt in (plain, eager):
            lt.run(settle())
        snapshot = tbcollect.collect(threads=False, greenlets=False)
        # Both loops are idle now: each task waits for something nobody sets.
        graphs = {task_id(t): asyncio.capture_call_graph(t) for t in expected}
        check_snapshot(snapshot)
        assert snapshot.errors == []
        ours = {
            s.id: s
            for s in snapshot.stacks
            if s.kind == "task" and s.loop in (loop_id(plain.loop), loop_id(eager.loop))
        }
        names = {task_id(t): t.get_name() for t in expected}
        assert set(ours) == set(graphs), sorted(names.get(i, i) for i in set(ours) ^ set(graphs))
        assert len(ours) == 2 * 11
        for tid, graph in graphs.items():
            stack = ours[tid]
            assert stack.name == names[tid]
            got = [(f.function, f.lineno) for f in stack.frames]
            assert got == chain(graph), stack.name
            awaiters = {task_id(g.future) for g in graph.awaited_by}
            assert awaiters <= set(stack.awaited_by or []), (stack.name, awaiters)
        by_name = {s.name: s for s in ours.values()}
        assert len(by_name) == len(ours)
        for tag in ("", "eager-"):
            # What each scenario is about, spelled out.
            parent = by_name[f"{tag}group-parent"].id
            assert parent in by_name[f"{tag}group-event"].awaited_by
            assert by_name[f"{tag}awaits-child"].id in by_name[f"{tag}awaited-child"].awaited_by
            gatherer_id = by_name[f"{tag}gatherer"].id
            assert gatherer_id in by_name[f"{tag}gathered-queue"].awaited_by
            assert [f.function for f in by_name[f"{tag}lock-waiter"].frames][-1] == "Lock.acquire"
            assert [f.function for f in by_name[f"{tag}queue-waiter"].frames][-1] == "Queue.get"
            assert [f.function for f in by_name[f"{tag}event-waiter"].frames][-1] == "Event.wait"
        del keep

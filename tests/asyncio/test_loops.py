"""Loops other than the standard one, and 3.12+ eager tasks."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Dict, List

import pytest
import tbcollect

from tests.helpers import (
    LoopThread,
    check_snapshot,
    forever,
    loop_id,
    settle,
    short,
    task_id,
    task_stacks,
)


def test_uvloop_loop_in_a_thread():
    uvloop = pytest.importorskip("uvloop")
    with LoopThread(uvloop.new_event_loop, name="uv") as uv, LoopThread(name="std") as std:

        async def start() -> asyncio.Task[Any]:
            child = asyncio.create_task(
                forever(), name=f"{type(asyncio.get_running_loop()).__name__}-child"
            )

            async def parent() -> None:
                await child

            asyncio.create_task(parent(), name="uv-parent")
            await settle()
            return child

        child = uv.run(start())
        std.run(settle())
        snapshot = tbcollect.collect(greenlets=False)
        check_snapshot(snapshot)
        assert snapshot.errors == []
        stacks = task_stacks(snapshot)
        uv_child = stacks["Loop-child"]
        assert uv_child.loop == loop_id(uv.loop)
        # uvloop keeps its thread private; the interpreter's running-loop record finds it.
        assert uv_child.thread == uv.ident
        assert short(uv_child) == ["forever", "sleep"]
        # uvloop's timers are out of reach: the wait is named, its deadline is not.
        assert uv_child.awaiting == "sleep"
        assert stacks["uv-parent"].awaiting == "Task 'Loop-child'"
        assert uv_child.awaited_by == [stacks["uv-parent"].id]
        assert child is not None


def test_uvloop_dump_from_inside_a_task():
    uvloop = pytest.importorskip("uvloop")

    async def main() -> Dict[str, Any]:
        asyncio.create_task(forever(), name="bystander")
        await settle()
        text = await tbcollect.aio.dump(threads=False, greenlets=False)
        return {"text": text, "task": asyncio.current_task()}

    loop = uvloop.new_event_loop()
    try:
        result = loop.run_until_complete(main())
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    me = task_id(result["task"])
    assert f"[{me}] (running, at test_loops.py:" in result["text"]
    assert "awaiting sleep" in result["text"]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in 3.12")
def test_eager_tasks():
    seen: List[Dict[str, Any]] = []

    async def sleeper() -> None:
        await asyncio.sleep(3600)

    async def observer() -> None:
        # Runs eagerly inside create_task(): the creating task is suspended
        # below it on the same thread, and this one is the running task.
        snapshot = tbcollect.collect(threads=False, greenlets=False)
        check_snapshot(snapshot)
        seen.append({s.name: s for s in snapshot.stacks})
        await asyncio.sleep(3600)

    async def main() -> Dict[str, Any]:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        eager = asyncio.create_task(sleeper(), name="eager-sleeper")
        assert not eager.done()
        watcher = asyncio.create_task(observer())
        snapshot = tbcollect.collect(threads=False, greenlets=False)
        check_snapshot(snapshot)
        result = {"after": task_stacks(snapshot), "me": asyncio.current_task(), "watcher": watcher}
        eager.cancel()
        watcher.cancel()
        await asyncio.gather(eager, watcher, return_exceptions=True)
        return result

    result = asyncio.run(main())
    after = result["after"]
    assert short(after["eager-sleeper"]) == ["sleeper", "sleep"]
    assert after["eager-sleeper"].awaiting.startswith("sleep (wakes in")
    during = {s.id: s for s in seen[0].values()}
    observer_stack = during[task_id(result["watcher"])]
    assert observer_stack.state == "running"
    assert short(observer_stack) == ["observer"]
    creator = during[task_id(result["me"])]
    assert creator.state == "pending"
    assert short(creator)[0] == "main"
    assert "observer" not in short(creator)

"""The asyncio backend on real event loops in real threads (issue #3)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import re
import sys
import threading
import time
import traceback
from typing import Any, Dict, List

import pytest
import tbcollect

from tests.helpers import (
    HANG_GUARD,
    LoopThread,
    check_snapshot,
    forever,
    loop_id,
    settle,
    short,
    task_id,
    task_stacks,
)


def collect_tasks(**options: Any) -> tbcollect.Snapshot:
    snapshot = tbcollect.collect(greenlets=False, **options)
    check_snapshot(snapshot)
    assert snapshot.errors == []
    return snapshot


@pytest.fixture
def lt():
    with LoopThread() as loop_thread:
        yield loop_thread


# --- where tasks are and what they are -------------------------------------


def test_two_loops_in_two_threads():
    with LoopThread(name="loop-a") as a, LoopThread(name="loop-b") as b:

        async def start(label: str) -> None:
            for i in range(2):
                asyncio.create_task(forever(), name=f"{label}-{i}")
            await settle()

        a.run(start("a"))
        b.run(start("b"))
        data = check_snapshot(collect_tasks())
        tasks = {s["name"]: s for s in data["stacks"] if s["kind"] == "task"}
        for label, lt_ in (("a", a), ("b", b)):
            for i in range(2):
                stack = tasks[f"{label}-{i}"]
                assert stack["thread"] == lt_.ident
                assert stack["loop"] == loop_id(lt_.loop)
                assert stack["state"] == "pending"
                assert stack["id"].startswith("task:0x")
        assert loop_id(a.loop) != loop_id(b.loop)
        threads = {s["id"] for s in data["stacks"] if s["kind"] == "thread"}
        assert {f"thread:{a.ident}", f"thread:{b.ident}"} <= threads


def test_three_deep_chain_shows_every_coroutine(lt):
    async def inner() -> None:
        await asyncio.sleep(3600)

    async def middle() -> None:
        await inner()

    async def outer() -> None:
        await middle()

    async def start() -> None:
        asyncio.create_task(outer(), name="chain")
        await settle()

    lt.run(start())
    stack = task_stacks(collect_tasks())["chain"]
    assert short(stack) == ["outer", "middle", "inner", "sleep"]
    assert stack.frames[0].filename == __file__
    assert stack.frames[-1].filename.endswith("tasks.py")
    assert stack.awaiting is not None
    match = re.fullmatch(r"sleep \(wakes in (\d+\.\d) s\)", stack.awaiting)
    assert match and 0 < float(match.group(1)) <= 3600, stack.awaiting
    assert stack.state == "pending"
    assert stack.awaited_by == []
    assert stack.frames_omitted == 0

    shallow = task_stacks(tbcollect.collect(threads=False, greenlets=False, max_depth=2))["chain"]
    assert short(shallow) == ["inner", "sleep"]
    assert shallow.frames_omitted == 2


@pytest.mark.fast_paths_only
@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="before 3.11 every coroutine has a frame object"
)
def test_capture_makes_no_frame_objects_for_suspended_coroutines(lt):
    # From 3.11 a suspended coroutine has no frame object until something
    # asks for one, and once made it stays. Capture reads the interpreter
    # frame instead: a dump of 200 tasks, 3 coroutines each, leaves no 600
    # frame objects behind (they are not GC-tracked: counted as blocks).
    async def inner() -> None:
        await asyncio.sleep(3600)

    async def outer() -> None:
        await inner()

    async def start() -> None:
        for i in range(200):
            asyncio.create_task(outer(), name=f"lean-{i}")
        await settle()

    lt.run(start())
    before = sys.getallocatedblocks()
    tbcollect.collect(threads=False, greenlets=False)
    left = sys.getallocatedblocks() - before
    assert left < 200, f"{left} blocks left behind by the first dump of 200 tasks"
    assert short(task_stacks(collect_tasks())["lean-7"]) == ["outer", "inner", "sleep"]


def test_task_awaiting_a_task(lt):
    async def start() -> Dict[str, Any]:
        child = asyncio.create_task(forever(), name="child")

        async def parent_body() -> None:
            await child

        parent = asyncio.create_task(parent_body(), name="parent")
        await settle()
        return {"child": child, "parent": parent}

    tasks = lt.run(start())
    stacks = task_stacks(collect_tasks())
    assert stacks["parent"].awaiting == "Task 'child'"
    assert stacks["child"].awaited_by == [task_id(tasks["parent"])]
    assert stacks["parent"].awaited_by == []
    text = tbcollect.collect(threads=False, greenlets=False).to_text()
    assert 'awaited by Task "parent"' in text
    assert '  "parent" [' in text and '  └─ "child" [' in text


def test_links_across_loops_and_threads():
    """`run_coroutine_threadsafe`: a task of another loop, or a plain thread
    blocked in `.result()`, waits for the task it started."""

    async def remote(name: str) -> None:
        asyncio.current_task().set_name(name)  # type: ignore[union-attr]
        await forever()

    with LoopThread(name="loop-a") as a, LoopThread(name="loop-b") as b:

        async def local() -> None:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(remote("remote"), b.loop))

        async def start() -> asyncio.Task[Any]:
            task = asyncio.create_task(local(), name="local")
            await settle()
            return task

        local_task = a.run(start())
        pending = asyncio.run_coroutine_threadsafe(remote("remote-2"), b.loop)

        def wait_for_remote() -> None:
            try:
                pending.result(HANG_GUARD)
            except concurrent.futures.CancelledError:
                pass  # how the test ends it

        blocked = threading.Thread(target=wait_for_remote, name="blocked")
        blocked.start()
        assert blocked.ident is not None
        b.run(settle())
        deadline = time.monotonic() + HANG_GUARD  # a hang guard, not a timing assertion

        def waiting() -> bool:
            frame = sys._current_frames().get(blocked.ident)
            return any(f.filename.endswith("_base.py") for f in traceback.extract_stack(frame))

        while not waiting():
            assert time.monotonic() < deadline, "the thread never blocked"
            time.sleep(0.01)
        try:
            stacks = task_stacks(collect_tasks())
            assert stacks["local"].awaiting == "Task 'remote'"
            assert stacks["remote"].awaited_by == [task_id(local_task)]
            assert stacks["remote"].loop == loop_id(b.loop) != stacks["local"].loop
            assert stacks["remote-2"].awaited_by == [f"thread:{blocked.ident}"]
        finally:
            pending.cancel()
            blocked.join(HANG_GUARD)


def test_gather_of_three(lt):
    async def start() -> asyncio.Task[Any]:
        async def gatherer() -> None:
            await asyncio.gather(*(asyncio.create_task(forever(), name=f"g{i}") for i in range(3)))

        task = asyncio.create_task(gatherer(), name="gatherer")
        await settle()
        return task

    gatherer = lt.run(start())
    stacks = task_stacks(collect_tasks())
    assert stacks["gatherer"].awaiting == "gather of 3"
    for i in range(3):
        assert stacks[f"g{i}"].awaited_by == [task_id(gatherer)]


def test_gather_of_coroutines_and_nested_gathers(lt):
    async def start() -> asyncio.Task[Any]:
        async def gatherer() -> None:
            inner = asyncio.gather(forever(), forever())
            await asyncio.gather(inner, forever())

        task = asyncio.create_task(gatherer(), name="outer")
        await settle()
        return task

    outer = lt.run(start())
    snapshot = collect_tasks()
    stacks = task_stacks(snapshot)
    assert stacks["outer"].awaiting == "gather of 2"
    children = [s for s in snapshot.stacks if s.kind == "task" and s.name != "outer"]
    assert len(children) == 3  # two in the inner gather, one in the outer
    for child in children:
        assert child.awaited_by == [task_id(outer)], child


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is new in 3.11")
def test_task_group_of_two(lt):
    async def start() -> asyncio.Task[Any]:
        async def body() -> None:
            async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
                group.create_task(forever(), name="tg-1")
                group.create_task(forever(), name="tg-2")

        task = asyncio.create_task(body(), name="group-owner")
        await settle()
        return task

    owner = lt.run(start())
    stacks = task_stacks(collect_tasks())
    assert stacks["group-owner"].awaiting == "TaskGroup of 2"
    assert short(stacks["group-owner"])[-1] in ("__aexit__", "_aexit")
    for name in ("tg-1", "tg-2"):
        assert stacks[name].awaited_by == [task_id(owner)]


def test_synchronization_primitives(lt):
    async def start() -> Dict[str, Any]:
        event = asyncio.Event()
        lock = asyncio.Lock()
        queue: asyncio.Queue[int] = asyncio.Queue()
        condition = asyncio.Condition()
        await lock.acquire()

        async def on_event() -> None:
            await event.wait()

        async def on_lock() -> None:
            async with lock:
                pass

        async def on_queue() -> None:
            await queue.get()

        async def on_condition() -> None:
            async with condition:
                await condition.wait()

        for fn in (on_event, on_lock, on_queue, on_condition):
            asyncio.create_task(fn(), name=fn.__name__)
        await settle()
        return {"keep": (event, lock, queue, condition)}

    keep = lt.run(start())
    stacks = task_stacks(collect_tasks())
    assert stacks["on_event"].awaiting == "Event.wait"
    assert stacks["on_lock"].awaiting == "Lock.acquire"
    assert stacks["on_queue"].awaiting == "Queue.get"
    assert stacks["on_condition"].awaiting == "Condition.wait"
    assert short(stacks["on_queue"]) == ["on_queue", "get"]
    del keep


def test_async_generator_being_iterated(lt):
    async def ticks():
        for i in range(3):
            await asyncio.sleep(3600)
            yield i

    async def consumer() -> None:
        async for _ in ticks():
            pass

    async def start() -> None:
        asyncio.create_task(consumer(), name="consumer")
        await settle()

    lt.run(start())
    stack = task_stacks(collect_tasks())["consumer"]
    assert short(stack) == ["consumer", "ticks", "sleep"]
    assert stack.awaiting is not None and stack.awaiting.startswith("sleep (wakes in")


def test_to_thread_links_to_the_worker_thread(lt):
    started = threading.Event()
    release = threading.Event()
    worker: List[int] = []

    def blocking() -> None:
        worker.append(threading.get_ident())
        started.set()
        release.wait(HANG_GUARD)

    async def start() -> None:
        async def offload() -> None:
            await asyncio.to_thread(blocking)

        asyncio.create_task(offload(), name="offload")

        async def executor() -> None:
            await asyncio.get_running_loop().run_in_executor(None, release.wait, HANG_GUARD)

        asyncio.create_task(executor(), name="executor")
        await settle()

    lt.run(start())
    try:
        assert started.wait(HANG_GUARD)
        snapshot = collect_tasks()
        stacks = task_stacks(snapshot)
        assert stacks["offload"].awaiting == f"to_thread / run_in_executor (thread:{worker[0]})"
        worker_stack = next(s for s in snapshot.stacks if s.id == f"thread:{worker[0]}")
        assert "blocking" in short(worker_stack)
        assert stacks["executor"].awaiting is not None
        assert stacks["executor"].awaiting.startswith("to_thread / run_in_executor")
    finally:
        release.set()


def test_wait_for_with_timeout(lt):
    async def start() -> Dict[str, Any]:
        inner = asyncio.create_task(forever(), name="slow")

        async def waiter() -> None:
            await asyncio.wait_for(inner, timeout=600)

        outer = asyncio.create_task(waiter(), name="wait-for")
        await settle()
        return {"inner": inner, "outer": outer}

    tasks = lt.run(start())
    stacks = task_stacks(collect_tasks())
    awaiting = stacks["wait-for"].awaiting
    assert awaiting is not None
    match = re.fullmatch(r"wait_for Task 'slow' \(times out in (\d+\.\d) s\)", awaiting)
    assert match and 0 < float(match.group(1)) <= 600, awaiting
    assert stacks["slow"].awaited_by == [task_id(tasks["outer"])]


def test_wait_for_a_coroutine_and_a_timeout_around_a_sleep(lt):
    async def start() -> str:
        async def fetch() -> None:
            await forever()

        async def with_wait_for() -> None:
            await asyncio.wait_for(fetch(), timeout=600)

        async def with_timeout(seconds: float) -> None:
            async with asyncio.timeout(seconds):
                await forever()

        asyncio.create_task(with_wait_for(), name="wait-for")
        if sys.version_info >= (3, 11):
            asyncio.create_task(with_timeout(600), name="timeout")
            asyncio.create_task(with_timeout(7200), name="late-timeout")
            asyncio.create_task(forever(), name="plain-sleep")
        await settle()
        return fetch.__qualname__

    fetch = lt.run(start())
    stacks = task_stacks(collect_tasks())
    awaiting = stacks["wait-for"].awaiting
    assert awaiting is not None
    if sys.version_info >= (3, 12):
        # wait_for awaits fetch() in place: the task waits for fetch, with a
        # timeout, not for the sleep inside it.
        name = re.escape(fetch)
    else:
        # Before 3.12, wait_for runs fetch() in a task of its own.
        name = r"Task '[^']+'"
    match = re.fullmatch(rf"wait_for {name} \(times out in (\d+\.\d) s\)", awaiting)
    assert match and 0 < float(match.group(1)) <= 600, awaiting
    if sys.version_info >= (3, 11):
        # The timeout ends the hour's sleep first, and the text says so
        # (never the timeout's time as a wake time).
        awaiting = stacks["timeout"].awaiting
        assert awaiting is not None
        match = re.fullmatch(r"sleep \(times out in (\d+\.\d) s\)", awaiting)
        assert match and 0 < float(match.group(1)) <= 600, awaiting
        # A timeout after the wake time ends nothing; a sleep in the same
        # loop without one says when it wakes.
        for name in ("late-timeout", "plain-sleep"):
            awaiting = stacks[name].awaiting
            assert awaiting is not None
            match = re.fullmatch(r"sleep \(wakes in (\d+\.\d) s\)", awaiting)
            assert match and 600 < float(match.group(1)) <= 3600, awaiting


def test_asyncio_wait_on_several(lt):
    async def start() -> asyncio.Task[Any]:
        async def waiter() -> None:
            await asyncio.wait([asyncio.create_task(forever(), name=f"w{i}") for i in range(3)])

        task = asyncio.create_task(waiter(), name="waiter")
        await settle()
        return task

    waiter = lt.run(start())
    stacks = task_stacks(collect_tasks())
    assert stacks["waiter"].awaiting == "wait on 3"
    for i in range(3):
        assert stacks[f"w{i}"].awaited_by == [task_id(waiter)]


def test_shield(lt):
    async def start() -> asyncio.Task[Any]:
        async def shielded() -> None:
            await asyncio.shield(asyncio.create_task(forever(), name="precious"))

        task = asyncio.create_task(shielded(), name="shielder")
        await settle()
        return task

    shielder = lt.run(start())
    stacks = task_stacks(collect_tasks())
    assert stacks["shielder"].awaiting == "shield of Task 'precious'"
    assert stacks["precious"].awaited_by == [task_id(shielder)]


def test_done_and_cancelled_tasks_only_when_asked(lt):
    async def start() -> List[Any]:
        async def quick() -> int:
            return 1

        done = asyncio.create_task(quick(), name="finished")
        cancelled = asyncio.create_task(forever(), name="cancelled")
        await settle()
        cancelled.cancel()
        await settle()
        assert done.done() and cancelled.cancelled()
        return [done, cancelled]  # kept alive: the registry holds tasks weakly

    keep = lt.run(start())
    names = set(task_stacks(collect_tasks()))
    assert "finished" not in names and "cancelled" not in names
    if sys.version_info >= (3, 14):
        # The interpreter unlinks a native task once done: nothing lists it.
        snapshot = tbcollect.collect(greenlets=False, done_tasks=True)
        assert "finished" not in task_stacks(snapshot)
        assert any(e.startswith("tasks incomplete: CPython 3.14+") for e in snapshot.errors)
        assert "(tasks INCOMPLETE, see errors)" in snapshot.to_text().splitlines()[0]
        return
    stacks = task_stacks(collect_tasks(done_tasks=True))
    assert stacks["finished"].state == "done"
    assert stacks["cancelled"].state == "cancelled"
    assert stacks["finished"].frames == [] and stacks["finished"].awaiting is None
    del keep


def test_cancelling_state(lt):
    async def start() -> Dict[str, str]:
        victim = asyncio.create_task(forever(), name="victim")
        await settle()
        victim.cancel()  # requested; it has not run since
        snapshot = tbcollect.collect(threads=False, greenlets=False)
        check_snapshot(snapshot)
        return {s.name: s.state for s in snapshot.stacks}

    states = lt.run(start())
    assert states["victim"] == "cancelling"


def test_running_task_in_another_thread(lt):
    entered = threading.Event()
    release = threading.Event()

    async def hog() -> None:
        await asyncio.sleep(0)
        entered.set()
        release.wait(HANG_GUARD)  # blocks the whole loop, on purpose

    async def start() -> None:
        asyncio.create_task(hog(), name="hog")

    lt.run(start())
    try:
        assert entered.wait(HANG_GUARD)
        snapshot = collect_tasks()
        stack = task_stacks(snapshot)["hog"]
        assert stack.state == "running"
        assert stack.thread == lt.ident
        assert stack.awaiting is None
        assert short(stack)[0] == "hog"
        assert short(stack)[-1] == "wait"  # threading.Event.wait, where it is right now
        thread = next(s for s in snapshot.stacks if s.id == f"thread:{lt.ident}")
        assert "run_forever" in short(thread)  # the thread still shows the loop machinery
    finally:
        release.set()


def test_dump_from_inside_a_task():
    async def main() -> Dict[str, Any]:
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        snapshot = tbcollect.collect(greenlets=False)
        return {"snapshot": snapshot, "line": line, "task": asyncio.current_task()}

    result = asyncio.run(main())
    snapshot = result["snapshot"]
    check_snapshot(snapshot)
    stack = next(s for s in snapshot.stacks if s.id == task_id(result["task"]))
    assert stack.state == "running"
    assert stack.thread == threading.get_ident()
    assert short(stack) == ["main"]
    assert stack.frames[-1].lineno == result["line"]
    assert stack.frames[-1].source == "snapshot = tbcollect.collect(greenlets=False)"


def test_loop_not_running_has_no_thread():
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(forever(), name="never-started")
        stack = task_stacks(collect_tasks())["never-started"]
        assert stack.thread is None
        assert stack.state == "pending"
        assert short(stack) == ["forever"]  # its frame, before the first line ran
        assert stack.awaiting is None
        assert stack.loop == loop_id(loop)
        text = tbcollect.collect(threads=False, greenlets=False).to_text()
        assert f"Task tree of {loop_id(loop)} (not running):" in text
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    finally:
        loop.close()


@pytest.mark.slow
def test_tasks_come_and_go_while_another_thread_collects(lt):
    stop = threading.Event()

    async def churn() -> int:
        made = 0
        while not stop.is_set():
            batch = [asyncio.create_task(asyncio.sleep(0), name=f"short-{i}") for i in range(20)]
            await asyncio.gather(*batch)
            made += len(batch)
            await asyncio.sleep(0)
        return made

    future = asyncio.run_coroutine_threadsafe(churn(), lt.loop)
    try:
        for _ in range(25):
            snapshot = tbcollect.collect(greenlets=False)
            assert snapshot.errors == []
            check_snapshot(snapshot)
            for stack in snapshot.stacks:
                if stack.kind == "task":
                    assert stack.state in ("running", "pending", "cancelling")
    finally:
        stop.set()
    assert future.result(HANG_GUARD) > 0


def test_task_subclass_custom_factory_and_pure_python_task(lt):
    calls: List[str] = []

    class Spy(asyncio.Task):  # type: ignore[type-arg]
        def get_name(self) -> str:
            calls.append("get_name")
            raise RuntimeError("capture must not call Task methods")

        def get_stack(self, *, limit: Any = None) -> Any:
            calls.append("get_stack")
            raise RuntimeError("capture must not call Task methods")

        def __repr__(self) -> str:
            calls.append("repr")
            raise RuntimeError("capture must not repr")

    async def start() -> List[Any]:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(lambda loop, coro, **kw: Spy(coro, loop=loop, **kw))
        spied = asyncio.create_task(forever(), name="spied")
        py_task = asyncio.tasks._PyTask(forever(), loop=loop, name="pure-python")  # type: ignore[attr-defined]
        await settle()
        loop.set_task_factory(None)
        return [spied, py_task]

    keep = lt.run(start())
    stacks = task_stacks(collect_tasks())
    for name in ("spied", "pure-python"):
        assert short(stacks[name]) == ["forever", "sleep"]
        assert stacks[name].awaiting is not None
        assert stacks[name].awaiting.startswith("sleep (wakes in")
        assert stacks[name].thread == lt.ident
    assert calls == []

    async def finish() -> None:
        # Cancelled and awaited: a pending task dropped by its last holder
        # is "destroyed but pending" (3.14 warned of the pure-Python one).
        for task in keep:
            task.cancel()
        await asyncio.gather(*keep, return_exceptions=True)

    lt.run(finish())


class OwnClockLoop(asyncio.SelectorEventLoop):
    """A loop whose clock is not `BaseEventLoop.time`: capture cannot read it."""

    def time(self) -> float:
        return super().time() + 1000.0


def test_sleep_wake_times_come_from_each_sleeps_timer(lt):
    # 3.11+ read a sleep's timer from the sleep's frame, other versions and
    # other waits from the loop's timer heap: both tell the same time.
    async def nap() -> None:
        await asyncio.sleep(250)

    async def start() -> None:
        asyncio.create_task(asyncio.sleep(1234.5), name="bare-sleep")
        asyncio.create_task(nap(), name="nap")
        await settle()

    lt.run(start())
    stacks = task_stacks(collect_tasks())
    for name, delay in [("bare-sleep", 1234.5), ("nap", 250.0)]:
        awaiting = stacks[name].awaiting or ""
        match = re.fullmatch(r"sleep \(wakes in (\d+\.\d) s\)", awaiting)
        assert match and delay - 60 < float(match.group(1)) <= delay, awaiting


def test_a_loop_with_a_clock_of_its_own_shows_no_wake_time():
    with LoopThread(OwnClockLoop, name="own-clock") as other:

        async def start() -> None:
            asyncio.create_task(asyncio.sleep(500), name="own-clock-sleep")
            await settle()

        other.run(start())
        stack = task_stacks(collect_tasks())["own-clock-sleep"]
        assert stack.awaiting == "sleep"


def test_tasks_are_listed_by_loop_then_name_in_numeric_order(lt):
    async def start() -> None:
        for n in (10, 2, 1):
            asyncio.create_task(forever(), name=f"job-{n}")
        await settle()

    lt.run(start())
    snapshot = collect_tasks()
    names = [s.name for s in snapshot.stacks if s.kind == "task" and s.name.startswith("job-")]
    assert names == ["job-1", "job-2", "job-10"]


@pytest.mark.parametrize("huge", [False, True], ids=["small-numbers", "number-over-32-bits"])
def test_tasks_are_listed_by_stem_number_then_full_name(lt, huge):
    # Numbers that need more than 32 bits take the wide sort key; both
    # orders must agree.
    names = ["job-10", "job-2", "job-1", "job-01", "b-1", "a-3", "plain"]
    if huge:
        names.append("job-5000000000")

    async def start() -> None:
        for name in names:
            asyncio.create_task(forever(), name=name)
        await settle()

    lt.run(start())
    snapshot = collect_tasks()
    listed = [s.name for s in snapshot.stacks if s.kind == "task" and s.name in names]
    expected = ["a-3", "b-1", "job-01", "job-1", "job-2", "job-10"]
    expected += ["job-5000000000"] if huge else []
    assert listed == expected + ["plain"]


def test_json_carries_the_task_fields(lt):
    async def start() -> None:
        child = asyncio.create_task(forever(), name="c")

        async def parent() -> None:
            await child

        asyncio.create_task(parent(), name="p")
        await settle()

    lt.run(start())
    snapshot = collect_tasks()
    data = check_snapshot(snapshot)
    tasks = [s for s in data["stacks"] if s["kind"] == "task"]
    for task in tasks:
        assert set(task) >= {"loop", "awaiting", "awaited_by", "thread", "state"}
    round_trip = tbcollect.load(snapshot.to_json())
    assert round_trip.to_dict() == snapshot.to_dict()

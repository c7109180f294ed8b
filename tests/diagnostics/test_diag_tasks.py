"""Tasks awaiting each other, a task and a thread waiting for each other
through to_thread and run_coroutine_threadsafe, and a pile-up behind one
asyncio.Lock: real event loops, in child processes where the deadlock
cannot be undone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Dict, List

import tbcollect

from tests.helpers import check_snapshot, frame_name, run_python

PRELUDE = """
import asyncio, os, sys, threading
import tbcollect

def report(snap):
    sys.stdout.write(snap.to_json())
    sys.stdout.flush()
    os._exit(0)  # the deadlocked units can never finish

async def until_deadlock():
    while True:
        snap = tbcollect.collect()
        if snap.deadlocks:
            report(snap)
        await asyncio.sleep(0.01)
"""


def _run(body: str) -> tbcollect.Snapshot:
    proc = run_python(PRELUDE + body)
    assert proc.returncode == 0, proc.stderr
    snap = tbcollect.load(proc.stdout)
    check_snapshot(snap)
    return snap


def _named(snap: tbcollect.Snapshot) -> Dict[str, tbcollect.Stack]:
    return {s.name: s for s in snap.stacks}


TASKS = """
tasks = {}

async def wait_for(name):
    await asyncio.sleep(0)
    await tasks[name]

async def main():
    tasks["left"] = asyncio.ensure_future(wait_for("right"))
    tasks["left"].set_name("left")
    tasks["right"] = asyncio.ensure_future(wait_for("left"))
    tasks["right"].set_name("right")
    await until_deadlock()

asyncio.run(main())
"""


def test_two_tasks_awaiting_each_other():
    snap = _run(TASKS)
    named = _named(snap)
    left, right = named["left"], named["right"]
    assert [sorted(c) for c in snap.deadlocks] == [sorted([left.id, right.id])]
    assert left.awaiting == "Task 'right'" and right.awaiting == "Task 'left'"
    finding = snap.diagnosis["findings"][0]
    assert finding["kind"] == "deadlock"
    assert finding["text"].startswith("Deadlock: Task ")


THREAD_AND_TASK = """
outer = None

async def back_to_outer():
    await outer  # waits for the task that waits for the thread that waits for us

def in_worker(loop):
    threading.current_thread().name = "worker"
    return asyncio.run_coroutine_threadsafe(back_to_outer(), loop).result()

async def go():
    await asyncio.to_thread(in_worker, asyncio.get_running_loop())

async def main():
    global outer
    outer = asyncio.ensure_future(go())
    outer.set_name("outer")
    await until_deadlock()

asyncio.run(main())
"""


def test_a_thread_and_tasks_in_one_cycle_through_to_thread():
    snap = _run(THREAD_AND_TASK)
    named = _named(snap)
    outer, worker = named["outer"], named["worker"]
    (cycle,) = snap.deadlocks
    assert len(cycle) == 3 and outer.id in cycle and worker.id in cycle
    kinds = sorted(s.kind for s in snap.stacks if s.id in cycle)
    assert kinds == ["task", "task", "thread"]
    # The task waits for the worker thread, the thread for the task it feeds.
    assert outer.waiting_for == [worker.id]
    assert worker.awaiting is not None and worker.awaiting.startswith("Future.result (Task ")
    text = snap.to_text()
    assert "Deadlock: " in text.split("\n\n")[1]


def test_three_hundred_tasks_behind_one_asyncio_lock():
    async def main() -> tbcollect.Snapshot:
        lock = asyncio.Lock()
        release = asyncio.Event()

        async def hold() -> None:
            async with lock:
                await release.wait()

        async def want() -> None:
            async with lock:
                pass

        holder = asyncio.ensure_future(hold())
        holder.set_name("lock-holder")
        await asyncio.sleep(0)
        waiters: List[asyncio.Task[None]] = [asyncio.ensure_future(want()) for _ in range(300)]
        await asyncio.sleep(0.01)
        snap = tbcollect.collect()
        release.set()
        await asyncio.gather(holder, *waiters)
        return snap

    snap = asyncio.run(main())
    data = check_snapshot(snap)
    holder = _named(snap)["lock-holder"]
    # The holder is the task inside the `async with` of the lock.
    assert len(holder.holds) == 1 and holder.holds[0].startswith("asyncio.Lock <0x"), holder
    address = holder.holds[0].split()[1]
    expected = f'Lock.acquire {address} (held by Task "lock-holder")'
    waiting = [s for s in snap.stacks if s.kind == "task" and s.awaiting == expected]
    assert len(waiting) == 300
    assert all(s.waiting_for == [holder.id] for s in waiting)
    group = data["diagnosis"]["groups"][0]
    assert (group["kind"], group["count"]) == ("task", 300)
    assert group["awaiting"].startswith("Lock.acquire <0x")
    # The awaiting text is named from file and function on every version;
    # the frame itself is only "acquire" before 3.11 (no co_qualname).
    assert group["where"] == f"want → {frame_name('Lock.acquire')}"
    text = snap.to_text()
    assert "300 tasks in want" in text
    finding = [f for f in data["diagnosis"]["findings"] if f["kind"] == "lock_wait"][0]
    assert finding["text"] == (
        f"300 tasks wait in Lock.acquire {address} for Task "
        f'"lock-holder", which holds asyncio.Lock {address}'
    )
    assert finding["stacks"][0] == holder.id


def test_an_asyncio_lock_taken_without_async_with_names_no_holder():
    async def main() -> tbcollect.Snapshot:
        lock = asyncio.Lock()
        other = asyncio.Lock()
        release = asyncio.Event()

        async def bare() -> None:
            await lock.acquire()  # nothing on any stack says who took it
            try:
                await release.wait()
            finally:
                lock.release()

        async def near(lock_too: asyncio.Lock) -> None:
            async with other:  # another lock's block, with `lock` as a local
                await release.wait()

        async def want() -> None:
            async with lock:
                pass

        tasks = [asyncio.ensure_future(bare()), asyncio.ensure_future(near(lock))]
        await asyncio.sleep(0)
        tasks += [asyncio.ensure_future(want()) for _ in range(3)]
        await asyncio.sleep(0.01)
        snap = tbcollect.collect()
        release.set()
        await asyncio.gather(*tasks)
        return snap

    snap = asyncio.run(main())
    check_snapshot(snap)
    waiting = [s for s in snap.stacks if s.kind == "task" and s.awaiting == "Lock.acquire"]
    assert len(waiting) == 3
    assert all(not s.waiting_for for s in waiting)
    assert [s.holds for s in snap.stacks if s.holds] == []


def test_the_tree_groups_by_what_tasks_await_with_the_user_line_and_a_wake_range():
    async def main() -> tbcollect.Snapshot:
        never = asyncio.Event()
        conns: List[asyncio.StreamWriter] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conns.append(writer)  # accepted, never written to

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        async def event_waiter() -> None:
            await never.wait()  # EVENT LINE

        async def reader() -> None:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            try:
                await r.read(1)  # READ LINE
            finally:
                w.close()

        async def sleeper(n: int) -> None:
            await asyncio.sleep(3600 + n / 10)  # SLEEP LINE

        async def parent() -> None:
            groups = [
                [event_waiter() for _ in range(70)],
                [reader() for _ in range(80)],
                [sleeper(n) for n in range(80)],
            ]
            names = ["event-waiter", "reader", "sleeper"]
            tasks = [asyncio.ensure_future(c) for group in groups for c in group]
            for t, name in zip(tasks, [n for n, g in zip(names, groups) for _ in g]):
                t.set_name(name)
            await asyncio.gather(*tasks)

        top = asyncio.ensure_future(parent())
        top.set_name("parent")
        while len(conns) < 80:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        snap = tbcollect.collect()
        top.cancel()
        for w in conns:
            w.close()
        server.close()
        try:
            await top
        except asyncio.CancelledError:
            pass
        return snap

    snap = asyncio.run(main())
    check_snapshot(snap)
    source = Path(__file__).read_text().splitlines()

    def line_of(marker: str) -> int:
        return next(i + 1 for i, text in enumerate(source) if text.endswith(f"# {marker}"))

    text = snap.to_text()
    tree = [line for line in text.splitlines() if "×" in line]
    here = __file__.rsplit("/", 1)[-1]
    event = [line for line in tree if '70 × "event-waiter"' in line]
    reads = [line for line in tree if '80 × "reader"' in line]
    sleeps = [line for line in tree if '80 × "sleeper"' in line]
    # One line each: Event waiters and reads apart, sleepers not split by wake time.
    assert len(event) == len(reads) == len(sleeps) == 1, "\n".join(tree)
    assert "awaiting Event.wait" in event[0]
    assert f"at {here}:{line_of('EVENT LINE')}" in event[0]
    assert f"at {here}:{line_of('READ LINE')}" in reads[0]
    assert "Event.wait" not in reads[0]
    assert "awaiting sleep (wakes in 3599." in sleeps[0] and "–3607." in sleeps[0], sleeps
    assert f"at {here}:{line_of('SLEEP LINE')}" in sleeps[0]

"""The fast paths change how a capture reads, never what it finds.

``TBCOLLECT_FASTPATHS=0`` turns every fast path off (see
src/capture/fastpaths.rs). One process holds threads, greenlets, gevent
greenlets with spawn records and asyncio tasks still (every thread waits on
something that will not come, every task on a far deadline) and captures
itself both ways, twice: the four snapshots must be the same but for when
they were taken.
"""

from __future__ import annotations

import json
import re
import sys

import pytest

from tests.helpers import run_python

FROZEN = r"""
import asyncio, json, os, sys, threading
import gevent, greenlet
import tbcollect
import tbcollect._tbcollect as native

never = threading.Event()

def parked_thread(depth):
    if depth:
        return parked_thread(depth - 1)
    never.wait()

threads = [threading.Thread(target=parked_thread, args=(i,), name=f"parked-{i}", daemon=True)
           for i in range(3)]
for t in threads:
    t.start()

def park():
    greenlet.getcurrent().parent.switch()

plain = [greenlet.greenlet(park) for _ in range(20)]
for g in plain:
    g.switch()

def sleeper(n):
    gevent.sleep(1000 + n)

spawned = [gevent.spawn(sleeper, i) for i in range(20)]
gevent.sleep(0)

started = threading.Event()

async def leaf(n):
    await asyncio.sleep(1000 + n)

async def waits_on_queue(q):
    await q.get()

async def holds(lock, ev):
    async with lock:
        await ev.wait()

async def main():
    q, lock, ev = asyncio.Queue(), asyncio.Lock(), asyncio.Event()
    tasks = [asyncio.ensure_future(leaf(i)) for i in range(30)]
    tasks.append(asyncio.ensure_future(asyncio.gather(leaf(1), leaf(2))))
    tasks.append(asyncio.ensure_future(waits_on_queue(q)))
    tasks += [asyncio.ensure_future(holds(lock, ev)) for _ in range(2)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    started.set()
    await asyncio.sleep(1000)

loop = asyncio.new_event_loop()
loop_thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="loop",
                               daemon=True)
loop_thread.start()
started.wait()

# Each parked thread must be in its wait before the first capture.
for t in threads:
    while True:
        frame = sys._current_frames().get(t.ident)
        if frame is not None and frame.f_code.co_name == "wait":
            break
        threading.Event().wait(0.01)

# ... and asleep as the OS sees it, as must the loop's thread (its frame is in
# select() a moment before the thread blocks): captures report OS states.
def os_state(t):
    with open(f"/proc/self/task/{t.native_id}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]

for t in threads + [loop_thread]:
    while os_state(t) != "S":
        threading.Event().wait(0.01)

def capture(switch):
    os.environ["TBCOLLECT_FASTPATHS"] = switch
    snapshot = tbcollect.collect()
    return {"snapshot": snapshot.to_dict(), "scan": native._heap_scan_source()}

print(json.dumps([capture(s) for s in ("1", "0", "1", "0")]))
"""


def _still(snapshot):
    """The snapshot without what changes with the time it was taken: when,
    and how long each timer has left (the timer itself must be found)."""
    snapshot = dict(snapshot)
    snapshot.pop("created")
    snapshot.pop("pid")
    for stack in snapshot["stacks"]:
        if stack.get("awaiting"):
            awaiting = re.sub(r"wakes in [0-9.]+ s", "wakes in _ s", stack["awaiting"])
            # A gevent sleep's (and a thread's) time left moves the same way.
            stack["awaiting"] = re.sub(r"\([0-9.]+ s left\)", "(_ s left)", awaiting)
    return snapshot


def test_every_capture_agrees_with_fast_paths_on_and_off():
    proc = run_python(FROZEN)
    assert proc.returncode == 0, proc.stderr
    on, off, on_again, off_again = json.loads(proc.stdout)
    assert off["scan"] != "generation lists"
    if sys.version_info < (3, 14):
        assert on["scan"] == "generation lists"
    snapshot = _still(on["snapshot"])
    assert snapshot["errors"] == []
    kinds = [s["kind"] for s in snapshot["stacks"]]
    sleeping = [s for s in snapshot["stacks"] if "wakes in _ s" in (s.get("awaiting") or "")]
    assert len(sleeping) >= 32
    assert kinds.count("task") >= 34
    assert kinds.count("greenlet") >= 40
    gevent_sleeps = [s for s in snapshot["stacks"] if s.get("awaiting") == "sleep (_ s left)"]
    assert len(gevent_sleeps) == 20
    assert kinds.count("thread") >= 5
    assert _still(off["snapshot"]) == snapshot
    assert _still(on_again["snapshot"]) == snapshot
    assert _still(off_again["snapshot"]) == snapshot


@pytest.mark.fast_paths_only
def test_the_switch_is_on_unless_set_to_zero():
    code = "import tbcollect._tbcollect as n; print(n._heap_scan_source())"
    for value, expected in (("", "generation lists"), ("1", "generation lists")):
        proc = run_python(code, env={"TBCOLLECT_FASTPATHS": value})
        assert proc.returncode == 0, proc.stderr
        if sys.version_info < (3, 14):
            assert proc.stdout.strip() == expected
    proc = run_python(code, env={"TBCOLLECT_FASTPATHS": "0"})
    assert proc.stdout.strip() != "generation lists"

"""Threads say what they wait for, who holds the lock they wait on, and
deadlocks over RLocks are found: real threads, real locks."""

from __future__ import annotations

import json
import queue
import re
import socket
import sys
import threading
from typing import Dict, List, Optional

import tbcollect

from tests.helpers import check_snapshot, run_python, wait_until


def _by_name(snap: tbcollect.Snapshot) -> Dict[str, tbcollect.Stack]:
    return {s.name: s for s in snap.stacks if s.kind == "thread"}


DEADLOCK = """
import json, os, sys, threading, time
import tbcollect

first = threading.RLock()
second = threading.RLock()
both = threading.Barrier(2)

def take(a, b):
    with a:
        both.wait()
        with b:
            pass

threading.Thread(target=take, args=(first, second), name="one", daemon=True).start()
threading.Thread(target=take, args=(second, first), name="two", daemon=True).start()
while True:
    snap = tbcollect.collect()
    if snap.deadlocks:
        break
    time.sleep(0.01)
sys.stdout.write(snap.to_json())
sys.stdout.write("\\n=====\\n")
sys.stdout.write(snap.to_text())
sys.stdout.flush()
os._exit(0)  # the two threads can never be joined
"""


def test_two_threads_deadlocked_over_two_rlocks():
    proc = run_python(DEADLOCK)
    assert proc.returncode == 0, proc.stderr
    raw, text = proc.stdout.split("\n=====\n")
    snap = tbcollect.load(raw)
    check_snapshot(snap)
    names = _by_name(snap)
    one, two = names["one"], names["two"]
    assert sorted(snap.deadlocks[0]) == sorted([one.id, two.id])
    # Each frame calls the lock it waits for `b`; the address tells which.
    assert re.fullmatch(r'RLock\.acquire b <0x[0-9a-f]+> \(held by Thread "two"\)', one.awaiting)
    assert re.fullmatch(r'RLock\.acquire b <0x[0-9a-f]+> \(held by Thread "one"\)', two.awaiting)
    assert one.waiting_for == [two.id] and two.waiting_for == [one.id]
    # What one waits for is what two holds, and the other way round.
    assert two.holds == ["RLock " + one.awaiting.split("acquire ")[1].split(" (")[0]]
    assert one.holds == ["RLock " + two.awaiting.split("acquire ")[1].split(" (")[0]]
    kinds = [f["kind"] for f in snap.diagnosis["findings"]]
    assert kinds[0] == "deadlock"
    first_lines = text.splitlines()[:4]
    assert first_lines[2] == "Diagnosis:"
    assert first_lines[3].startswith('  - Deadlock: Thread "')


def test_fifty_threads_behind_one_rlock_name_its_holder():
    registry_lock = threading.RLock()
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with registry_lock:
            held.set()
            release.wait()

    def wait() -> None:
        with registry_lock:
            pass

    holder = threading.Thread(target=hold, name="registry-holder")
    holder.start()
    held.wait()
    waiters = [threading.Thread(target=wait, name=f"waiter-{i}") for i in range(50)]
    for t in waiters:
        t.start()

    def all_blocked() -> Optional[tbcollect.Snapshot]:
        snap = tbcollect.collect()
        blocked = [s for s in snap.stacks if s.name.startswith("waiter-") and s.waiting_for]
        return snap if len(blocked) == 50 else None

    try:
        snap = wait_until(all_blocked, "50 threads blocked on registry_lock")
    finally:
        release.set()
        holder.join()
        for t in waiters:
            t.join()
    data = check_snapshot(snap)
    names = _by_name(snap)
    holder_stack = names["registry-holder"]
    lock = f"registry_lock <{hex(id(registry_lock))}>"
    assert holder_stack.holds == [f"RLock {lock}"]
    assert holder_stack.awaiting == "Event.wait"
    for i in range(50):
        waiter = names[f"waiter-{i}"]
        assert waiter.awaiting == f'RLock.acquire {lock} (held by Thread "registry-holder")'
        assert waiter.waiting_for == [holder_stack.id]
    assert snap.deadlocks == []
    finding = data["diagnosis"]["findings"][0]
    assert finding["kind"] == "lock_wait"
    assert finding["text"] == (
        f'50 threads wait in RLock.acquire {lock} for Thread "registry-holder", '
        f"which holds RLock {lock}"
    )
    assert finding["stacks"][0] == holder_stack.id
    text = snap.to_text()
    assert f"  - {finding['text']}\n" in text
    assert f"holds RLock {lock}" in text


def test_a_plain_lock_says_it_records_no_holder():
    plain = threading.Lock()
    plain.acquire()

    def take() -> None:
        with plain:
            pass

    t = threading.Thread(target=take, name="plain-waiter")
    t.start()
    try:
        stack = wait_until(
            lambda: _by_name(tbcollect.collect())["plain-waiter"].awaiting or None,
            "the waiter to block on the lock",
        )
        snap = tbcollect.collect()
    finally:
        plain.release()
        t.join()
    assert stack == f"Lock.acquire plain <{hex(id(plain))}> (threading.Lock records no holder)"
    # The wait is still a finding at the top, and the waiter comes first.
    waiter = _by_name(snap)["plain-waiter"]
    where = f"Lock.acquire plain <{hex(id(plain))}>"
    finding = f"1 thread waits in {where}; threading.Lock records no holder"
    assert [f for f in snap.diagnosis["findings"] if f["kind"] == "lock_wait"] == [
        {"kind": "lock_wait", "text": finding, "stacks": [waiter.id]}
    ]
    text = snap.to_text()
    assert f"  - {finding}" in text
    assert text.index('Thread "plain-waiter"') < text.index('Thread "MainThread"')


def test_waits_in_library_and_in_c_are_named():
    release = threading.Event()
    q: queue.Queue[int] = queue.Queue()
    a, b = socket.socketpair()
    threads: List[threading.Thread] = [
        threading.Thread(target=release.wait, name="event"),
        threading.Thread(target=q.get, name="queue"),
        threading.Thread(target=a.recv, args=(1,), name="recv"),
    ]
    for t in threads:
        t.start()
    expected = {"event": "Event.wait", "queue": "Queue.get", "recv": "socket recv"}

    def named() -> Optional[Dict[str, tbcollect.Stack]]:
        stacks = _by_name(tbcollect.collect())
        ok = all(stacks[n].awaiting == w for n, w in expected.items())
        return stacks if ok else None

    try:
        stacks = wait_until(named, "every thread blocked where it waits")
    finally:
        release.set()
        q.put(1)
        b.send(b"x")
        for t in threads:
            t.join()
        a.close()
        b.close()
    assert stacks["event"].waiting_for == []


SLEEPER = """
import os, sys, threading, time
import tbcollect

threading.Thread(target=time.sleep, args=(30,), name="sleeper", daemon=True).start()
while True:
    stack = [s for s in tbcollect.collect().stacks if s.name == "sleeper"][0]
    if stack.awaiting:
        break
    time.sleep(0.01)
sys.stdout.write(stack.awaiting)
sys.stdout.flush()
os._exit(0)  # not waiting for the sleep to end
"""


def test_a_sleeping_thread_says_how_long_it_has_left():
    proc = run_python(SLEEPER)
    assert proc.returncode == 0, proc.stderr
    left = proc.stdout
    # Python 3.11+ sleeps to an absolute deadline, which the OS shows.
    if sys.version_info >= (3, 11):
        assert re.fullmatch(r"sleep \((\d+\.\d) s left\)", left), left
        assert 0 < float(left.split("(")[1].split()[0]) <= 30
    else:
        assert left.startswith("sleep"), left


OWN = """
import json, sys, tbcollect
tbcollect.install(directory=sys.argv[1])
snap = tbcollect.collect()
print(json.dumps({"own": [s.name for s in snap.stacks if s.own],
                  "header": snap.summary(),
                  "counts": snap.diagnosis["counts"],
                  "diag_own": snap.diagnosis["own"]}))
"""


def test_tbcollect_threads_are_flagged_and_left_out_of_counts(tmp_path):
    proc = run_python(OWN, str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["own"] == ["tbcollect-dumper"]
    assert out["diag_own"] == 1
    assert out["counts"]["thread"] == {"running": 1}
    assert ": 1 thread, 0 greenlets, 0 tasks (and 1 of tbcollect's own)" in out["header"]

"""Greenlets say what they wait for, who holds the gevent RLock they wait
on, and greenlets joining each other in a circle are a deadlock: real
gevent hubs in child processes (the circle never ends)."""

from __future__ import annotations

import json
import re
import sys

import pytest
import tbcollect

from tests.helpers import check_snapshot, run_python

pytest.importorskip("gevent")

PROGRAM = """
import os, sys
import gevent, gevent.event, gevent.lock
import tbcollect

lock = gevent.lock.RLock()
never = gevent.event.Event()
joined = {}

def hold():
    with lock:
        never.wait()

def want():
    with lock:
        pass

def join(name):
    joined[name].join()

holder = gevent.spawn(hold)
holder.name = "holder"
gevent.sleep(0)
waiter = gevent.spawn(want)
waiter.name = "waiter"
sleeper = gevent.spawn(gevent.sleep, 60)
sleeper.name = "sleeper"
joined["left"] = gevent.spawn(join, "right")
joined["left"].name = "left"
joined["right"] = gevent.spawn(join, "left")
joined["right"].name = "right"
while True:
    gevent.sleep(0.01)
    snap = tbcollect.collect()
    if snap.deadlocks:
        break
sys.stdout.write(snap.to_json())
sys.stdout.flush()
os._exit(0)
"""


def sleep_left(awaiting: str) -> float:
    """N of `sleep (N s left)`."""
    match = re.fullmatch(r"sleep \((\d+\.\d) s left\)", awaiting)
    assert match, awaiting
    return float(match.group(1))


def test_greenlets_name_waits_holders_and_join_cycles():
    proc = run_python(PROGRAM)
    assert proc.returncode == 0, proc.stderr
    snap = tbcollect.load(proc.stdout)
    data = check_snapshot(snap)
    named = {s.name: s for s in snap.stacks if s.kind == "greenlet"}
    left, right = named["left"], named["right"]
    assert [sorted(c) for c in snap.deadlocks] == [sorted([left.id, right.id])]
    assert left.awaiting == right.awaiting == "Greenlet.join"
    assert left.waiting_for == [right.id] and right.waiting_for == [left.id]
    holder, waiter = named["holder"], named["waiter"]
    assert waiter.waiting_for == [holder.id]
    assert waiter.awaiting.startswith("RLock.acquire <0x")
    assert waiter.awaiting.endswith(' (held by Greenlet "holder")')
    assert holder.holds == ["gevent RLock " + waiter.awaiting.split()[1]]
    assert 0 < sleep_left(named["sleeper"].awaiting) <= 60
    kinds = [f["kind"] for f in data["diagnosis"]["findings"]]
    assert kinds[:2] == ["deadlock", "lock_wait"]
    text = snap.to_text()
    assert 'Deadlock: Greenlet "' in text
    assert "awaiting Greenlet.join" in text


STRAYS = """
import json, threading
import gevent  # noqa: F401  (greenlet is loaded, as in a gevent app)
import tbcollect

for _ in range(20):
    t = threading.Thread(target=tbcollect.collect)
    t.start()
    t.join()
snap = tbcollect.collect()
threads = {s.thread for s in snap.stacks if s.kind == "thread"}
print(json.dumps([[s.name, s.thread, s.state] for s in snap.stacks if s.kind == "greenlet"
                  and (s.thread not in threads or s.state == "dead")]))
"""


def test_no_stray_main_greenlets_after_twenty_dumps_from_other_threads():
    proc = run_python(STRAYS)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


BARE_MAINS = """
import json, os, threading
import greenlet
import tbcollect

stop = threading.Event()

def asks():
    # As Celery's logging does in every thread: greenlet makes the thread a
    # main greenlet that nothing ever switches from.
    greenlet.getcurrent()
    stop.wait()

asking = threading.Thread(target=asks, name="asks")
asking.start()
ended = threading.Thread(target=greenlet.getcurrent)
ended.start()
ended.join()
greenlet.getcurrent()

def greenlets():
    snap = tbcollect.collect()
    return [[s.name, s.state] for s in snap.stacks if s.kind == "greenlet"]

out = {"parent": greenlets()}
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(w, json.dumps(greenlets()).encode())
    os._exit(0)
os.waitpid(pid, 0)
os.close(w)
out["forked child"] = json.loads(os.read(r, 65536))
# A main greenlet with a greenlet under it stays.
child = greenlet.greenlet(lambda: greenlet.getcurrent().parent.switch())
child.switch()
out["with a child"] = greenlets()
stop.set()
asking.join()
print(json.dumps(out))
"""


def test_main_greenlets_with_nothing_under_them_are_left_out():
    proc = run_python(BARE_MAINS, env={"PYTHONWARNINGS": "ignore::DeprecationWarning"})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["parent"] == [], out
    assert out["forked child"] == [], out
    assert out["with a child"] == [["<main greenlet>", "running"], ["<lambda>", "suspended"]], out


PRIMITIVES = """
import json, os, sys
import gevent, gevent.event, gevent.lock, gevent.pool, gevent.queue, gevent.socket
import tbcollect

never = gevent.event.Event()
result = gevent.event.AsyncResult()
queue = gevent.queue.Queue()
joinable = gevent.queue.JoinableQueue()
full = gevent.queue.Queue(1)
full.put(1)
channel = gevent.queue.Channel()
semaphore = gevent.lock.BoundedSemaphore(1)
semaphore.acquire()
left, right = gevent.socket.socketpair()
pipe_out, pipe_in = os.pipe()
peers = {}

def spawn(name, function, *args):
    greenlet = gevent.spawn(function, *args)
    greenlet.name = name
    return greenlet

def join_all(name):
    gevent.joinall([peers[name]])

sleeper = spawn("sleep", gevent.sleep, 3600)
spawn("Event.wait", lambda: never.wait())
spawn("AsyncResult.get", lambda: result.get())
spawn("Queue.get", lambda: queue.get())
spawn("JoinableQueue.get", lambda: joinable.get())
spawn("Queue.put", lambda: full.put(2))
spawn("Channel.get", lambda: channel.get())
spawn("Semaphore.acquire", lambda: semaphore.acquire())
spawn("socket recv", lambda: right.recv(10))
spawn("wait_read", lambda: gevent.socket.wait_read(pipe_out))
spawn("gevent.wait", lambda: gevent.wait([never, result]))
spawn("Greenlet.join", lambda: sleeper.join())
spawn("joinall", lambda: gevent.joinall([sleeper]))
peers["left"] = spawn("left", join_all, "right")
peers["right"] = spawn("right", join_all, "left")
compiled = type(never).__module__ == "gevent._gevent_cevent"
for _ in range(500):
    gevent.sleep(0.01)
    snap = tbcollect.collect()
    greenlets = [s for s in snap.stacks if s.kind == "greenlet"]
    if snap.deadlocks and all(s.awaiting for s in greenlets if s.name in peers):
        break
facts = {
    "compiled": compiled,
    "loop": type(gevent.get_hub().loop).__module__,
    "semaphore": hex(id(semaphore)),
    "pipe": pipe_out,
    "snapshot": snap.to_json(),
}
sys.stdout.write(json.dumps(facts))
sys.stdout.flush()
os._exit(0)
"""


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure-python"])
def test_greenlets_in_gevent_primitives_say_what_they_wait_for(pure):
    """With gevent's compiled modules the primitives leave no Python frame:
    the greenlet's innermost frame is the caller's, and the wait is found
    from the primitive's side (its links, its queue's waiters)."""
    proc = run_python(PRIMITIVES, env={"PURE_PYTHON": "1"} if pure else {})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    if not pure and not out["compiled"]:
        pytest.skip("this gevent has no compiled modules")
    assert out["compiled"] is not pure
    snap = tbcollect.load(out["snapshot"])
    check_snapshot(snap)
    named = {s.name: s for s in snap.stacks if s.kind == "greenlet"}
    expected = {
        "sleep": "sleep",
        "Event.wait": "Event.wait",
        "AsyncResult.get": "AsyncResult.get",
        "Queue.get": "Queue.get",
        "JoinableQueue.get": "Queue.get",
        "Queue.put": "Queue.put",
        "Channel.get": "Channel.get",
        "Semaphore.acquire": f"Semaphore.acquire <{out['semaphore']}> "
        "(a gevent Semaphore records no holder)",
        "socket recv": "socket recv",
        "wait_read": "wait_read",
        "gevent.wait": "gevent.wait",
        "Greenlet.join": "Greenlet.join",
        "joinall": "joinall",
        "left": "joinall",
        "right": "joinall",
    }
    if pure and sys.version_info < (3, 11):
        # 3.9/3.10 code objects have no qualified name: the frame's plain
        # `get` in gevent/queue.py cannot tell a Channel's from a Queue's.
        expected["Channel.get"] = "Queue.get"
    sleep = named.pop("sleep").awaiting
    read = named.pop("wait_read").awaiting
    del expected["sleep"], expected["wait_read"]
    assert {n: named[n].awaiting for n in expected} == expected
    if out["loop"] == "gevent.libev.corecext":
        # gevent's default loop: the timer's deadline, read in C, and the
        # fd of the io watcher whose callback resumes the greenlet.
        assert sleep_left(sleep) > 3500, sleep
        assert read == f"wait_read (fd {out['pipe']})"
    else:
        assert sleep == "sleep"
        assert read is None
    sleeper = next(s.id for s in snap.stacks if s.name == "sleep")
    assert named["Greenlet.join"].waiting_for == [sleeper]
    assert named["joinall"].waiting_for == [sleeper]
    left, right = named["left"], named["right"]
    assert left.waiting_for == [right.id] and right.waiting_for == [left.id]
    assert [sorted(c) for c in snap.deadlocks] == [sorted([left.id, right.id])]
    # Nothing records a gevent semaphore's holder: the wait is a finding that says so.
    findings = check_snapshot(snap)["diagnosis"]["findings"]
    assert {
        "kind": "lock_wait",
        "text": f"1 greenlet waits in Semaphore.acquire <{out['semaphore']}>; "
        "a gevent Semaphore records no holder",
        "stacks": [named["Semaphore.acquire"].id],
    } in findings
    # The caller's line stays the innermost frame the user reads.
    if not pure:
        assert named["Event.wait"].frames[-1].function == "<lambda>"

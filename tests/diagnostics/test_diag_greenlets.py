"""Greenlets say what they wait for, who holds the gevent RLock they wait
on, and greenlets joining each other in a circle are a deadlock: real
gevent hubs in child processes (the circle never ends)."""

from __future__ import annotations

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
    assert named["sleeper"].awaiting == "sleep"
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

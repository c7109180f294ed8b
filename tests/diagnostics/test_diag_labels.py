"""Labels: registered ContextVars read from each task's, greenlet's and
thread's own context, with different values in each (real threads, a real
event loop, a real gevent hub, a greenlet running in another thread), never
through the value's own code, redacted by name and cut."""

from __future__ import annotations

import contextvars
import threading
from typing import Any, Dict, Iterator

import pytest
import tbcollect

from tests.helpers import check_snapshot, frame_name, run_python

PROGRAM = """
import asyncio, contextvars, json, sys, threading
import gevent, gevent.event, greenlet
import tbcollect

REQUEST = contextvars.ContextVar("request_id")
tbcollect.label(REQUEST)
started = threading.Barrier(4)
stop = threading.Event()

def thread_worker(value):
    REQUEST.set(value)
    started.wait()
    stop.wait()

def greenlet_in_thread():
    def body():
        REQUEST.set("greenlet-in-thread")
        started.wait()
        stop.wait()
    g = greenlet.greenlet(body)
    g.switch()

threads = [threading.Thread(target=thread_worker, args=(f"thread-{i}",), name=f"t{i}")
           for i in range(2)]
threads.append(threading.Thread(target=greenlet_in_thread, name="greenlet-host"))
for t in threads:
    t.start()
started.wait()

hub_ready = gevent.event.Event()
def in_hub(value):
    REQUEST.set(value)
    gevent.sleep(60)
greenlets = [gevent.spawn(in_hub, f"greenlet-{i}") for i in range(3)]
for i, g in enumerate(greenlets):
    g.name = f"g{i}"
gevent.sleep(0.05)

async def job(value):
    REQUEST.set(value)
    await asyncio.sleep(60)

async def main():
    REQUEST.set("main-task")
    tasks = [asyncio.create_task(job(f"task-{i}"), name=f"job{i}") for i in range(3)]
    await asyncio.sleep(0.05)
    snap = tbcollect.collect()
    sys.stdout.write(snap.to_json())
    for t in tasks:
        t.cancel()

asyncio.run(main())
stop.set()
for t in threads:
    t.join()
"""


def test_labels_on_tasks_threads_and_greenlets_come_from_their_own_context():
    pytest.importorskip("gevent")
    proc = run_python(PROGRAM)
    assert proc.returncode == 0, proc.stderr
    snap = tbcollect.load(proc.stdout)
    data = check_snapshot(snap)
    labels = {(s.kind, s.name): dict(s.labels) for s in snap.stacks}
    for i in range(2):
        assert labels["thread", f"t{i}"] == {"request_id": f"'thread-{i}'"}
    for i in range(3):
        assert labels["task", f"job{i}"] == {"request_id": f"'task-{i}'"}
        assert labels["greenlet", f"g{i}"] == {"request_id": f"'greenlet-{i}'"}
    # The task running main() sets its own; the main thread runs it.
    main_task = [
        s for s in snap.stacks if s.kind == "task" and s.name not in {"job0", "job1", "job2"}
    ]
    assert [dict(s.labels) for s in main_task] == [{"request_id": "'main-task'"}]
    # A greenlet running in another thread: its context is that thread's.
    assert labels["greenlet", frame_name("greenlet_in_thread.<locals>.body")] == {
        "request_id": "'greenlet-in-thread'"
    }
    assert labels["thread", "greenlet-host"] == {"request_id": "'greenlet-in-thread'"}
    assert not [e for e in snap.errors if "label" in e], snap.errors
    by_name = {s["name"]: s for s in data["stacks"]}
    assert by_name["job1"]["labels"] == {"request_id": "'task-1'"}
    text = snap.to_text()
    assert "request_id='task-2'" in text and "request_id='greenlet-0'" in text


HOSTILE = """
import contextvars, sys, threading
import tbcollect

CALLED = []

class Hostile:
    def __repr__(self):
        CALLED.append("repr")
        raise RuntimeError("repr ran")
    def __str__(self):
        CALLED.append("str")
        return "str ran"
    def __eq__(self, other):
        CALLED.append("eq")
        return True
    def __hash__(self):
        CALLED.append("hash")
        return 1
    def __getattribute__(self, name):
        if name not in ("__class__", "__dict__"):
            CALLED.append(name)
        return object.__getattribute__(self, name)

WHO = contextvars.ContextVar("who")
tbcollect.label(WHO)
WHO.set(Hostile())
snap = tbcollect.collect(locals="repr")
main = [s for s in snap.stacks if s.kind == "thread" and s.current][0]
sys.stdout.write(repr((dict(main.labels), CALLED)))
"""


def test_a_hostile_label_value_is_never_asked_anything():
    proc = run_python(HOSTILE)
    assert proc.returncode == 0, proc.stderr
    labels, called = eval(proc.stdout)  # noqa: S307 (our own child's repr of plain data)
    assert called == []
    assert labels["who"].startswith("<__main__.Hostile object at 0x"), labels


@pytest.fixture
def registered() -> Iterator[None]:
    tbcollect.unlabel()
    yield
    tbcollect.unlabel()


def test_labels_are_redacted_by_name_and_cut(registered):
    session = contextvars.ContextVar("session_id")
    tenant = contextvars.ContextVar("tenant")
    big = contextvars.ContextVar("big")
    assert tbcollect.label(session, tenant, big) == ["session_id", "tenant", "big"]
    session.set("s3cr3t")
    tenant.set({"name": "acme", "plan": ["gold"]})
    big.set("x" * 10_000)
    ctx = contextvars.copy_context()

    def capture(**options: Any) -> Dict[str, str]:
        snap = ctx.run(tbcollect.collect, **options)
        main = [s for s in snap.stacks if s.kind == "thread" and s.current][0]
        return dict(main.labels)

    labels = capture()
    assert labels["session_id"] == "[redacted]"
    assert labels["tenant"] == "{'name': 'acme', 'plan': ['gold']}"
    assert labels["big"].startswith("'xxxx") and labels["big"].endswith("…")
    assert len(labels["big"].encode()) <= 200 + len("…".encode())
    assert capture(redact=["tenant"])["tenant"] == "[redacted]"
    assert "s3cr3t" not in ctx.run(tbcollect.collect, source=False).to_json()


def test_label_registration_and_unlabel(registered):
    first = contextvars.ContextVar("first")
    second = contextvars.ContextVar("second")
    assert tbcollect.label(first) == ["first"]
    assert tbcollect.label(first, second) == ["first", "second"]  # again: no change
    with pytest.raises(tbcollect.InvalidOptionError, match="ContextVar"):
        tbcollect.label("first")  # type: ignore[arg-type]
    assert tbcollect.unlabel(first) == ["second"]
    second.set("on")
    snap = contextvars.copy_context().run(tbcollect.collect)
    current = [s for s in snap.stacks if s.kind == "thread" and s.current][0]
    assert current.labels == [("second", "'on'")]
    assert tbcollect.unlabel() == []
    assert all(not s.labels for s in tbcollect.collect().stacks)
    # Unset in a thread's context: no label there.
    tbcollect.label(second)
    seen: Dict[str, Any] = {}

    def other() -> None:
        snap = tbcollect.collect()
        seen["labels"] = [s.labels for s in snap.stacks if s.kind == "thread" and s.current]

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen["labels"] == [[]]

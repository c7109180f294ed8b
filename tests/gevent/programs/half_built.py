"""Greenlets caught half-built, while another thread collects.

greenlet's `tp_new` allocates the object (tracked by the garbage collector
from then on) and only then creates its C++ state; in between it kills the
greenlets queued for deletion in its thread, which runs their code. Here
that code is a `finally:` block that waits, so the main thread collects
while a new greenlet sits in the heap without its state (every greenlet C
function dereferences it), and a gevent `Greenlet` without its Cython
fields, whose getters dereference them.

argv[1] is "greenlet" or "gevent": the kind of greenlet being built.
Prints one line of facts, then the JSON dump taken meanwhile.
"""

import json
import sys
import threading

import greenlet
import tbcollect


def parked(inside, resume):
    try:
        greenlet.getcurrent().parent.switch()
    finally:
        # GreenletExit, thrown in by greenlet while it builds the next
        # greenlet of this thread: hold that construction open.
        inside.set()
        resume.wait(60)


def build(kind):
    if kind == "gevent":
        import gevent

        return gevent.Greenlet(lambda: None)
    return greenlet.greenlet(lambda: None)


def owner(kind, handoff, queued, inside, resume, built):
    victim = greenlet.greenlet(parked)
    victim.switch(inside, resume)
    handoff.append(victim)
    del victim
    if not queued.wait(60):
        return
    built.append(build(kind))  # greenlet's tp_new kills the queued victim first


def main():
    kind = sys.argv[1]
    if kind == "gevent":
        import gevent  # noqa: F401 -- imported before the thread builds one

    handoff, built = [], []
    queued, inside, resume = threading.Event(), threading.Event(), threading.Event()
    thread = threading.Thread(
        target=owner, args=(kind, handoff, queued, inside, resume, built), daemon=True
    )
    thread.start()
    while not handoff and thread.is_alive():
        thread.join(0.01)
    # The last reference to a suspended greenlet of another thread goes
    # here: greenlet cannot kill it in this thread and queues it for its own.
    handoff.clear()
    queued.set()
    waited = inside.wait(60)
    snapshot = tbcollect.collect()
    resume.set()
    thread.join(60)
    facts = {
        "waited": waited,
        "built": len(built),
        "errors": snapshot.errors,
        "thread_alive": thread.is_alive(),
    }
    print(json.dumps(facts))
    print(snapshot.to_json())


if __name__ == "__main__":
    main()

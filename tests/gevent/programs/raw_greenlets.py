"""Raw greenlets without gevent: nested parents, one not started, one dead,
and raw greenlets in two other threads -- in thread A a child greenlet runs
(blocked) while A's main greenlet is suspended; in thread B the main greenlet
runs (blocked) while its children are suspended.

Prints one line of facts, the JSON dump taken with both threads blocked,
then the JSON dump taken after both threads have exited while greenlets of
thread B are still referenced.
"""

import json
import sys
import threading

import greenlet
import tbcollect


def park():
    """Switches back to the parent, leaving this greenlet suspended here."""
    greenlet.getcurrent().parent.switch()


def level2():
    park()


def level1(facts):
    child = greenlet.greenlet(level2)
    facts["nested-child"] = hex(id(child))
    child.switch()
    park()


def blocked_child(facts, started, release):
    facts["a-child"] = hex(id(greenlet.getcurrent()))
    started.set()
    release.wait(120)


def thread_a(facts, started, release):
    facts["a-thread"] = threading.get_ident()
    facts["a-main"] = hex(id(greenlet.getcurrent()))
    greenlet.greenlet(blocked_child).switch(facts, started, release)


def thread_b(facts, started, release, leftovers):
    facts["b-thread"] = threading.get_ident()
    facts["b-main"] = hex(id(greenlet.getcurrent()))
    parked = [greenlet.greenlet(park) for _ in range(3)]
    for g in parked:
        g.switch()
    facts["b-parked"] = [hex(id(g)) for g in parked]
    leftovers.extend(parked)
    started.set()
    release.wait(120)


def main():
    assert "gevent" not in sys.modules, "this program must run without gevent"
    facts = {
        "main-thread": threading.get_ident(),
        "main-main": hex(id(greenlet.getcurrent())),
    }
    outer = greenlet.greenlet(level1)
    facts["nested-parent"] = hex(id(outer))
    outer.switch(facts)
    pending = greenlet.greenlet(park)
    facts["not-started"] = hex(id(pending))
    done = greenlet.greenlet(lambda: None)
    done.switch()
    facts["dead"] = hex(id(done))

    release = threading.Event()
    started = [threading.Event(), threading.Event()]
    leftovers = []
    threads = [
        threading.Thread(target=thread_a, args=(facts, started[0], release), daemon=True),
        threading.Thread(
            target=thread_b, args=(facts, started[1], release, leftovers), daemon=True
        ),
    ]
    for t in threads:
        t.start()
    if not all(e.wait(60) for e in started):
        sys.exit("threads did not start")
    during = tbcollect.collect()
    release.set()
    for t in threads:
        t.join(60)
    after = tbcollect.collect()
    print(json.dumps(facts))
    print(during.to_json())
    print(after.to_json())
    del outer, pending, done, leftovers


if __name__ == "__main__":
    main()

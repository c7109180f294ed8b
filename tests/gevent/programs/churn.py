"""Greenlets spawned and killed without pause in one OS thread (gevent
greenlets, and raw greenlets dropped while suspended), while the main thread
collects in a loop.

argv[1] is how many snapshots to take. Prints one line of facts, then the
JSON of the last snapshot.
"""

import gc
import json
import sys
import threading

import gevent
import greenlet
import tbcollect


def sleeper():
    gevent.sleep(0.001)


def parked():
    greenlet.getcurrent().parent.switch()


def churn(stop, ready, counts):
    spawned = []
    while not stop.is_set():
        spawned += [gevent.spawn(sleeper) for _ in range(20)]
        gevent.sleep(0)
        gevent.killall(spawned[::2], block=False)
        del spawned[::2]
        raw = [greenlet.greenlet(parked) for _ in range(10)]
        for g in raw[:5]:
            g.switch()
        del raw  # suspended raw greenlets freed here get GreenletExit thrown in
        if len(spawned) > 200:
            gevent.killall(spawned)
            spawned.clear()
            gc.collect()
        counts["rounds"] += 1
        ready.set()
    gevent.killall(spawned)


def main():
    snapshots = int(sys.argv[1])
    stop = threading.Event()
    ready = threading.Event()
    counts = {"rounds": 0}
    worker = threading.Thread(target=churn, args=(stop, ready, counts), daemon=True)
    worker.start()
    if not ready.wait(60):
        sys.exit("the churning thread did not start")
    errors = set()
    states = set()
    greenlets_seen = 0
    snapshot = None
    for _ in range(snapshots):
        snapshot = tbcollect.collect()
        errors.update(snapshot.errors)
        for stack in snapshot.stacks:
            if stack.kind == "greenlet":
                greenlets_seen += 1
                states.add(stack.state)
        snapshot.to_text()
    stop.set()
    worker.join(60)
    facts = {
        "snapshots": snapshots,
        "rounds": counts["rounds"],
        "errors": sorted(errors),
        "states": sorted(states),
        "greenlets_seen": greenlets_seen,
        "worker_alive": worker.is_alive(),
    }
    print(json.dumps(facts))
    print(snapshot.to_json())


if __name__ == "__main__":
    main()

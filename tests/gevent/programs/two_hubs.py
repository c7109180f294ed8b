"""Two OS threads, each with its own gevent hub and greenlets blocked in
gevent.sleep, Event.wait, Queue.get and a loopback socket read, plus a raw
greenlet nested under a gevent one.

Prints one line of facts (thread idents, greenlet ids by role), then the
JSON dump taken from the main thread's main greenlet.
"""

import json
import os
import sys
import threading

import gevent
import gevent.event
import gevent.queue
import gevent.socket
import greenlet
import tbcollect

ROLES = ("sleep", "event", "queue", "socket", "nest")


def in_sleep():
    gevent.sleep(600)


def in_event(event):
    event.wait()


def in_queue(queue):
    queue.get()


def in_socket(sock):
    sock.recv(1)


def raw_child():
    greenlet.getcurrent().parent.switch()


def in_nest(facts, tag):
    child = greenlet.greenlet(raw_child)
    facts[f"{tag}-raw"] = hex(id(child))
    child.switch()
    gevent.sleep(600)


def start_greenlets(tag, facts, keep):
    """Spawns one greenlet per role and lets each block."""
    listener = gevent.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = gevent.socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    event = gevent.event.Event()
    queue = gevent.queue.Queue()
    keep += [listener, client, server, event, queue]
    targets = {
        "sleep": (in_sleep,),
        "event": (in_event, event),
        "queue": (in_queue, queue),
        "socket": (in_socket, client),
        "nest": (in_nest, facts, tag),
    }
    for role in ROLES:
        g = gevent.spawn(*targets[role])
        g.name = f"{tag}-{role}"
        facts[f"{tag}-{role}"] = hex(id(g))
        keep.append(g)
    for _ in range(5):
        gevent.sleep(0)
    facts[f"{tag}-hub"] = hex(id(gevent.get_hub()))
    facts[f"{tag}-main"] = hex(id(greenlet.getcurrent()))
    facts[f"{tag}-thread"] = threading.get_ident()


def worker(facts, keep, ready):
    start_greenlets("worker", facts, keep)
    ready.set()
    gevent.sleep(600)  # the worker's main greenlet waits in its hub


def main():
    facts = {}
    keep = []
    ready = threading.Event()
    threading.Thread(target=worker, args=(facts, keep, ready), daemon=True).start()
    start_greenlets("main", facts, keep)
    if not ready.wait(60):
        sys.exit("worker thread did not start")
    snapshot = tbcollect.collect()
    print(json.dumps(facts))
    print(snapshot.to_json())
    sys.stdout.flush()
    os._exit(0)  # the worker thread sleeps in its hub for ten minutes


if __name__ == "__main__":
    main()

"""Dump a gevent program: a pool of workers waiting on a queue, one greenlet
stuck reading a socket, a raw greenlet under a gevent one.

    python examples/gevent_dump.py            # the text dump, once
    python examples/gevent_dump.py --periodic # plus tbcollect.gevent.periodic_dump to stderr

Works the same after ``gevent.monkey.patch_all()``.
"""

import sys

import gevent
import gevent.queue
import gevent.socket
import greenlet
import tbcollect
import tbcollect.gevent


def worker(jobs):
    while True:
        handle(jobs.get())


def handle(job):
    gevent.sleep(job)


def read_one(sock):
    return sock.recv(1)


def with_helper():
    helper = greenlet.greenlet(lambda: greenlet.getcurrent().parent.switch())
    helper.switch()  # leaves a raw greenlet suspended under this one
    gevent.sleep(60)


def main():
    jobs = gevent.queue.Queue()
    workers = [gevent.spawn(worker, jobs) for _ in range(20)]
    left, right = gevent.socket.socketpair()
    reader = gevent.spawn(read_one, left)
    reader.name = "socket-reader"
    nested = gevent.spawn(with_helper)
    gevent.sleep(0)
    if "--periodic" in sys.argv:
        dumper = tbcollect.gevent.periodic_dump(0.5, sys.stderr)
        gevent.sleep(1.2)
        dumper.kill()
    # A dump from a greenlet of its own: it shows itself as the running one.
    print(gevent.spawn(tbcollect.dump_all, source=False).get(), end="")
    gevent.killall(workers + [reader, nested])
    right.close()


if __name__ == "__main__":
    main()

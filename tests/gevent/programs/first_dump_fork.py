"""Forks back to back while another thread makes its first dump, which
fills tbcollect's per-process caches (interned attribute names) for the
first time; every child must still be able to dump.

argv[1] is how many children to fork. Prints how many of them could not
dump (a child that hangs is ended by an alarm).
"""

import os
import signal
import sys
import threading
import warnings

import greenlet
import tbcollect


def park():
    greenlet.getcurrent().parent.switch()


parked = greenlet.greenlet(park)
parked.switch()

warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
# Hand the GIL over as often as possible: the first dump and the forks interleave.
sys.setswitchinterval(1e-6)


def first_dump():
    tbcollect.collect().to_text()


t = threading.Thread(target=first_dump, daemon=True)
t.start()
pids = []
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 30):
    pid = os.fork()
    if pid == 0:
        signal.alarm(10)  # a hang ends the child with SIGALRM
        tbcollect.collect().to_text()
        os._exit(0)
    pids.append(pid)
hung = sum(os.waitpid(pid, 0)[1] != 0 for pid in pids)
t.join()
print(hung)

"""A process that forks and then monkey-patches (gunicorn + gevent): its
main thread is named and stated correctly in a dump made from another thread."""

from __future__ import annotations

import json
import sys

import pytest

from tests.helpers import run_python

pytest.importorskip("gevent")

PROGRAM = """
import json, os, sys
import tbcollect

pid = os.fork()
if pid == 0:
    from gevent import monkey
    monkey.patch_all()
    start = monkey.get_original("_thread", "start_new_thread")
    lock = monkey.get_original("_thread", "allocate_lock")()
    lock.acquire()
    out = {}

    def dump():
        snap = tbcollect.collect()
        out["threads"] = [[s.name, s.state, s.native_id, s.current]
                          for s in snap.stacks if s.kind == "thread"]
        out["pid"] = os.getpid()
        lock.release()

    start(dump, ())
    lock.acquire()  # the main thread blocks here, in C, while the other dumps
    sys.stdout.write(json.dumps(out))
    sys.stdout.flush()
    os._exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the main thread's OS id is the pid on Linux")
def test_main_thread_after_fork_then_patch_all():
    proc = run_python(PROGRAM)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    main = [t for t in out["threads"] if t[0] == "MainThread"]
    assert len(main) == 1, out
    name, state, native_id, current = main[0]
    assert native_id == out["pid"]
    assert not current
    assert state not in ("unknown", "running"), state

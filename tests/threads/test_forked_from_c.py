"""A child forked straight from C, as uWSGI forks its workers without
``--py-call-osafterfork``: CPython keeps every thread state of the parent,
whose threads the child does not have. Their frames must never be read
(on 3.11+ they are reached through the dead threads' C stacks, which glibc
hands to the child's new threads: a uWSGI worker died of SIGSEGV in
``sys._current_frames()``), and a new thread that got a dead one's stack,
and so its ident, must show its own frames, not the dead thread's."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD_OF_C_FORK = r"""
import ctypes, json, os, sys, threading, time
import tbcollect

def parked_in_parent(n, event):
    # Python -> C -> Python nesting: each level is another eval loop on the
    # thread's C stack, whose memory the child's threads reuse.
    if n:
        return list(map(lambda _: parked_in_parent(n - 1, event), [0]))
    event.wait()

parent_threads = [
    threading.Thread(target=parked_in_parent, args=(20, threading.Event()),
                     name=f"parent-{i}", daemon=True)
    for i in range(6)
]
for t in parent_threads:
    t.start()
while sum(1 for f in sys._current_frames().values() if f.f_code.co_name == "wait") < 6:
    time.sleep(0.01)

# ctypes.PyDLL keeps the GIL held across fork(): no at-fork hook runs.
pid = ctypes.PyDLL(None).fork()
if pid == 0:
    stop = threading.Event()

    def churn_in_child(depth):
        while not stop.is_set():
            def nest(k):
                if k:
                    return nest(k - 1)
                sorted(range(500), key=lambda x: -x)
                json.loads(json.dumps({"a": list(range(100))}))
            nest(depth)

    def child_main():
        threads = [
            threading.Thread(target=churn_in_child, args=(i * 7,), name=f"child-{i}", daemon=True)
            for i in range(6)
        ]
        for t in threads:
            t.start()
        time.sleep(0.2)
        for _ in range(30):
            snapshot = tbcollect.collect()
        stop.set()
        sys.stdout.write(snapshot.to_json() + "\n")
        sys.stdout.flush()

    child_main()
    os._exit(0)
else:
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(json.dumps({"child_status": status}) + "\n")
"""


def test_thread_states_of_the_parent_are_left_out_and_never_read(tmp_path):
    script = tmp_path / "c_fork.py"
    script.write_text(CHILD_OF_C_FORK)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    child_dump, parent_report = result.stdout.splitlines()
    assert json.loads(parent_report) == {"child_status": 0}, result.stderr
    data = json.loads(child_dump)
    threads = [s for s in data["stacks"] if s["kind"] == "thread"]
    names = sorted(s["name"] for s in threads)
    assert names == ["MainThread"] + [f"child-{i}" for i in range(6)], names
    for stack in threads:
        functions = [f["function"] for f in stack["frames"]]
        assert not any("parked_in_parent" in f for f in functions), (stack["name"], functions)
        if stack["name"].startswith("child-"):
            assert any(f.endswith("churn_in_child") for f in functions), (stack["name"], functions)
        else:
            # The thread that forked goes on in the child under its old state.
            assert "child_main" in functions, functions
    left_out = [
        e for e in data["errors"] if "thread states of threads this process does not have" in e
    ]
    assert len(left_out) == 1, data["errors"]
    # The parent's six threads; its main thread goes on as the child's.
    if sys.version_info >= (3, 11):
        assert ": 6 left out unread;" in left_out[0], left_out
    assert "--py-call-osafterfork" in left_out[0]

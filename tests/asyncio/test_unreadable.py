"""Never silent: when the task backend cannot read this interpreter, the
snapshot says so in `errors` and in the text header, and the threads and
greenlets still come back.

`TBCOLLECT_TEST_PRETEND_PYTHON=3.99` makes the version check fail on purpose
(as it would on a CPython newer than this build knows), in a subprocess
running a real loop with pending tasks, a second thread and greenlets.
"""

from __future__ import annotations

import json

from tests.helpers import run_python

TARGET = r"""
import asyncio, json, threading
import greenlet
import tbcollect

stop = threading.Event()
worker = threading.Thread(target=stop.wait, name="idle-worker", daemon=True)
worker.start()

def park():
    greenlet.getcurrent().parent.switch()

parked = [greenlet.greenlet(park) for _ in range(3)]
for g in parked:
    g.switch()

async def forever():
    await asyncio.Event().wait()

async def main():
    tasks = [asyncio.create_task(forever(), name=f"pending-{i}") for i in range(6)]
    for _ in range(5):
        await asyncio.sleep(0)
    snapshot = tbcollect.collect()
    kinds = [s.kind for s in snapshot.stacks]
    print(json.dumps({
        "errors": snapshot.errors,
        "header": snapshot.to_text().splitlines()[0],
        "threads": [s.name for s in snapshot.stacks if s.kind == "thread"],
        "greenlets": kinds.count("greenlet"),
        "tasks": kinds.count("task"),
        "json_errors": json.loads(snapshot.to_json())["errors"],
    }))
    for t in tasks:
        t.cancel()

asyncio.run(main())
stop.set()
"""


def run_target(env):
    proc = run_python(TARGET, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_unknown_version_says_tasks_are_not_captured_and_keeps_the_rest():
    out = run_target({"TBCOLLECT_TEST_PRETEND_PYTHON": "3.99"})
    missing = [e for e in out["errors"] if e.startswith("tasks not captured:")]
    assert len(missing) == 1, out["errors"]
    assert "CPython 3.99" in missing[0]
    assert out["json_errors"] == out["errors"]
    assert out["header"].endswith("0 tasks (tasks NOT CAPTURED, see errors)"), out["header"]
    assert out["tasks"] == 0
    # Threads and greenlets come back as usual.
    assert {"MainThread", "idle-worker"} <= set(out["threads"])
    assert out["greenlets"] >= 3
    assert "NOT CAPTURED" not in out["header"].split("0 tasks")[0]


def test_a_known_version_lists_the_tasks_and_says_nothing_is_missing():
    out = run_target({})
    assert out["errors"] == []
    assert out["tasks"] == 7  # main() and its six
    assert "NOT CAPTURED" not in out["header"] and "INCOMPLETE" not in out["header"]

"""Under gevent's monkey patching `threading` keys threads by greenlet ids;
the thread backend still names the real OS threads it can match."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_python, validate_json

pytest.importorskip("gevent")

PROGRAM = r"""
from gevent import monkey; monkey.patch_all()
import json, sys, threading, time
import tbcollect

from_main = tbcollect.collect(greenlets=False, tasks=False)

# a real OS thread (one of gevent's threadpool workers) dumping the process
import gevent
from_other = gevent.get_hub().threadpool.apply(tbcollect.collect, kwds={"greenlets": False})
print(json.dumps([from_main.to_json(), from_other.to_json()]))
"""


def test_main_thread_keeps_its_name_when_monkey_patched():
    proc = run_python(PROGRAM)
    assert proc.returncode == 0, proc.stderr
    from_main, from_other = (validate_json(t) for t in json.loads(proc.stdout))
    main = [s for s in from_main["stacks"] if s["current"]]
    assert len(main) == 1 and main[0]["name"] == "MainThread"
    assert main[0]["daemon"] is False and main[0]["native_id"] is not None
    # seen from another OS thread, the main thread is still found by its native id (== pid)
    names = {s["name"] for s in from_other["stacks"]}
    assert "MainThread" in names, names

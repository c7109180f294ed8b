"""The greenlet backend against real greenlets, real gevent hubs in real OS
threads, real sockets. Each target program runs in its own interpreter so
gevent's monkey patching and hubs never leak into this process."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from tbcollect._tbcollect import MAIN_GREENLET_NAME

from tests.helpers import run_python, validate_json

pytest.importorskip("greenlet")
pytest.importorskip("gevent")

PROGRAMS = Path(__file__).resolve().parent / "programs"

Dump = Dict[str, Any]


def run_program(name: str, *args: str, timeout: float = 120) -> Tuple[Dict[str, Any], List[str]]:
    """Runs a target program; returns its facts line and the lines after it."""
    proc = run_python(str(PROGRAMS / name), *args, timeout=timeout)
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    return json.loads(lines[0]), lines[1:]


def greenlets(dump: Dump) -> Dict[str, Dump]:
    """Greenlet stacks of a JSON dump, by id."""
    return {s["id"]: s for s in dump["stacks"] if s["kind"] == "greenlet"}


def gid(address: str) -> str:
    return f"greenlet:{address}"


def functions(stack: Dump) -> List[str]:
    return [f["function"] for f in stack["frames"]]


def fn(qualname: str) -> str:
    """A function as frames name it: code objects carry `co_qualname` from
    3.11 on; before, frames only know the bare `co_name`."""
    return qualname if sys.version_info >= (3, 11) else qualname.rsplit(".", 1)[-1]


def test_two_threads_each_with_its_own_hub():
    facts, lines = run_program("two_hubs.py")
    dump = validate_json(lines[0])
    assert dump["errors"] == []
    found = greenlets(dump)
    for tag in ("main", "worker"):
        thread = facts[f"{tag}-thread"]
        hub = found[gid(facts[f"{tag}-hub"])]
        main = found[gid(facts[f"{tag}-main"])]
        assert hub["hub"] is True and hub["thread"] == thread
        assert hub["parent"] == main["id"] and main["parent"] is None
        assert main["name"] == MAIN_GREENLET_NAME and main["thread"] == thread
        for role in ("sleep", "event", "queue", "socket", "nest"):
            g = found[gid(facts[f"{tag}-{role}"])]
            assert g["name"] == f"{tag}-{role}"
            assert (g["state"], g["thread"], g["parent"], g["hub"]) == (
                "suspended",
                thread,
                hub["id"],
                False,
            )
            # Spawned from the thread's main greenlet, in start_greenlets.
            assert g["spawned_by"] == main["id"]
            (spawn,) = [f for f in g["spawn_frames"] if f["function"] == "start_greenlets"]
            assert spawn["source"] == "g = gevent.spawn(*targets[role])"
        assert functions(found[gid(facts[f"{tag}-sleep"])])[-2:] == ["in_sleep", "sleep"]
        assert functions(found[gid(facts[f"{tag}-event"])])[-1] == "in_event"
        assert functions(found[gid(facts[f"{tag}-queue"])])[-1] == "in_queue"
        assert functions(found[gid(facts[f"{tag}-socket"])])[-2:] == [
            "in_socket",
            fn("SocketMixin.recv"),
        ]
        assert functions(found[gid(facts[f"{tag}-nest"])])[-2:] == ["in_nest", "sleep"]
        # The raw greenlet nested under a gevent greenlet, switched out in raw_child.
        raw = found[gid(facts[f"{tag}-raw"])]
        assert (raw["name"], raw["state"], raw["thread"]) == ("raw_child", "suspended", thread)
        assert raw["parent"] == gid(facts[f"{tag}-nest"])
        assert functions(raw) == ["raw_child"]
    # The calling thread's main greenlet runs the collector; the worker
    # thread's hub runs its loop (its main greenlet waits in gevent.sleep).
    main = found[gid(facts["main-main"])]
    assert main["state"] == "running" and functions(main)[-1] == "main"
    assert found[gid(facts["main-hub"])]["state"] == "suspended"
    worker_hub = found[gid(facts["worker-hub"])]
    assert worker_hub["state"] == "running" and functions(worker_hub)[-1] == fn("Hub.run")
    worker_main = found[gid(facts["worker-main"])]
    assert worker_main["state"] == "suspended" and functions(worker_main)[-2:] == [
        "worker",
        "sleep",
    ]
    # The running hub's stack is its thread's current stack.
    worker_thread = next(s for s in dump["stacks"] if s["id"] == f"thread:{facts['worker-thread']}")
    assert worker_thread["frames"] == worker_hub["frames"]


def test_two_hubs_text_has_a_tree_per_thread():
    facts, lines = run_program("two_hubs.py")
    import tbcollect

    text = tbcollect.Snapshot.from_json(lines[0]).to_text()
    for tag in ("main", "worker"):
        assert f"Greenlet tree of thread {facts[f'{tag}-thread']}" in text
    assert '"Hub" [greenlet:' in text
    assert f'"worker-nest" [{gid(facts["worker-nest"])}]' in text
    assert f'└─ "raw_child" [{gid(facts["worker-raw"])}] (suspended' in text
    assert "Spawned at:" in text


def test_raw_greenlets_without_gevent():
    facts, lines = run_program("raw_greenlets.py")
    during, after = (validate_json(line) for line in lines)
    assert during["errors"] == [] and after["errors"] == []
    found = greenlets(during)
    main_thread = facts["main-thread"]
    main = found[gid(facts["main-main"])]
    assert (main["state"], main["thread"], main["hub"]) == ("running", main_thread, False)
    parent = found[gid(facts["nested-parent"])]
    child = found[gid(facts["nested-child"])]
    assert (parent["name"], parent["state"], parent["parent"]) == (
        "level1",
        "suspended",
        main["id"],
    )
    assert functions(parent) == ["level1", "park"]
    assert (child["name"], child["state"], child["parent"]) == ("level2", "suspended", parent["id"])
    assert functions(child) == ["level2", "park"]
    pending = found[gid(facts["not-started"])]
    assert (pending["name"], pending["state"], pending["frames"]) == ("park", "not_started", [])
    dead = found[gid(facts["dead"])]
    assert (dead["state"], dead["frames"], dead["thread"]) == ("dead", [], main_thread)
    assert all(s["spawned_by"] is None and s["spawn_frames"] == [] for s in found.values())

    # Thread A: its main greenlet is suspended, a child greenlet runs (blocked).
    a_main, a_child = found[gid(facts["a-main"])], found[gid(facts["a-child"])]
    assert (a_main["state"], a_main["thread"]) == ("suspended", facts["a-thread"])
    assert functions(a_main)[-1] == "thread_a"
    assert (a_child["state"], a_child["thread"], a_child["parent"]) == (
        "running",
        facts["a-thread"],
        a_main["id"],
    )
    assert functions(a_child)[0] == "blocked_child" and fn("Event.wait") in functions(a_child)
    # Thread B: its main greenlet runs (blocked); its children are suspended.
    b_main = found[gid(facts["b-main"])]
    assert (b_main["state"], b_main["thread"]) == ("running", facts["b-thread"])
    assert "thread_b" in functions(b_main)
    for address in facts["b-parked"]:
        g = found[gid(address)]
        assert (g["state"], g["thread"], g["parent"], functions(g)) == (
            "suspended",
            facts["b-thread"],
            b_main["id"],
            ["park"],
        )

    # Both threads have exited; greenlet counts what is left of B as dead.
    left = greenlets(after)
    assert gid(facts["a-child"]) not in left
    for address in [facts["b-main"], *facts["b-parked"]]:
        g = left[gid(address)]
        assert g["state"] == "dead" and g["frames"] == []
    assert left[gid(facts["b-parked"][0])]["name"] == "park"
    assert left[gid(facts["main-main"])]["state"] == "running"


@pytest.mark.parametrize("mode", ["unpatched", "patched"])
def test_dump_from_a_spawned_greenlet(mode, tmp_path):
    path = tmp_path / "dump.json"
    facts, text_lines = run_program("spawned_dump.py", mode, str(path))
    assert facts["patched"] is (mode == "patched")
    assert facts["dumper_ok"], facts["dumper_error"]
    dump = validate_json(path.read_text())
    assert dump["errors"] == []
    found = greenlets(dump)
    dumper = found[gid(facts["dumper"])]
    # The dumper runs, in the real OS thread (not gevent's patched ident);
    # its own frames (dump_all, collect) are trimmed away.
    assert (dumper["state"], dumper["thread"], dumper["frames"]) == ("running", facts["thread"], [])
    assert dumper["name"] == "dump_all" and dumper["spawned_by"] == gid(facts["main"])
    main = found[gid(facts["main"])]
    assert main["state"] == "suspended" and "main" in functions(main)
    hub = found[gid(facts["hub"])]
    assert (hub["hub"], hub["state"], hub["thread"]) == (True, "suspended", facts["thread"])
    for address in facts["waiters"]:
        waiter = found[gid(address)]
        assert (waiter["state"], waiter["parent"], functions(waiter)) == (
            "suspended",
            hub["id"],
            ["waiter"],
        )
    text = "\n".join(text_lines)
    assert text.startswith("tbcollect: pid ")
    assert f"Greenlet tree of thread {facts['thread']}" in text
    assert "5 greenlets with this same stack" in text


@pytest.mark.slow
def test_spawn_and_kill_while_another_thread_collects():
    facts, lines = run_program("churn.py", "150", timeout=300)
    assert facts["errors"] == []
    assert facts["worker_alive"] is False
    assert facts["rounds"] > 0 and facts["greenlets_seen"] > 0
    assert {"running", "suspended"} <= set(facts["states"])
    validate_json(lines[0])


def test_hostile_objects_are_never_called():
    facts, lines = run_program("hostile_heap.py")
    assert facts["calls"] == []
    dump = validate_json(lines[0])
    assert dump["errors"] == []
    found = greenlets(dump)
    hostile = found[gid(facts["hostile"])]
    assert (hostile["name"], hostile["state"]) == ("HostileGreenlet.run", "suspended")
    assert functions(hostile) == [fn("HostileGreenlet.run"), "park"]
    assert found[gid(facts["hostile_pending"])]["state"] == "not_started"
    assert found[gid(facts["raw"])]["name"] == "park"
    hostile_gevent = found[gid(facts["gevent_hostile"])]
    assert hostile_gevent["name"] == "HostileGeventGreenlet._run"
    assert hostile_gevent["spawn_frames"] and hostile_gevent["spawned_by"]
    # A name that is no str is ignored; the run function names it instead.
    assert found[gid(facts["named"])]["name"] == "sleep"
    # Waiters of hostile primitives are read from the primitives' lists.
    assert found[gid(facts["in_event"])]["awaiting"] == "Event.wait"
    assert found[gid(facts["in_queue"])]["awaiting"] == "Queue.get"
    holder = [s for s in found.values() if s["thread"] == facts["holder_thread"]]
    assert len(holder) == 4, "the holder thread's greenlets are tied to it through its locals"


@pytest.mark.slow
def test_periodic_dump(tmp_path):
    json_path, text_path = tmp_path / "dumps.jsonl", tmp_path / "dump.txt"
    facts, _ = run_program("periodic.py", str(json_path), str(text_path))
    assert facts["killed"] == [True, True] and facts["successful"] == [True, True]
    dumps = [validate_json(line) for line in json_path.read_text().splitlines()]
    assert len(dumps) >= 3
    for dump in dumps:
        assert dump["errors"] == []
        found = greenlets(dump)
        dumper = [g for g in found.values() if g["name"] == facts["dumper_name"]]
        running = [g for g in dumper if g["state"] == "running"]
        assert len(running) == 1, "the dumper that wrote this dump is the running greenlet"
        busy = [g for g in found.values() if g["name"] == "busy"]
        assert len(busy) == 3 and all(g["state"] == "suspended" for g in busy)
    text = text_path.read_text()
    assert text.startswith("tbcollect: pid ") and text.endswith("\n")
    assert "with this same stack" not in text  # group=False reached the renderer


def test_no_greenlet_imported_means_no_greenlets_and_no_import():
    code = (
        "import sys, json, tbcollect\n"
        "s = tbcollect.collect()\n"
        "print(json.dumps([sorted(m for m in ('greenlet', 'gevent') if m in sys.modules),"
        " [x.kind for x in s.stacks], s.errors]))\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    imported, kinds, errors = json.loads(proc.stdout)
    assert imported == [] and "greenlet" not in kinds and errors == []


def test_greenlet_blocked_from_import_means_empty_backend():
    code = (
        "import sys, json\n"
        "sys.modules['greenlet'] = None\n"
        "import tbcollect\n"
        "s = tbcollect.collect()\n"
        "print(json.dumps([[x.kind for x in s.stacks], s.errors]))\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    kinds, errors = json.loads(proc.stdout)
    assert "greenlet" not in kinds and errors == []


def test_greenlets_option_turns_the_backend_off():
    code = (
        "import json, greenlet, tbcollect\n"
        "g = greenlet.greenlet(lambda: greenlet.getcurrent().parent.switch())\n"
        "g.switch()\n"
        "on = tbcollect.collect(threads=False, tasks=False)\n"
        "off = tbcollect.collect(greenlets=False)\n"
        "print(json.dumps([[s.kind for s in on.stacks], [s.kind for s in off.stacks]]))\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    on, off = json.loads(proc.stdout)
    assert on == ["greenlet", "greenlet"] and "greenlet" not in off


def test_snapshot_holds_no_reference_to_greenlets_or_frames():
    code = (
        "import json, sys, greenlet, tbcollect\n"
        "exits = []\n"
        "def park():\n"
        "    try:\n"
        "        greenlet.getcurrent().parent.switch()\n"
        "    except greenlet.GreenletExit:\n"
        "        exits.append('exit')\n"
        "g = greenlet.greenlet(park)\n"
        "g.switch()\n"
        "frame = g.gr_frame\n"
        "before = [sys.getrefcount(g), sys.getrefcount(frame)]\n"
        "snap = tbcollect.collect()\n"
        "after = [sys.getrefcount(g), sys.getrefcount(frame)]\n"
        "del frame\n"
        "del g  # the last reference: greenlet throws GreenletExit into it now\n"
        "print(json.dumps([before, after, exits, len(snap.stacks)]))\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    before, after, exits, stacks = json.loads(proc.stdout)
    assert before == after and exits == ["exit"] and stacks > 0


def test_greenlets_queued_for_deletion_are_not_killed_by_collect():
    # A greenlet whose last reference dies in another thread is queued to be
    # killed by its own thread at its next greenlet call; collect() must not
    # be that call (killing it runs its code).
    code = (
        "import json, threading, greenlet, tbcollect\n"
        "ran = []\n"
        "def park():\n"
        "    try:\n"
        "        greenlet.getcurrent().parent.switch()\n"
        "    except greenlet.GreenletExit:\n"
        "        ran.append('exit')\n"
        "g = greenlet.greenlet(park)\n"
        "g.switch()\n"
        "box = [g]\n"
        "del g\n"
        "t = threading.Thread(target=box.clear)\n"
        "t.start()\n"
        "t.join()\n"
        "snap = tbcollect.collect()\n"
        "during = list(ran)\n"
        "greenlet.getcurrent()  # greenlet's own maintenance kills it now\n"
        "print(json.dumps([during, ran, snap.errors]))\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    during, after, errors = json.loads(proc.stdout)
    assert during == [] and after == ["exit"] and errors == []


def test_periodic_dump_rejects_bad_arguments():
    tbgevent = pytest.importorskip("tbcollect.gevent")
    import tbcollect

    for interval in (0, -1, float("inf"), float("nan"), True, "1"):
        with pytest.raises(tbcollect.InvalidOptionError, match="interval"):
            tbgevent.periodic_dump(interval)
    with pytest.raises(tbcollect.UnknownFormatError):
        tbgevent.periodic_dump(1, format="yaml")
    with pytest.raises(tbcollect.InvalidOptionError, match="invalid option colour"):
        tbgevent.periodic_dump(1, colour=True)
    with pytest.raises(tbcollect.InvalidOptionError, match="invalid option file"):
        tbgevent.periodic_dump(1, file=3.5)


@pytest.mark.fast_paths_only
@pytest.mark.skipif(
    sys.version_info >= (3, 14) or not getattr(sys, "_is_gil_enabled", lambda: True)(),
    reason="3.14+ and free-threaded builds list objects with PyUnstable_GC_VisitObjects",
)
def test_the_heap_scan_reads_the_generation_lists_in_place():
    # The layout proof failing on a supported version would only make the
    # scan slower (it falls back), so nothing else would notice: ask.
    code = (
        "import gc, greenlet, tbcollect._tbcollect as native\n"
        "print(native._heap_scan_source())\n"
        "gc.set_threshold(1234, 7, 5)\n"
        "print(native._heap_scan_source())\n"
        "gc.collect()\n"
        "print(native._heap_scan_source())\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["generation lists"] * 3


def test_gc_list_walk_finds_what_get_objects_finds():
    code = (
        "import gc, json, greenlet, tbcollect\n"
        "def park(): greenlet.getcurrent().parent.switch()\n"
        "gs = [greenlet.greenlet(park) for _ in range(50)]\n"
        "for g in gs[:25]: g.switch()\n"
        "gc.collect()  # the first ones move to the oldest generation\n"
        "more = [greenlet.greenlet(lambda: None) for _ in range(5)]\n"
        "gc.set_threshold(1234, 7, 5)  # the layout check reads the thresholds\n"
        "G = greenlet.greenlet\n"
        "expected = sorted(hex(id(o)) for o in gc.get_objects() if isinstance(o, G))\n"
        "snap = tbcollect.collect(threads=False, tasks=False)\n"
        "got = sorted(s.id.split(':')[1] for s in snap.stacks)\n"
        "print(json.dumps([expected, got]))\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    expected, got = json.loads(proc.stdout)
    assert len(expected) == 56 and got == expected


def test_a_big_heap_walked_by_two_threads_yields_each_greenlet_once():
    # 3.9-3.13 share the oldest generation between this thread and a helper
    # that walks it from the other end; where they meet must lose nothing
    # and repeat nothing, whatever their speeds, so the walk runs 30 times.
    code = (
        "import gc, json, greenlet, tbcollect\n"
        "def park(): greenlet.getcurrent().parent.switch()\n"
        "heap, gs = [], []\n"
        "for i in range(300_000):\n"
        "    heap.append([])\n"
        "    if i % 997 == 0:\n"
        "        g = greenlet.greenlet(park); g.switch(); gs.append(g)\n"
        "gc.collect()  # everything moves to the oldest generation\n"
        "G = greenlet.greenlet\n"
        "expected = sorted(hex(id(o)) for o in gc.get_objects() if isinstance(o, G))\n"
        "runs = []\n"
        "for _ in range(30):\n"
        "    snap = tbcollect.collect(threads=False, tasks=False)\n"
        "    runs.append([s.id.split(':')[1] for s in snap.stacks])\n"
        "print(json.dumps([expected, runs]))\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    expected, runs = json.loads(proc.stdout)
    assert len(expected) == 302  # 301 parked and the main greenlet
    for got in runs:
        assert len(got) == len(set(got)) and sorted(got) == expected


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc/self/status")
def test_the_heap_walks_helper_thread_is_gone_when_collect_returns():
    # The helper that shares a big heap's walk is joined before collect()
    # returns, whether it took a part, came too late for one, or is still
    # to be scheduled: no thread of ours is left running (or waiting for
    # work) in the program. The OS may count a thread for a moment after it
    # is joined, hence the second look.
    code = (
        "import gc, json, time, greenlet, tbcollect\n"
        "main = greenlet.getcurrent()\n"
        "child = greenlet.greenlet(main.switch)\n"
        "child.switch()\n"
        "heap = [[] for _ in range(300_000)]\n"
        "gc.collect()\n"
        "def threads():\n"
        "    with open('/proc/self/status') as f:\n"
        "        return [int(l.split()[1]) for l in f if l.startswith('Threads:')][0]\n"
        "counts = []\n"
        "for _ in range(30):\n"
        "    snap = tbcollect.collect(threads=False, tasks=False)\n"
        "    assert len(snap.stacks) == 2 and not snap.errors, snap.errors\n"
        "    n = threads()\n"
        "    if n != 1:\n"
        "        time.sleep(0.01)\n"
        "        n = threads()\n"
        "    counts.append(n)\n"
        "print(json.dumps(counts))\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [1] * 30


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_children_forked_during_another_threads_first_dump_can_dump():
    # pyo3's `intern!` cell let go of the GIL while claimed: a child forked
    # at that moment waited for it forever (a hung child in 6 runs of 6,
    # with 30 forks each, before the fix). Each run is a fresh process, so
    # the caches are filled for the first time while the forks go on.
    for _ in range(3):
        proc = run_python(str(PROGRAMS / "first_dump_fork.py"), "30", timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "0", "children that could not dump"


@pytest.mark.parametrize("kind", ["greenlet", "gevent"])
def test_a_greenlet_caught_half_built_is_left_out(kind):
    # Its C++ state (and a gevent Greenlet's Cython fields) do not exist yet:
    # reading them would crash the process, so the object is skipped.
    facts, lines = run_program("half_built.py", kind)
    assert facts == {"waited": True, "built": 1, "errors": [], "thread_alive": False}
    dump = validate_json(lines[0])
    (owner,) = [s for s in dump["stacks"] if s["kind"] == "thread" and s["name"] != "MainThread"]
    assert functions(owner)[0] == "parked", "the owner thread runs the victim's finally: block"
    (suspended,) = [
        s for s in greenlets(dump).values() if s["thread"] == owner["thread"] and s["frames"]
    ]
    # The owner's main greenlet waits inside the constructor of the new one.
    assert (suspended["name"], suspended["state"]) == (MAIN_GREENLET_NAME, "suspended")
    assert functions(suspended)[-2:] == ["owner", "build"]


def test_own_threads_are_named_and_marked_own_under_monkey_patching(tmp_path):
    """Under gevent's monkey-patching the dumper and the watchdog run in real
    OS threads that patched ``threading`` does not know (they would show as
    ``Dummy-1`` or ``<thread not known to threading>``): they carry their own
    names and are marked ``own``, so a dump has no tbcollect noise."""
    code = """
from gevent import monkey

monkey.patch_all()

import json, sys, threading, time
import gevent
import tbcollect

tbcollect.install(directory=sys.argv[1])
wd = tbcollect.watchdog(directory=sys.argv[1])
wd.watch_hub(threshold=5)
threading.current_thread()
gevent.sleep(0.2)
deadline = time.monotonic() + 30
while True:
    data = json.loads(tbcollect.collect().to_json())
    threads = [s for s in data["stacks"] if s["kind"] == "thread"]
    names = {s["name"]: bool(s.get("own")) for s in threads}
    if {"tbcollect-dumper", "tbcollect-watchdog"} <= set(names) or time.monotonic() > deadline:
        break
    gevent.sleep(0.05)
print(json.dumps({"names": names, "own": data["diagnosis"].get("own")}))
text = tbcollect.collect().to_text()
print(json.dumps({"unknown": "not known to threading" in text, "dummy": "Dummy-" in text}))
wd.stop()
"""
    result = run_python(code, str(tmp_path))
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines()[-2:])
    names = first["names"]
    assert names.get("tbcollect-dumper") is True, names
    assert names.get("tbcollect-watchdog") is True, names
    assert not [n for n, own in names.items() if n != "MainThread" and not own], names
    assert first["own"] == 2
    assert second == {"unknown": False, "dummy": False}

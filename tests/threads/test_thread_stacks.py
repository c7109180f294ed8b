"""Thread backend: every OS thread running Python code, named, with its whole stack."""

from __future__ import annotations

import _thread
import gc
import os
import queue
import subprocess
import sys
import threading
import time
import weakref

import pytest
import tbcollect

from tests.helpers import check_snapshot, functions, stacks_of

QUALNAMES = sys.version_info >= (3, 11)  # code objects carry co_qualname from 3.11


def qual(cls: str, func: str) -> str:
    return f"{cls}.{func}" if QUALNAMES else func


class Scene:
    """Real threads parked in a lock, a queue and a sleep three calls deep."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.queue: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self.lock_waiter, name="lock-waiter", daemon=True),
            threading.Thread(target=self.queue_waiter, name="queue-waiter"),
            SleepyWorker(self.stop, name="sleeper"),
        ]
        for t in self.threads:
            t.start()
        wait_until_parked(self.threads)

    def lock_waiter(self) -> None:
        with self.lock:
            pass

    def queue_waiter(self) -> None:
        self.queue.get()

    def close(self) -> None:
        self.lock.release()
        self.queue.put(None)
        self.stop.set()
        for t in self.threads:
            t.join(10)


class SleepyWorker(threading.Thread):
    def __init__(self, stop: threading.Event, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.stop = stop

    def run(self) -> None:
        self.level_one()

    def level_one(self) -> None:
        self.level_two()

    def level_two(self) -> None:
        self.level_three()

    def level_three(self) -> None:
        while not self.stop.is_set():
            time.sleep(0.05)


def wait_until_parked(threads, deadline: float = 10.0) -> None:
    """Waits (hang guard only) until each thread has a frame in its target."""
    end = time.monotonic() + deadline
    idents = {t.ident for t in threads}
    while time.monotonic() < end:
        frames = sys._current_frames()
        if all(i in frames for i in idents):
            time.sleep(0.05)
            return
        time.sleep(0.01)
    raise AssertionError("threads did not start")


@pytest.fixture
def scene():
    s = Scene()
    yield s
    s.close()


def by_name(snap: tbcollect.Snapshot, name: str) -> tbcollect.Stack:
    matches = [s for s in snap.stacks if s.name == name]
    assert len(matches) == 1, [s.name for s in snap.stacks]
    return matches[0]


def test_named_threads_with_their_whole_stacks(scene):
    snap = tbcollect.collect()
    data = check_snapshot(snap)
    assert data["schema"] == "tbcollect/1"
    assert snap.errors == []

    lock = by_name(snap, "lock-waiter")
    assert lock.kind == "thread"
    assert lock.id == f"thread:{scene.threads[0].ident}"
    assert lock.thread == scene.threads[0].ident
    assert lock.native_id == scene.threads[0].native_id
    assert lock.daemon is True and lock.current is False
    assert lock.frames[-1].function == qual("Scene", "lock_waiter")
    assert lock.frames[-1].source == "with self.lock:"
    assert lock.frames[-1].filename == __file__
    assert lock.state in {"sleeping", "running"}

    q = by_name(snap, "queue-waiter")
    assert q.daemon is False
    assert qual("Queue", "get") in functions(q)
    assert functions(q)[-1] == qual("Condition", "wait")

    sleeper = by_name(snap, "sleeper")
    names = functions(sleeper)
    assert names[-4:] == [
        qual("SleepyWorker", f) for f in ("run", "level_one", "level_two", "level_three")
    ]
    # outermost first: threading's bootstrap comes before our code
    assert names[0] == qual("Thread", "_bootstrap")
    assert sleeper.frames[-1].source == "time.sleep(0.05)"
    assert isinstance(sleeper.frames[-1].lineno, int)


def test_stacks_through_c_calls_generators_and_comprehensions_match_traceback():
    # 3.11+ walks interpreter frames directly; entries from C (a key function
    # called by `sorted`, 3.12+ shim frames), a running generator and a
    # comprehension must come out as `traceback` sees them.
    import traceback

    parked = threading.Event()
    release = threading.Event()

    def park(_item):
        parked.set()
        release.wait(30)
        return 0

    def generate():
        yield park(1)

    def through_c():
        sorted([1], key=lambda item: next(generate()))

    def deep(n):
        if n:
            return deep(n - 1)
        return [through_c() for _ in range(1)]

    t = threading.Thread(target=deep, args=(5,), name="c-boundaries", daemon=True)
    t.start()
    assert parked.wait(10)
    try:
        expected = [
            (f.name, f.lineno) for f in traceback.extract_stack(sys._current_frames()[t.ident])
        ]
        for _ in range(2):  # the first walk of a capture is checked, the next trusted
            stack = by_name(tbcollect.collect(greenlets=False, tasks=False), "c-boundaries")
            got = [(f.function.rsplit(".", 1)[-1], f.lineno) for f in stack.frames]
            assert got == [(name.rsplit(".", 1)[-1], line) for name, line in expected]
    finally:
        release.set()
        t.join(10)


def test_calling_thread_is_current_and_ends_at_the_call():
    snap = tbcollect.collect()
    me = [s for s in stacks_of(snap, "thread") if s.current]
    assert len(me) == 1
    assert me[0].thread == threading.get_ident()
    assert me[0].name == threading.current_thread().name
    assert me[0].state == "running"
    last = me[0].frames[-1]
    assert last.function.endswith("test_calling_thread_is_current_and_ends_at_the_call")
    assert last.source == "snap = tbcollect.collect()"


def test_dump_all_ends_at_the_callers_line_too():
    text = tbcollect.dump_all()
    # the collector's own frames (dump_all in tbcollect/__init__.py) are trimmed
    assert "tbcollect/__init__.py" not in text
    assert "text = tbcollect.dump_all()" in text


def test_thread_unknown_to_threading_gets_a_placeholder():
    started = threading.Event()
    stop = threading.Event()

    def raw_worker() -> None:
        started.set()
        while not stop.is_set():
            time.sleep(0.01)

    ident = _thread.start_new_thread(raw_worker, ())
    try:
        assert started.wait(10)
        snap = tbcollect.collect()
        check_snapshot(snap)
        raw = [s for s in snap.stacks if s.thread == ident]
        assert len(raw) == 1
        assert raw[0].name == "<thread not known to threading>"
        assert raw[0].native_id is None and raw[0].daemon is None
        assert raw[0].frames[-1].function.endswith("raw_worker")
        assert "<thread not known to threading>" in snap.to_text()
    finally:
        stop.set()


def recurse(n: int, ready: threading.Event, stop: threading.Event) -> None:
    if n:
        recurse(n - 1, ready, stop)
    else:
        ready.set()
        stop.wait()


@pytest.mark.parametrize("max_depth", [50, 1024])
def test_deep_recursion_is_cut_with_an_explicit_marker(max_depth):
    ready, stop = threading.Event(), threading.Event()
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)
    t = threading.Thread(target=recurse, args=(3000, ready, stop), name="deep", daemon=True)
    try:
        t.start()
        assert ready.wait(10)
        snap = tbcollect.collect(max_depth=max_depth)
        check_snapshot(snap)
        deep = by_name(snap, "deep")
        assert len(deep.frames) == max_depth
        # kept: the innermost frames (where it is stuck); dropped: the outermost
        assert deep.frames[-1].function.endswith(("Event.wait", "Condition.wait", "wait"))
        total = len(deep.frames) + deep.frames_omitted
        assert total >= 3001 + 3  # recurse frames + threading bootstrap
        assert f"  ... {deep.frames_omitted} frames omitted\n" in snap.to_text()
    finally:
        stop.set()
        t.join(10)
        sys.setrecursionlimit(old_limit)


@pytest.mark.slow
def test_threads_starting_and_ending_while_collecting():
    stop = threading.Event()
    spawned = 0

    def churn() -> None:
        nonlocal spawned
        while not stop.is_set():
            batch = [threading.Thread(target=time.sleep, args=(0.001,)) for _ in range(8)]
            for t in batch:
                t.start()
            for t in batch:
                t.join()
            spawned += len(batch)

    churner = threading.Thread(target=churn, name="churner")
    churner.start()
    try:
        for _ in range(300):
            snap = tbcollect.collect()
            assert snap.errors == []
            assert any(s.current for s in snap.stacks)
        check_snapshot(snap)
    finally:
        stop.set()
        churner.join(10)
    assert spawned > 0


def test_identical_stacks_are_grouped_and_grouping_can_be_switched_off():
    stop = threading.Event()
    workers = [
        threading.Thread(target=stop.wait, name=f"worker-{i}", daemon=True) for i in range(5)
    ]
    for w in workers:
        w.start()
    wait_until_parked(workers)
    try:
        snap = tbcollect.collect()
        text = snap.to_text()
        assert (
            "5 threads with this same stack: worker-0, worker-1, worker-2, worker-3, worker-4\n"
            in text
        )
        flat = snap.to_text(group=False)
        assert "with this same stack" not in flat
        assert sum(line.startswith('Thread "worker-') for line in flat.splitlines()) == 5
    finally:
        stop.set()


def test_text_is_in_python_traceback_form(scene):
    text = tbcollect.collect().to_text()
    lines = text.splitlines()
    assert lines[0].startswith(f"tbcollect: pid {__import__('os').getpid()} at ")
    assert "Python " + ".".join(map(str, sys.version_info[:3])) in lines[0]
    assert lines[0].endswith(("0 greenlets, 0 tasks",)) or "greenlet" in lines[0]
    frame_lines = [line for line in lines if line.lstrip().startswith("File ")]
    assert frame_lines
    for line in frame_lines:
        assert line.startswith('  File "')
        assert ", line " in line and ", in " in line
    # the source line sits under its frame, indented two more spaces
    line = SleepyWorker.level_three.__code__.co_firstlineno + 2
    function = qual("SleepyWorker", "level_three")
    i = lines.index(f'  File "{__file__}", line {line}, in {function}')
    assert lines[i + 1] == "    time.sleep(0.05)"
    assert 'Thread "sleeper" (ident ' in text and ", daemon" in text


def test_source_lines_can_be_left_out(scene):
    snap = tbcollect.collect(source=False)
    assert all(f.source is None for s in snap.stacks for f in s.frames)
    check_snapshot(snap)


def test_other_kinds_can_be_switched_off():
    snap = tbcollect.collect(threads=False, greenlets=False, tasks=False)
    assert snap.stacks == [] and len(snap) == 0
    assert snap.errors == []
    check_snapshot(snap)


def test_snapshot_keeps_no_reference_to_frames_or_their_locals():
    class Payload:
        pass

    ready, release = threading.Event(), threading.Event()
    box: list = []

    def holder() -> None:
        payload = Payload()
        box.append(weakref.ref(payload))
        ready.set()
        release.wait()

    t = threading.Thread(target=holder)
    t.start()
    assert ready.wait(10)
    snap = tbcollect.collect()
    release.set()
    t.join(10)
    gc.collect()
    assert box[0]() is None, "the payload in the thread's frame outlived the thread"
    assert any(s.name == t.name for s in snap.stacks)  # the snapshot itself is still there


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_state_is_restored(enabled):
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        tbcollect.collect()
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


def test_no_thread_attribute_code_runs():
    calls: list = []

    class Hostile(threading.Thread):
        def __getattribute__(self, name):
            if (
                name in ("name", "daemon", "native_id", "ident")
                and threading.current_thread() is not self
            ):
                calls.append(name)
            return super().__getattribute__(name)

        def __getattr__(self, name):
            calls.append(name)
            raise AttributeError(name)

    class CollidingKey:
        # shares the hash of an attribute name capture looks up
        def __hash__(self):
            return hash("_native_id")

        def __eq__(self, other):
            calls.append("__eq__")
            return False

    stop = threading.Event()
    t = Hostile(target=stop.wait, name="hostile", daemon=True)
    t.start()
    wait_until_parked([t])
    # a hashed lookup of "_native_id" would now land on the foreign key
    del t.__dict__["_native_id"]
    t.__dict__[CollidingKey()] = "foreign"
    calls.clear()
    try:
        snap = tbcollect.collect()
        stack = by_name(snap, "hostile")
        assert stack.daemon is True
        assert calls == []
    finally:
        stop.set()


def test_replaced_current_frames_is_not_called(monkeypatch):
    called = []
    monkeypatch.setattr(sys, "_current_frames", lambda: called.append(1) or {})
    snap = tbcollect.collect()
    assert called == []
    # The builtin taken at import still lists every thread (issue 15).
    assert [s.name for s in stacks_of(snap, "thread") if s.current] == ["MainThread"]
    assert snap.errors == []
    check_snapshot(snap)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
# 3.12+ warns about fork() in a process with threads; that is the point here.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_reports_its_own_native_id():
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running pytest's cleanup
        try:
            me = [s for s in tbcollect.collect().stacks if s.current][0]
            os.write(write_end, f"{me.native_id} {os.getpid()} {me.name}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        native_id, child_pid, name = f.read().split(" ", 2)
    os.waitpid(pid, 0)
    # threading still remembers the parent's thread; the OS knows better
    assert native_id == child_pid
    assert name == threading.current_thread().name


def test_unencodable_thread_name_is_replaced_not_raised():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="bad-\udcff-name", daemon=True)
    t.start()
    wait_until_parked([t])
    try:
        snap = tbcollect.collect()
        (stack,) = [s for s in snap.stacks if s.thread == t.ident]
        assert stack.name == "bad-?-name"
        check_snapshot(snap)
    finally:
        stop.set()


# Fork while other threads are inside a dump (reading source lines and
# rendering without the GIL): the child must still dump. A lock held by
# another thread at fork() stays locked in the child for good; the source
# cache's did, and a child's dump hung on it (3 runs out of 3 before the fix).
FORK_WHILE_DUMPING = r"""
import os, sys, threading, warnings
import tbcollect

warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
stop = threading.Event()


def dumper():
    while not stop.is_set():
        tbcollect.collect().to_json()


threads = [threading.Thread(target=dumper, daemon=True) for _ in range(2)]
for t in threads:
    t.start()
for _ in range(300):
    pid = os.fork()
    if pid == 0:
        text = tbcollect.collect().to_text()
        os._exit(0 if f"pid {os.getpid()} " in text else 3)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        sys.exit(f"child exited with status {status}")
stop.set()
for t in threads:
    t.join()
print("forked 300 children, each dumped")
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_other_threads_dump_can_dump():
    done = subprocess.run(
        [sys.executable, "-c", FORK_WHILE_DUMPING],
        capture_output=True,
        text=True,
        timeout=120,  # about a second when nothing hangs
    )
    assert done.returncode == 0, done.stderr
    assert "forked 300 children, each dumped" in done.stdout

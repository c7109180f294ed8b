"""Issue 15, finding 7: capture runs no code of the program, even when the
program planted keys with a chosen hash in ``sys.modules`` and module
dicts, replaced ``time.monotonic`` with ``breakpoint``, or replaced
``sys._current_frames``. Each runs in a subprocess: the damage stays there."""

from __future__ import annotations

import textwrap

from tests.helpers import run_python

PLANTED_KEYS = textwrap.dedent(
    """
    import asyncio, functools, sys, threading, time
    import tbcollect

    calls = []

    class Planted:
        # A key that claims the hash of a name capture looks up.
        def __init__(self, name):
            self.name = name
        def __hash__(self):
            return hash(self.name)
        def __eq__(self, other):
            calls.append(self.name)
            return False

    NAMES = ["gevent", "greenlet", "asyncio", "asyncio.tasks", "threading", "time",
             "functools", "gc", "tbcollect", "_current_tasks", "_active", "Thread",
             "monotonic", "partial", "sleep", "__file__", "__version__", "_C_API",
             "uvloop", "eventlet"]
    modules = [threading, time, asyncio, sys.modules["asyncio.tasks"], functools, tbcollect]
    for name in NAMES:
        sys.modules[Planted(name)] = None
        for module in modules:
            module.__dict__[Planted(name)] = None

    release = threading.Event()
    worker = threading.Thread(target=release.wait, name="worker")
    worker.start()

    collect = tbcollect.collect
    during = []

    async def main():
        sleeper = asyncio.ensure_future(asyncio.sleep(30))
        await asyncio.sleep(0)
        # Only the calls made inside collect() count: the program's own
        # lookups meet the planted keys too.
        calls.clear()
        snap = collect()
        during.extend(calls)
        sleeper.cancel()
        return snap

    snap = asyncio.run(main())
    release.set()
    worker.join()
    print("CALLS", len(during), sorted(set(during)))
    print("WORKER", any(s.name == "worker" for s in snap.stacks))
    print("SLEEP", any((s.awaiting or "").startswith("sleep (wakes in") for s in snap.stacks))
    """
)


def test_planted_keys_in_sys_modules_and_module_dicts_are_never_compared() -> None:
    proc = run_python(PLANTED_KEYS)
    assert proc.returncode == 0, proc.stderr
    assert "CALLS 0 []" in proc.stdout, proc.stdout
    assert "WORKER True" in proc.stdout
    assert "SLEEP True" in proc.stdout


def test_a_replaced_time_monotonic_is_never_called() -> None:
    code = textwrap.dedent(
        """
        import asyncio, sys, time
        import tbcollect

        hooked = []
        sys.breakpointhook = lambda *a, **k: hooked.append(1)

        async def main():
            sleeper = asyncio.ensure_future(asyncio.sleep(30))
            await asyncio.sleep(0)
            time.monotonic = breakpoint  # a builtin: the old check let it through
            try:
                return tbcollect.collect()
            finally:
                time.monotonic = real
                sleeper.cancel()

        real = time.monotonic
        snap = asyncio.run(main())
        print("HOOKED", len(hooked))
        print("AWAITING", [s.awaiting for s in snap.stacks if s.kind == "task"])
        """
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert "HOOKED 0" in proc.stdout, proc.stdout
    assert "sleep (wakes in " in proc.stdout, proc.stdout


def test_a_replaced_current_frames_cannot_hide_threads() -> None:
    code = textwrap.dedent(
        """
        import functools, sys, threading
        import tbcollect

        release = threading.Event()
        worker = threading.Thread(target=release.wait, name="worker")
        worker.start()
        called = []
        # A C callable returning a dict keyed by thread ident, like
        # sys._current_exceptions (3.10+) but on every version.
        by_ident = functools.partial(dict.fromkeys, [threading.get_ident(), worker.ident])
        for replacement in (lambda: called.append(1) or {}, by_ident, dict):
            sys._current_frames = replacement
            snap = tbcollect.collect()
            print("WORKER", any(s.name == "worker" and s.frames for s in snap.stacks))
            print("ERRORS", snap.errors)
        print("CALLED", len(called))
        release.set()
        worker.join()
        """
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("WORKER True") == 3, proc.stdout
    assert proc.stdout.count("ERRORS []") == 3, proc.stdout
    assert "CALLED 0" in proc.stdout


def test_current_frames_replaced_before_import_is_said_in_errors() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys._current_frames = lambda: {}
        import tbcollect
        snap = tbcollect.collect()
        print("THREADS", sum(s.kind == "thread" for s in snap.stacks))
        print("ERRORS", snap.errors)
        """
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert "THREADS 0" in proc.stdout
    assert "sys._current_frames was not the interpreter's builtin" in proc.stdout, proc.stdout

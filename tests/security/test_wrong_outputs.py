"""Issue 15, wrong outputs: ``wait_for`` shows its own timeout, greenlets of
a thread that has exited are ``dead``, and a thread whose ``_name`` is not a
``str`` keeps a (safely rendered) name."""

from __future__ import annotations

import asyncio
import re
import textwrap
import threading
from typing import List

import pytest
import tbcollect

from tests.helpers import run_python


def test_wait_for_shows_when_its_timeout_ends_the_wait() -> None:
    async def main() -> List[str]:
        waiter = asyncio.ensure_future(asyncio.wait_for(asyncio.sleep(30), 5))
        waiter.set_name("waiter")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        snap = tbcollect.collect()
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        return [s.awaiting or "" for s in snap.stacks if s.name == "waiter"]

    (awaiting,) = asyncio.run(main())
    found = re.search(r"times out in ([0-9.]+) s", awaiting)
    assert found, awaiting
    # The timeout (5 s) ends this wait, not the sleep's 30 s.
    assert float(found.group(1)) <= 5.0, awaiting


GREENLETS_OF_AN_EXITED_THREAD = textwrap.dedent(
    """
    import greenlet, threading
    import tbcollect

    keep = []

    def worker():
        def child():
            greenlet.getcurrent().parent.switch()
        started = greenlet.greenlet(child)
        started.switch()  # suspended in child
        keep.append(started)
        keep.append(greenlet.greenlet(lambda: None))  # never started

    t = threading.Thread(target=worker)
    t.start()
    t.join()

    def states():
        ids = {hex(id(g)) for g in keep}
        return sorted(
            s.state for s in tbcollect.collect().stacks
            if s.kind == "greenlet" and s.id.split(":")[1] in ids
        )

    print("BEFORE", states())
    # greenlet's own check of exited threads runs on this thread's next use.
    greenlet.greenlet(lambda: None).switch()
    print("AFTER", states())
    """
)


def test_greenlets_of_an_exited_thread_are_dead() -> None:
    pytest.importorskip("greenlet")
    proc = run_python(GREENLETS_OF_AN_EXITED_THREAD)
    assert proc.returncode == 0, proc.stderr
    assert "BEFORE ['dead', 'dead']" in proc.stdout, proc.stdout
    assert "AFTER ['dead', 'dead']" in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    "name, shown",
    [
        (7, "7"),
        (b"w\x1b1", r"b'w\x1b1'"),
        (object(), "<object object>"),
        (["x"], "<list object>"),
    ],
)
def test_a_thread_whose_name_is_no_str_keeps_a_safe_name(name: object, shown: str) -> None:
    release = threading.Event()
    t = threading.Thread(target=release.wait, daemon=True)
    t.start()
    t._name = name  # type: ignore[assignment]  # what some programs do
    try:
        snap = tbcollect.collect()
        stack = next(s for s in snap.stacks if s.thread == t.ident)
        assert stack.name != tbcollect._tbcollect.UNKNOWN_THREAD_NAME
        assert f'Thread "{shown}"' in snap.to_text(group=False)
    finally:
        release.set()
        t.join()

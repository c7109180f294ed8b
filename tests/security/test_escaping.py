"""Issue 15, finding 4: nothing the target chose (names, filenames, code
names, task names, sources, values, and every field of a loaded dump) can
start a line or reach a terminal as a control sequence in text output."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Callable, List

import tbcollect

from tests.helpers import run_python

# A line break that forges a traceback line, a screen clear, a bell, a CR
# that rewrites the line, C1 CSI, and a right-to-left override.
EVIL = 'evil\n  File "/forged.py", line 1, in forged\x1b[2J\x07\r\x9b31m\u202e'
RAW = ["\x1b", "\x07", "\r", "\x9b", "\u202e"]


def assert_clean(text: str) -> None:
    for bad in RAW:
        assert bad not in text, f"{bad!r} reached the output:\n{text!r}"
    assert '\n  File "/forged.py"' not in text, text


def hostile_function(release: threading.Event) -> Callable[[], None]:
    """A function whose code object's filename and (qual)name are EVIL."""
    source = "def f(release):\n    release.wait(60)\n"
    code = compile(source, EVIL, "exec")
    namespace: dict = {}
    exec(code, namespace)
    f = namespace["f"]
    changes: dict = {"co_name": EVIL}
    if sys.version_info >= (3, 11):
        changes["co_qualname"] = EVIL
    f.__code__ = f.__code__.replace(**changes)
    return lambda: f(release)


def test_code_names_filenames_and_group_members_are_escaped() -> None:
    release = threading.Event()
    threads: List[threading.Thread] = []
    for _ in range(2):
        # Two threads in the same code: one group, whose member list names both.
        t = threading.Thread(target=hostile_function(release), name=EVIL, daemon=True)
        t.start()
        threads.append(t)
    try:
        snap = tbcollect.collect()
        assert any(f.filename == EVIL for s in snap.stacks for f in s.frames), "not captured"
        text = snap.to_text()
        assert "2 threads with this same stack: " in text
        assert_clean(text)
        assert_clean(snap.to_text(group=False))
        for fmt in ("collapsed", "svg"):
            assert_clean(snap.render(fmt))
        for frame in (f for s in snap.stacks for f in s.frames):
            assert_clean(repr(frame))
    finally:
        release.set()
        for t in threads:
            t.join()


def test_task_names_and_what_tasks_await_are_escaped() -> None:
    async def child() -> None:
        await asyncio.sleep(30)

    async def main() -> str:
        inner = asyncio.ensure_future(child())
        inner.set_name(EVIL)
        outer = asyncio.ensure_future(asyncio.wait_for(inner, 20))
        outer.set_name(EVIL + "-outer")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        text = tbcollect.collect().to_text()
        outer.cancel()
        inner.cancel()
        await asyncio.gather(outer, inner, return_exceptions=True)
        return text

    text = asyncio.run(main())
    assert "Task " in text
    assert_clean(text)


def crafted_dump() -> dict:
    """A real dump with EVIL planted in every text field a renderer prints."""
    secret = "value"  # noqa: F841 - a local the dump carries
    data: dict = json.loads(tbcollect.collect(locals=True).to_json())
    data["created"] = EVIL
    data["python"] = EVIL
    data["errors"] = [EVIL]
    data["probes"] = [
        {"name": EVIL, "result": {"k": EVIL}, "error": None},
        {"name": EVIL, "result": None, "error": EVIL},
    ]
    for stack in data["stacks"]:
        stack["name"] = EVIL
        stack["state"] = EVIL
        for frame in stack["frames"]:
            frame["filename"] = EVIL
            frame["function"] = EVIL
            frame["source"] = EVIL
            if frame.get("locals"):
                frame["locals"] = {EVIL: EVIL}
    return data


def test_tbcollect_render_escapes_a_crafted_dump(tmp_path: Path) -> None:
    path = tmp_path / "crafted.json"
    path.write_text(json.dumps(crafted_dump()))
    for fmt in ("text", "collapsed"):
        done = subprocess.run(
            [sys.executable, "-m", "tbcollect", "render", str(path), "--format", fmt],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "evil" in done.stdout
        assert_clean(done.stdout)


def test_loaded_dump_diff_is_escaped(tmp_path: Path) -> None:
    a = tbcollect.load(json.dumps(crafted_dump()))
    b = tbcollect.collect()
    assert_clean(tbcollect.diff(a, b).to_text())
    assert_clean(tbcollect.diff(b, a).to_text())


def test_escape_text_is_exposed_and_leaves_plain_text_alone() -> None:
    from tbcollect._tbcollect import escape_text

    assert escape_text("worker-1 naïve") == "worker-1 naïve"
    assert escape_text("a\nb\x1b[0m") == "a\\nb\\x1b[0m"


def test_watchdog_report_lines_are_escaped(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import logging, sys, threading, time
        import tbcollect
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="LOG %(message)s")
        wd = tbcollect.watchdog(directory=sys.argv[1])
        release = threading.Event()

        def worker():
            beat = wd.watch_thread(threshold=0.2)
            beat.beat()
            release.wait(60)
            beat.cancel()

        t = threading.Thread(target=worker, name=THREAD_NAME)
        t.start()
        deadline = time.monotonic() + 60  # hang guard
        while wd.reports < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        release.set()
        t.join()
        wd.stop()
        """
    ).replace("THREAD_NAME", repr(EVIL))
    proc = run_python(code, str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "LOG tbcollect watchdog: thread heartbeat: thread " in proc.stdout, proc.stdout
    assert_clean(proc.stdout)
    files = sorted(tmp_path.glob("tbcollect-*"))
    assert len(files) == 1
    assert_clean(files[0].read_text())

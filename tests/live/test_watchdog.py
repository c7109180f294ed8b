"""Watchdogs on real hangs: a thread that stops beating, an event loop blocked
by a callback, a gevent hub blocked by a greenlet -- each in a subprocess.

No assertion here is about time. Hangs last until the watchdog has reported
them (the target polls ``wd.reports``), with generous deadlines only as hang
guards; the healthy runs last a few thresholds of ordinary work.
"""

from __future__ import annotations

import json
import os
import textwrap
import threading
from pathlib import Path
from typing import Dict, List

import pytest
import tbcollect

from tests.helpers import run_python, validate_json

# Every watchdog decides by elapsed time (thresholds, heartbeats, reminders).
pytestmark = pytest.mark.slow

# Common prelude of every target: logging to stdout, a hang guard helper.
PRELUDE = """
import logging, os, sys, threading, time
import tbcollect
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="LOG %(message)s")
DIR = sys.argv[1]

def say(*words):
    # One write per line, so the watcher's log lines cannot split it.
    sys.stdout.write(" ".join(map(str, words)) + chr(10))
    sys.stdout.flush()

def until(condition, guard=60.0):
    # Hang guard: a broken watchdog fails the test instead of hanging it.
    deadline = time.monotonic() + guard
    while not condition():
        if time.monotonic() > deadline:
            say("HANG GUARD EXPIRED")
            os._exit(3)
        time.sleep(0.01)
"""


def run_target(body: str, directory: Path, timeout: float = 90) -> str:
    code = PRELUDE + textwrap.dedent(body)
    proc = run_python(code, str(directory), timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def dump_files(directory: Path) -> List[Path]:
    return sorted(directory.glob("tbcollect-*"))


def thread_frames(dump_text: str, thread_name: str) -> str:
    """The block of the text dump that belongs to the named thread."""
    blocks = dump_text.split("\n\n")
    found = [b for b in blocks if b.startswith(f'Thread "{thread_name}"')]
    assert len(found) == 1, dump_text
    return found[0]


def report_lines(stdout: str) -> List[str]:
    return [line for line in stdout.splitlines() if line.startswith("LOG tbcollect watchdog:")]


def test_thread_heartbeat_fires_once_on_a_long_hang_and_logs_recovery(tmp_path):
    out = run_target(
        """
        wd = tbcollect.watchdog(directory=DIR)
        release = threading.Event()

        def stuck_in_here():
            release.wait(60)

        def worker():
            beat = wd.watch_thread(threshold=0.3)
            for _ in range(20):
                beat.beat()
                time.sleep(0.01)
            stuck_in_here()
            beat.beat()
            until(lambda: not beat.stuck)
            beat.cancel()

        t = threading.Thread(target=worker, name="worker-7")
        t.start()
        until(lambda: wd.reports >= 1)
        # Keep it hung for many thresholds: still one report.
        time.sleep(3.0)
        say("REPORTS", wd.reports)
        release.set()
        t.join()
        say("STOPPED", wd.stop())
        say("ALIVE", [th.name for th in threading.enumerate()])
        """,
        tmp_path,
    )
    assert "REPORTS 1\n" in out
    assert "STOPPED True\n" in out
    assert "tbcollect-watchdog" not in out.split("ALIVE")[1], "stop() joins the watcher thread"
    files = dump_files(tmp_path)
    assert len(files) == 1, out
    assert oct(files[0].stat().st_mode & 0o777) == "0o600"
    text = files[0].read_text()
    header = text.splitlines()[0]
    assert header.startswith('tbcollect watchdog: thread heartbeat: thread "worker-7" (ident ')
    assert "has not sent a heartbeat for " in header
    assert header.endswith("(threshold 0.3 s)")
    # The dump was taken while the thread was stuck: its stack shows where.
    assert "in stuck_in_here" in thread_frames(text.split("\n\n", 1)[1], "worker-7")
    logs = report_lines(out)
    assert len(logs) == 2, out
    assert logs[0] == "LOG " + header
    # The log gets a few lines (what hangs, where, the file), not the dump.
    lines = out.splitlines()
    at = lines.index(logs[0])
    assert lines[at + 1].startswith("  stuck in "), lines[at + 1]
    assert " stuck_in_here (" in lines[at + 1] and lines[at + 1].endswith("; worker-7")
    assert lines[at + 2] == "(dump written to " + str(files[0]) + ")"
    assert lines[at + 3].startswith(("LOG ", "REPORTS ")), lines[at + 3]
    assert "Diagnosis" not in out
    assert logs[1].startswith('LOG tbcollect watchdog: thread heartbeat: thread "worker-7"')
    assert " recovered after " in logs[1]


def test_module_heartbeat_beats_the_calling_threads_watch(tmp_path):
    out = run_target(
        """
        wd = tbcollect.watchdog(directory=DIR)
        beat = wd.watch_thread(threshold=1.0)
        for _ in range(300):   # three thresholds of work
            tbcollect.heartbeat()
            time.sleep(0.01)
        say("REPORTS", wd.reports, beat.stuck)
        tbcollect.heartbeat()  # no watch left for this thread: a no-op
        beat.cancel()
        tbcollect.heartbeat()
        wd.stop()
        """,
        tmp_path,
    )
    assert "REPORTS 0 False\n" in out
    assert dump_files(tmp_path) == []


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_event_loop_lag_dumps_the_blocking_callback_in_the_loop_thread(tmp_path, loop_kind):
    if loop_kind == "uvloop":
        pytest.importorskip("uvloop")
    out = run_target(
        f"""
        import asyncio
        LOOP_KIND = {loop_kind!r}
        wd = tbcollect.watchdog(directory=DIR)
        """
        + """
        def blocking_callback():
            # Blocks the loop until the watchdog has seen it.
            until(lambda: wd.reports >= 1)

        async def main():
            wd.watch_loop(threshold=0.3)
            for _ in range(20):
                await asyncio.sleep(0.01)
            asyncio.get_running_loop().call_soon(blocking_callback)
            await asyncio.sleep(0.05)

        def loop_thread():
            if LOOP_KIND == "uvloop":
                import uvloop
                loop = uvloop.new_event_loop()
            else:
                loop = asyncio.new_event_loop()
            loop.run_until_complete(main())
            loop.close()

        t = threading.Thread(target=loop_thread, name="loop-thread")
        t.start()
        t.join()
        # The closed loop's watch goes away by itself.
        until(lambda: not wd.watches)
        say("REPORTS", wd.reports)
        wd.stop()
        """,
        tmp_path,
    )
    assert "REPORTS 1\n" in out
    [path] = dump_files(tmp_path)
    text = path.read_text()
    header, dump = text.split("\n\n", 1)
    assert header.startswith("tbcollect watchdog: event loop lag: loop 0x")
    assert ' in thread "loop-thread" (ident ' in header, header
    assert "has not run a callback for " in header
    assert "in blocking_callback" in thread_frames(dump, "loop-thread")
    assert " recovered after " in report_lines(out)[1]
    assert "no longer watching" in out and "is closed" in out


def test_gevent_hub_watch_dumps_the_greenlet_blocking_the_hub(tmp_path):
    pytest.importorskip("gevent")
    out = run_target(
        """
        import gevent
        wd = tbcollect.watchdog(directory=DIR, format="json")
        wd.watch_hub(threshold=0.3)

        def polite():
            for _ in range(20):
                gevent.sleep(0.01)

        def blocking_greenlet():
            gevent.sleep(0.05)
            # time.sleep is not monkey-patched here: the hub cannot run.
            until(lambda: wd.reports >= 1)

        gevent.joinall([gevent.spawn(polite), gevent.spawn(blocking_greenlet)])
        gevent.sleep(0.1)
        say("REPORTS", wd.reports)
        wd.stop()
        """,
        tmp_path,
    )
    assert "REPORTS 1\n" in out
    [path] = dump_files(tmp_path)
    assert path.suffix == ".json"
    data = validate_json(path.read_text())
    [report] = data["watchdog"]["reports"]
    assert report["watch"] == "gevent hub"
    assert report["threshold"] == 0.3
    assert report["message"].startswith("tbcollect watchdog: gevent hub: hub 0x")
    assert 'in thread "MainThread"' in report["message"]
    [culprit] = [s for s in data["stacks"] if s["id"] == report["culprit"]]
    assert culprit["name"] == "MainThread"
    assert "blocking_greenlet" in [f["function"] for f in culprit["frames"]]
    # The report loads back as a snapshot.
    assert tbcollect.load(str(path)).pid == data["pid"]


def test_gevent_monkey_patched_process_still_gets_a_real_watcher_thread(tmp_path):
    pytest.importorskip("gevent")
    out = run_target(
        """
        from gevent import monkey
        monkey.patch_all()
        import gevent
        sleep = monkey.get_original("time", "sleep")
        wd = tbcollect.watchdog(directory=DIR)
        wd.watch_hub(threshold=0.3)
        beat = wd.watch_thread(threshold=30)

        def blocking_greenlet():
            gevent.sleep(0.05)
            while wd.reports < 1:
                sleep(0.01)

        gevent.spawn(blocking_greenlet).join()
        tbcollect.heartbeat()
        say("REPORTS", wd.reports)
        say("STOPPED", wd.stop(timeout=30))
        """,
        tmp_path,
    )
    assert "REPORTS 1\n" in out
    assert "STOPPED True\n" in out
    [path] = dump_files(tmp_path)
    assert "in blocking_greenlet" in path.read_text()


def test_healthy_process_stays_quiet(tmp_path):
    pytest.importorskip("gevent")
    out = run_target(
        """
        import asyncio, gevent
        THRESHOLD = 1.5
        wd = tbcollect.watchdog(directory=DIR)
        stop = threading.Event()

        def worker():
            beat = wd.watch_thread(threshold=THRESHOLD)
            while not stop.is_set():
                beat.beat()
                sum(range(10000))
                time.sleep(0.01)

        async def busy_loop():
            wd.watch_loop(threshold=THRESHOLD)
            async def chatter():
                while not stop.is_set():
                    await asyncio.sleep(0.005)
            await asyncio.gather(*(chatter() for _ in range(20)))

        threads = [
            threading.Thread(target=worker),
            threading.Thread(target=lambda: asyncio.run(busy_loop())),
        ]
        for t in threads:
            t.start()
        wd.watch_hub(threshold=THRESHOLD)
        def greenlet_work():
            while not stop.is_set():
                gevent.sleep(0.005)
        gs = [gevent.spawn(greenlet_work) for _ in range(20)]
        # Four thresholds of healthy work (gevent.sleep keeps the hub switching).
        end = time.monotonic() + 4 * THRESHOLD
        while time.monotonic() < end:
            gevent.sleep(0.05)
        stop.set()
        gevent.joinall(gs)
        for t in threads:
            t.join()
        say("WATCHES", len(wd.watches), "REPORTS", wd.reports)
        wd.stop()
        """,
        tmp_path,
    )
    assert "REPORTS 0\n" in out
    assert report_lines(out) == []
    assert dump_files(tmp_path) == []


def test_reminders_repeat_a_long_hang_at_the_configured_interval(tmp_path):
    out = run_target(
        """
        wd = tbcollect.watchdog(directory=DIR, reminder=0.5)
        beat = wd.watch_thread(threshold=0.3)
        until(lambda: wd.reports >= 2)
        beat.beat()
        until(lambda: not beat.stuck)
        say("REPORTS", wd.reports)
        wd.stop()
        """,
        tmp_path,
    )
    assert "REPORTS 2\n" in out
    first, second = (p.read_text().splitlines()[0] for p in dump_files(tmp_path))
    assert "reminder" not in first
    assert first.startswith('tbcollect watchdog: thread heartbeat: thread "MainThread"')
    assert second.endswith("; still stuck (reminder 1)")
    assert len(report_lines(out)) == 3  # two reports, one recovery


def test_a_thread_that_ends_is_not_a_hang(tmp_path):
    out = run_target(
        """
        wd = tbcollect.watchdog(directory=DIR)
        t = threading.Thread(target=lambda: wd.watch_thread(threshold=0.3), name="short")
        t.start()
        t.join()
        until(lambda: not wd.watches)
        say("REPORTS", wd.reports)
        wd.stop()
        """,
        tmp_path,
    )
    assert "REPORTS 0\n" in out
    assert dump_files(tmp_path) == []
    assert "thread 'short'" in out and "has ended" in out


def test_watchdog_in_a_forked_child(tmp_path):
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    out = run_target(
        """
        import warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        parent_wd = tbcollect.watchdog(directory=DIR)
        parent_beat = parent_wd.watch_thread(threshold=30)
        pid = os.fork()
        if pid == 0:
            try:
                # The parent's watchdog has no thread here: stopped, inert.
                parent_beat.beat()
                tbcollect.heartbeat()
                say("CHILD INHERITED", parent_wd.running, parent_wd.watches)
                say("CHILD PID", os.getpid())
                child_wd = tbcollect.watchdog(directory=DIR)
                child_wd.watch_thread(threshold=0.3)
                until(lambda: child_wd.reports >= 1)
                say("CHILD REPORTS", child_wd.reports)
                child_wd.stop()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        say("CHILD STATUS", status)
        say("PARENT", parent_wd.running, parent_wd.reports)
        parent_wd.stop()
        """,
        tmp_path,
    )
    assert "CHILD INHERITED False []\n" in out
    assert "CHILD REPORTS 1\n" in out
    assert "CHILD STATUS 0\n" in out
    assert "PARENT True 0\n" in out
    child_pid = out.split("CHILD PID ")[1].split()[0]
    [path] = dump_files(tmp_path)
    assert path.name.startswith(f"tbcollect-{child_pid}-")


def test_watchdog_reports_carry_probe_results(tmp_path):
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "answer.py").write_text("def probe():\n    return {'answer': 42}\n")
    dumps = tmp_path / "dumps"
    proc = run_python(
        PRELUDE
        + textwrap.dedent(
            """
            wd = tbcollect.watchdog(directory=DIR, probes=sys.argv[2], files=True)
            wd.watch_thread(threshold=0.3)
            until(lambda: wd.reports >= 1)
            wd.stop()
            """
        ),
        str(dumps),
        str(probes),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [path] = dump_files(dumps)
    text = path.read_text()
    assert 'Probes (1):\n  answer:\n    {\n      "answer": 42\n    }\n' in text


def test_logging_only_watchdog_writes_no_file(tmp_path):
    out = run_target(
        """
        os.chdir(DIR)
        wd = tbcollect.watchdog(files=False)
        say("DIRECTORY", wd.directory)
        wd.watch_thread(threshold=0.3)
        until(lambda: wd.reports >= 1)
        wd.stop()
        """,
        tmp_path,
    )
    assert "DIRECTORY None\n" in out
    assert len(report_lines(out)) == 1
    assert "(dump written to" not in out
    # No file: the log is the only record, so it holds the whole dump.
    assert "\nDiagnosis" in out or "Diagnosis:" in out, out
    assert list(tmp_path.iterdir()) == []


# -- in-process API checks (real threads, no hang needed) ---------------------


def test_bad_options_are_one_clear_error(tmp_path):
    with pytest.raises(tbcollect.UnknownFormatError):
        tbcollect.watchdog(directory=tmp_path, format="yaml")
    with pytest.raises(tbcollect.InvalidOptionError, match="reminder"):
        tbcollect.watchdog(directory=tmp_path, reminder=0)
    with tbcollect.watchdog(directory=tmp_path) as wd:
        for bad in (0, -1.0, float("nan"), float("inf"), "5", True):
            with pytest.raises(tbcollect.InvalidOptionError, match="threshold"):
                wd.watch_thread(threshold=bad)
        with pytest.raises(tbcollect.InvalidOptionError, match="not a started thread"):
            wd.watch_thread(threading.Thread(target=print))
        with pytest.raises(tbcollect.InvalidOptionError, match="no loop given"):
            wd.watch_loop(threshold=1)
        with pytest.raises(tbcollect.InvalidOptionError, match="not an event loop"):
            wd.watch_loop(object(), threshold=1)
        with pytest.raises(tbcollect.InvalidOptionError, match="not a live gevent hub"):
            wd.watch_hub(object(), threshold=1)
        assert wd.watches == []
    assert not wd.running
    with pytest.raises(tbcollect.InvalidOptionError, match="stopped"):
        wd.watch_thread(threshold=1)
    assert list(tmp_path.iterdir()) == []


def test_closed_loop_is_refused(tmp_path):
    import asyncio

    loop = asyncio.new_event_loop()
    loop.close()
    with tbcollect.watchdog(directory=tmp_path) as wd:
        with pytest.raises(tbcollect.InvalidOptionError, match="closed"):
            wd.watch_loop(loop, threshold=1)


def test_watch_handles_describe_and_cancel_themselves(tmp_path):
    names_before = {t.name for t in threading.enumerate()}
    wd = tbcollect.watchdog(directory=tmp_path)
    assert "tbcollect-watchdog" in {t.name for t in threading.enumerate()} - names_before
    with wd.watch_thread(threshold=2.5) as beat:
        assert isinstance(beat, tbcollect.Heartbeat)
        assert isinstance(beat, tbcollect.Watch)
        assert beat.threshold == 2.5
        assert beat.ident == threading.get_ident()
        assert not beat.stuck and not beat.cancelled
        assert wd.watches == [beat]
        beat.beat()
        assert "MainThread" in repr(beat)
    assert beat.cancelled and wd.watches == []
    beat.cancel()  # idempotent
    assert wd.stop() is True
    assert wd.stop() is True
    assert "tbcollect-watchdog" not in {t.name for t in threading.enumerate()} - names_before
    assert isinstance(wd, tbcollect.Watchdog) and "stopped" in repr(wd)


def test_heartbeat_without_any_watch_is_a_no_op():
    tbcollect.heartbeat()
    results: Dict[str, bool] = {}
    t = threading.Thread(target=lambda: results.setdefault("ok", tbcollect.heartbeat() is None))
    t.start()
    t.join()
    assert results == {"ok": True}


def test_json_report_is_schema_valid_and_loads_back(tmp_path):
    # The JSON report's extra "watchdog" key is in the schema and ignored by load().
    out = run_target(
        """
        wd = tbcollect.watchdog(directory=DIR, format="json")
        wd.watch_thread(threshold=0.3)
        until(lambda: wd.reports >= 1)
        wd.stop()
        """,
        tmp_path,
    )
    [path] = dump_files(tmp_path)
    data = validate_json(path.read_text())
    assert data["watchdog"]["reports"][0]["culprit"].startswith("thread:")
    snap = tbcollect.load(path)
    assert json.loads(snap.to_json())["stacks"] == data["stacks"]
    assert len(report_lines(out)) == 1

"""install(abort=True): a raw dump when the process gets SIGABRT, also while
a thread holds the GIL in C, then the handler that was there before; and the
retention rule applied after every dump."""

from __future__ import annotations

import os
import resource
import signal
import time

import pytest
import tbcollect
from tbcollect import _dumpdir

from tests.helpers import Target, base_env, dumps_of, wait_for_dumps, wait_until

HANG = """
import itertools, signal, sys, tbcollect
{before}
tbcollect.install(signal.SIGURG, abort=True)
print("ready", flush=True)
def hang_in_c():
    print("hanging", flush=True)
    return sum(itertools.repeat(1, 10**15))
{action}
"""


def no_core() -> None:
    # A process killed by SIGABRT must not leave a core file anywhere.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def test_sigabrt_while_the_gil_is_held_in_c_writes_a_raw_dump_then_aborts(tmp_path):
    code = HANG.format(before="", action="hang_in_c()")
    with Target(code, env=base_env(tmp_path), preexec_fn=no_core) as target:
        target.expect("hanging")
        os.kill(target.pid, signal.SIGABRT)
        rc, _, err = target.finish()
    # The default action ran after the dump, as it would have without us.
    assert rc == -signal.SIGABRT
    (path,) = dumps_of(tmp_path, target.pid)
    assert f"tbcollect: SIGABRT: raw dump of process {target.pid} written to {path}" in err
    text = path.read_text()
    assert _dumpdir.is_raw_dump(path)
    assert f"reason: SIGABRT sent by process {os.getpid()}" in text
    current = text[text.index("\nCurrent thread 0x") + 1 :].split("\n\n")[0]
    assert "in hang_in_c" in current
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_abort_in_the_process_says_so(tmp_path):
    code = HANG.format(before="import os", action="input(); os.abort()")
    with Target(code, env=base_env(tmp_path), preexec_fn=no_core) as target:
        target.expect("ready")
        target.send("")
        rc, _, _ = target.finish()
    assert rc == -signal.SIGABRT
    (path,) = dumps_of(tmp_path, target.pid)
    text = path.read_text()
    assert "reason: SIGABRT raised in this process: abort() was called" in text
    assert "in <module>" in text


# Waits for a line on stdin, running Python signal handlers meanwhile. Not
# input(): a signal that arrives after the interpreter last checked for one
# but before read() blocks runs its handler only once read() returns (CPython
# itself, with or without tbcollect: 2 runs of 8 on 3.15 without it). The
# wakeup fd closes that window: select() returns at once when a signal came.
WAKEUP = """
import os, select
wake_r, wake_w = os.pipe()
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
"""
WAIT_FOR_A_LINE = """
while sys.stdin not in select.select([sys.stdin, wake_r], [], [])[0]:
    os.read(wake_r, 64)
"""


def test_the_previous_handler_runs_after_the_dump_and_the_process_lives_on(tmp_path):
    before = "signal.signal(signal.SIGABRT, lambda s, f: print('handled', s, flush=True))" + WAKEUP
    code = HANG.format(before=before, action=WAIT_FOR_A_LINE + "print('alive', flush=True)")
    with Target(code, env=base_env(tmp_path), preexec_fn=no_core) as target:
        target.expect("ready")
        os.kill(target.pid, signal.SIGABRT)
        assert target.expect("handled") == str(int(signal.SIGABRT))
        (path,) = wait_for_dumps(tmp_path, target.pid)
        # One abort dump per process, however many SIGABRTs arrive.
        os.kill(target.pid, signal.SIGABRT)
        target.expect("handled")
        target.send("")
        target.expect("alive")
        assert dumps_of(tmp_path, target.pid) == [path]


APPLICATION_SIGNALS = """
import os, signal, tbcollect
mine = {signal.SIGABRT, signal.SIGTERM, signal.SIGUSR1}
for s in mine:
    signal.signal(s, lambda s, f: print("handled", signal.Signals(s).name, flush=True))
tbcollect.install(signal.SIGURG, abort=True)
print("ready", flush=True)
input()
# With the main thread not taking them, a signal sent to the process goes to
# any other thread that does: it stays pending only if tbcollect's do not.
signal.pthread_sigmask(signal.SIG_BLOCK, mine)
for s in mine:
    os.kill(os.getpid(), s)
print("pending", *sorted(s.name for s in signal.sigpending()), flush=True)
signal.pthread_sigmask(signal.SIG_UNBLOCK, mine)
print("done", flush=True)
"""


def test_the_application_signals_are_left_to_the_main_thread(tmp_path):
    # A signal that lands in tbcollect's watcher or dumper only sets CPython's
    # flag: the main thread, blocked in a read, would never run its handler.
    with Target(APPLICATION_SIGNALS, env=base_env(tmp_path), preexec_fn=no_core) as target:
        target.expect("ready")
        target.send("")
        assert target.expect("pending").split() == ["SIGABRT", "SIGTERM", "SIGUSR1"]
        handled = {target.expect("handled") for _ in range(3)}
        target.expect("done")
    assert handled == {"SIGABRT", "SIGTERM", "SIGUSR1"}


def test_abort_needs_the_raw_dump_path(tmp_path):
    with pytest.raises(tbcollect.InvalidOptionError, match="abort"):
        tbcollect.install(signal.SIGURG, directory=tmp_path, abort=True, raw_timeout=None)
    assert tbcollect.installed() is None


RETENTION = """
import os, signal, tbcollect
tbcollect.install(signal.SIGURG, keep=3)
print("ready", flush=True)
while input() == "dump":
    os.kill(os.getpid(), signal.SIGURG)
"""


def test_retention_keeps_the_newest_dumps_and_drops_old_ones(tmp_path):
    week = 7 * 86400
    stale = tmp_path / "tbcollect-1-20200101T000000Z-0001.txt"
    recent = tmp_path / "tbcollect-2-20200101T000000Z-0001.txt"
    other = tmp_path / "notes.txt"
    for path in (stale, recent, other):
        path.write_text("x\n")
        os.chmod(path, 0o600)
    an_hour_past_a_week = time.time() - week - 3600
    os.utime(stale, (an_hour_past_a_week, an_hour_past_a_week))
    os.utime(other, (an_hour_past_a_week, an_hour_past_a_week))
    with Target(RETENTION, env=base_env(tmp_path)) as target:
        target.expect("ready")
        made = []
        for n in range(1, 6):
            target.send("dump")
            made.append(wait_until(lambda n=n: _newest(tmp_path, target.pid, n), f"dump {n}"))
        kept = dumps_of(tmp_path, target.pid)
    assert kept == made[-3:]
    assert not stale.exists()  # older than 7 days
    assert recent.exists() and other.exists()  # another process's; not a dump


def _newest(directory, pid, count):
    # The n-th dump has been written (earlier ones may be gone already).
    found = dumps_of(directory, pid)
    if not found:
        return None
    seq = int(_dumpdir.DUMP_NAME.match(found[-1].name)["seq"])
    return found[-1] if seq >= count else None


@pytest.mark.parametrize(
    "variable, value", [("TBCOLLECT_KEEP", "many"), ("TBCOLLECT_MAX_AGE_DAYS", "-1")]
)
def test_a_bad_retention_setting_is_one_clear_error(tmp_path, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(tbcollect.InvalidOptionError, match=variable.split("_", 1)[1].lower()):
        tbcollect.install(signal.SIGURG, directory=tmp_path)
    assert tbcollect.installed() is None
    assert not list(tmp_path.iterdir())

"""``tbcollect.install()``: dumps on a real signal in real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import tbcollect

from tests.helpers import (
    LOOP_TARGET,
    Target,
    base_env,
    cli,
    dumps_of,
    temporaries,
    validate_json,
    wait_for_dumps,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


def test_signal_dumps_to_a_new_file_and_the_process_keeps_running(tmp_path):
    with Target(LOOP_TARGET, args=["json"], env=base_env(tmp_path)) as target:
        pid = int(target.expect("ready"))
        os.kill(pid, signal.SIGQUIT)
        (first,) = wait_for_dumps(tmp_path, pid)
        assert target.ask("ping", "pong") == ""
        os.kill(pid, signal.SIGQUIT)
        second = wait_for_dumps(tmp_path, pid, 2)[1]
        assert target.ask("ping", "pong") == ""

        for path in (first, second):
            assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)
            data = validate_json(path.read_text())
            assert data["pid"] == pid
            assert data["reason"].startswith("signal SIGQUIT")
            threads = {s["name"]: s for s in data["stacks"] if s["kind"] == "thread"}
            assert {"MainThread", "worker", "tbcollect-dumper"} <= set(threads)
            assert "worker_loop" in [f["function"] for f in threads["worker"]["frames"]]
            # The dump is made by the dumper thread, not inside the
            # interrupted main thread (which is in its event loop).
            assert not threads["MainThread"]["current"]
            assert threads["tbcollect-dumper"]["current"]
        target.send("quit")
        assert target.finish()[0] == 0
        assert temporaries(tmp_path) == []


def _check_whole_json(path, pid):
    data = validate_json(path.read_text())
    assert data["pid"] == pid and data["reason"].startswith("signal SIGQUIT")


def _check_whole_text(path, pid):
    lines = path.read_text().splitlines()
    assert lines[0].startswith(f"tbcollect: pid {pid} at ")
    assert lines[1].startswith("reason: signal SIGQUIT")
    assert any(line.startswith('Thread "worker"') for line in lines)
    assert any(line.startswith('Thread "MainThread"') for line in lines)


@pytest.mark.parametrize(
    "fmt, check_whole", [("json", _check_whole_json), ("text", _check_whole_text)]
)
def test_signal_storm_leaves_the_process_running_and_every_file_whole(tmp_path, fmt, check_whole):
    with Target(LOOP_TARGET, args=[fmt], env=base_env(tmp_path)) as target:
        pid = int(target.expect("ready"))
        for _ in range(30):
            os.kill(pid, signal.SIGQUIT)
        wait_for_dumps(tmp_path, pid)
        assert target.ask("ping", "pong") == ""
        target.send("quit")
        rc, out, err = target.finish()
        assert rc == 0, err
        assert "bye" in out
    # uninstall() at exit waits for a dump in progress: no half files, no
    # temporaries; signals during a dump coalesced into fewer dumps.
    assert temporaries(tmp_path) == []
    paths = dumps_of(tmp_path, pid)
    assert 1 <= len(paths) <= 30
    for path in paths:
        check_whole(path, pid)


HOLD_C = r"""
#include <errno.h>
#include <unistd.h>
/* Called through ctypes.PyDLL, so with the GIL held: says it is holding,
   then blocks until a byte arrives, retrying through signals. The Python
   signal machinery never gets a chance to run meanwhile. */
int hold_gil(int notify_fd, int wait_fd) {
    char c;
    if (write(notify_fd, "holding\n", 8) != 8) return -1;
    for (;;) {
        ssize_t n = read(wait_fd, &c, 1);
        if (n >= 0) return (int)n;
        if (errno != EINTR) return -1;
    }
}
"""

HOLD_TARGET = """
import ctypes, os, sys, threading, time
import tbcollect

library, wait_fd = sys.argv[1], int(sys.argv[2])
# Started before install(): the raw dump's name table is filled at install()
# and refreshed at each dump.
threading.Thread(target=lambda: time.sleep(3600), name="sleeper", daemon=True).start()
tbcollect.install(raw_timeout=0.5)

def stuck_in_c():
    return ctypes.PyDLL(library).hold_gil(1, wait_fd)

print("pid", os.getpid(), flush=True)
print("released", stuck_in_c(), flush=True)
for line in sys.stdin:
    print("echo", line.strip(), flush=True)
"""


@pytest.fixture(scope="module")
def hold_library(tmp_path_factory):
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("needs a C compiler to build a function that holds the GIL")
    directory = tmp_path_factory.mktemp("hold")
    source = directory / "hold.c"
    source.write_text(HOLD_C)
    library = directory / "libhold.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-o", str(library), str(source)],
        check=True,
        timeout=120,
    )
    return library


@pytest.mark.slow
def test_raw_dump_while_main_thread_holds_the_gil_in_c(tmp_path, hold_library):
    dumps = tmp_path / "dumps"
    release_r, release_w = os.pipe()
    try:
        with Target(
            HOLD_TARGET,
            args=[str(hold_library), str(release_r)],
            env=base_env(dumps),
            pass_fds=[release_r],
        ) as target:
            pid = int(target.expect("pid"))
            assert target.readline() == "holding"  # now inside C, GIL held
            os.kill(pid, signal.SIGQUIT)
            (raw,) = wait_for_dumps(dumps, pid)
            text = raw.read_text()
            lines = text.splitlines()
            assert lines[0].startswith(f"tbcollect: pid {pid} at ")
            assert lines[0].endswith(", raw dump")
            assert lines[1].startswith("reason: signal SIGQUIT; the full dump did not start")
            assert text.endswith("\nend of raw dump\n")
            # faulthandler's stacks of every thread, read without the GIL,
            # each named, with the thread that probably holds the GIL.
            assert text.count("Thread 0x") == 3
            assert " in stuck_in_c\n" in text
            assert " in <lambda>\n" in text  # the sleeper thread
            assert f'(most recent call first) ["MainThread", native id {pid}]:' in text
            assert '(most recent call first) ["sleeper", native id ' in text
            assert '(most recent call first) ["tbcollect-dumper", native id ' in text
            gil = next(line for line in lines if line.startswith("GIL: "))
            assert '"MainThread"' in gil and '"tbcollect-dumper"' not in gil
            assert tbcollect._dumpdir.is_raw_dump(raw)

            # Asked again while still stuck (here through the channel): a raw
            # dump comes back over the connection, and no file is written.
            again = cli("dump", str(pid), "--timeout", "60")
            assert again.returncode == 0, again.stderr
            assert again.stdout.splitlines()[0].endswith(", raw dump")
            assert again.stdout.splitlines()[1].startswith(
                "reason: request over the channel; the full dump did not start"
            )
            assert " in stuck_in_c\n" in again.stdout
            assert f'["MainThread", native id {pid}]' in again.stdout
            assert again.stderr.strip().startswith(f"tbcollect: raw dump of process {pid}")
            assert len(dumps_of(dumps, pid)) == 1

            # When the C code lets go of the GIL, the full dump follows and
            # the process carries on.
            os.write(release_w, b"x")
            assert target.expect("released") == "1"
            full = wait_for_dumps(dumps, pid, 2)[1]
            full_lines = full.read_text().splitlines()
            assert full_lines[0].startswith(f"tbcollect: pid {pid} at ")
            assert "Python" in full_lines[0]
            assert target.ask("hello", "echo") == "hello"
    finally:
        os.close(release_r)
        os.close(release_w)


FORK_TARGET = """
import os, sys, time
import tbcollect

tbcollect.install(format="json")

def child_main(parent):
    # One write each: parent and child share stdout.
    sys.stdout.write(f"child {os.getpid()} {tbcollect.installed().name}\\n")
    while os.getppid() == parent:  # until the parent is gone
        time.sleep(0.05)
    os._exit(0)

def parent_main(child):
    sys.stdout.write(f"parent {os.getpid()}\\n")
    for line in sys.stdin:
        print("echo", line.strip(), flush=True)

parent = os.getpid()
pid = os.fork()
if pid == 0:
    child_main(parent)
else:
    parent_main(pid)
"""


def test_forked_child_has_its_own_installation(tmp_path):
    env = base_env(tmp_path, PYTHONWARNINGS="ignore::DeprecationWarning")
    with Target(FORK_TARGET, env=env) as target:
        found = {}
        for _ in range(2):
            kind, rest = target.readline().split(" ", 1)
            found[kind] = rest
        child = int(found["child"].split()[0])
        parent = int(found["parent"])
        assert found["child"].split()[1] == "SIGQUIT"

        os.kill(child, signal.SIGQUIT)
        (child_dump,) = wait_for_dumps(tmp_path, child)
        data = validate_json(child_dump.read_text())
        assert data["pid"] == child
        functions = [f["function"] for s in data["stacks"] for f in s["frames"]]
        assert "child_main" in functions and "parent_main" not in functions
        names = [s["name"] for s in data["stacks"]]
        assert names.count("tbcollect-dumper") == 1
        assert dumps_of(tmp_path, parent) == []  # the parent was not touched

        os.kill(parent, signal.SIGQUIT)
        (parent_dump,) = wait_for_dumps(tmp_path, parent)
        data = validate_json(parent_dump.read_text())
        assert data["pid"] == parent
        assert "parent_main" in [f["function"] for s in data["stacks"] for f in s["frames"]]
        assert target.ask("still there?", "echo") == "still there?"
        assert len(dumps_of(tmp_path, child)) == 1


C_FORK_TARGET = """
import ctypes, os, signal, sys, time
import tbcollect

tbcollect.install(signal.SIGURG, directory=sys.argv[1])
# fork() straight from C, as uWSGI forks its workers: Python's at-fork hooks
# do not run, and the child holds its parent's installation. Lines are
# written whole: print() under PYTHONUNBUFFERED writes word by word, and the
# two processes share the pipe.
pid = ctypes.CDLL(None).fork()
if pid == 0:
    def child_main():
        sys.stdout.write(f"child {os.getpid()} {int(tbcollect.installed())}\\n")
        tbcollect.install(signal.SIGURG, directory=sys.argv[1])
        sys.stdout.write(f"again {os.getpid()} {int(tbcollect.installed())}\\n")
        time.sleep(120)
        os._exit(0)
    child_main()
else:
    sys.stdout.write(f"parent {os.getpid()}\\n")
    sys.stdin.readline()
"""


def test_child_forked_from_c_catches_up_and_installs_again(tmp_path):
    """A child forked without Python's at-fork hooks (uWSGI's workers) takes
    over its parent's installation when it first uses tbcollect: its own
    dumper and channel; installing again there neither waits for nor joins
    the parent's threads (it used to panic in pthread_join)."""
    env = base_env(tmp_path, PYTHONWARNINGS="ignore::DeprecationWarning")
    with Target(C_FORK_TARGET, args=[str(tmp_path)], env=env) as target:
        found = {}
        while len(found) < 3:
            kind, rest = target.readline().split(" ", 1)
            found[kind] = rest.split()
        child = int(found["child"][0])
        try:
            assert found["child"][1] == found["again"][1] == str(int(signal.SIGURG))
            parent = int(found["parent"][0])
            for pid in (child, parent):
                result = cli("dump", str(pid))
                assert result.returncode == 0, result.stderr
                assert result.stdout.startswith(f"tbcollect: pid {pid} at "), result.stdout
            result = cli("dump", str(child))
            assert "child_main" in result.stdout
            # The child's own dumper answered, and only it is listed: without
            # the at-fork hooks CPython keeps the parent's thread states (and
            # sys._current_frames() lists them), but the parent's dumper is
            # no thread of the child.
            dumpers = [
                line
                for line in result.stdout.splitlines()
                if line.startswith('Thread "tbcollect-dumper"')
            ]
            assert len(dumpers) == 1, result.stdout
            assert ", current," in dumpers[0] and dumpers[0].endswith("tbcollect's own)"), dumpers
        finally:
            os.kill(child, signal.SIGKILL)
        assert "panicked" not in target.stderr_now()


C_FORK_IDLE_TARGET = """
import ctypes, os, signal, sys, time
import tbcollect

tbcollect.install(signal.SIGURG, directory=sys.argv[1])
# As a uWSGI worker forked without --py-call-osafterfork that never calls
# tbcollect: it holds the parent's handler and beacon, not its threads.
pid = ctypes.CDLL(None).fork()
if pid == 0:
    def child_serves():
        # Back in Python often (sys.remote_exec can run), until told to
        # block in C for good (it cannot).
        while not os.path.exists(os.path.join(sys.argv[1], "block")):
            time.sleep(0.02)
        time.sleep(120)
    sys.stdout.write(f"child {os.getpid()}\\n")
    child_serves()
    os._exit(0)
sys.stdout.write(f"parent {os.getpid()}\\n")
sys.stdin.readline()
"""


def test_child_forked_from_c_that_never_ran_tbcollect_is_refused_with_the_reason(tmp_path):
    """Its handler is its parent's and its dumper is gone: neither a
    request nor the signal would dump it, so nothing is sent, and the
    error says why and what to change (it used to suggest an older
    tbcollect and --signal, which then timed out). On 3.14+ it still runs
    Python, so sys.remote_exec dumps it; when that fails too, the error
    says both."""
    env = base_env(tmp_path, PYTHONWARNINGS="ignore::DeprecationWarning")
    with Target(C_FORK_IDLE_TARGET, args=[str(tmp_path)], env=env) as target:
        found = dict(target.readline().split() for _ in range(2))
        child, parent = int(found["child"]), int(found["parent"])
        remote = sys.version_info >= (3, 14)
        try:
            refused = (
                [["--signal", "SIGURG"], ["--no-remote"]]
                if remote
                else [[], ["--signal", "SIGURG"]]
            )
            for extra in refused:
                result = cli("dump", str(child), *extra)
                assert result.returncode == 5, (extra, result.stderr)
                assert f"process {child} inherited its parent's ({parent})" in result.stderr
                assert "--py-call-osafterfork" in result.stderr
                assert "nothing was sent" in result.stderr
            assert dumps_of(tmp_path, child) == []
            if remote:
                result = cli("dump", str(child))
                assert result.returncode == 0, result.stderr
                assert "in child_serves" in result.stdout, result.stdout
                (tmp_path / "block").touch()
                time.sleep(0.3)  # into the long sleep: no safe point any more
                result = cli("dump", str(child), "--timeout", "1")
                assert result.returncode == 7, result.stderr
                assert f"process {child} inherited its parent's ({parent})" in result.stderr
                assert "sys.remote_exec was tried instead: it did not reach a safe point" in (
                    result.stderr
                )
                assert "--py-call-osafterfork" in result.stderr
            os.kill(child, 0)  # still running
            result = cli("dump", str(parent))
            assert result.returncode == 0, result.stderr
        finally:
            os.kill(child, signal.SIGKILL)


CHAIN_TARGET = """
import asyncio, os, signal, sys
import tbcollect

calls = []
signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))
before = signal.getsignal(signal.SIGUSR1)
tbcollect.install(signal.SIGUSR1, directory=sys.argv[1])
print("installed", repr(signal.getsignal(signal.SIGUSR1)), tbcollect.installed().name, flush=True)

async def main():
    loop = asyncio.get_running_loop()
    got = asyncio.Event()
    # asyncio's own handler for another signal (through set_wakeup_fd) still works.
    loop.add_signal_handler(signal.SIGUSR2, got.set)
    os.kill(os.getpid(), signal.SIGUSR2)
    await asyncio.wait_for(got.wait(), 60)
    print("asyncio", "SIGUSR2", flush=True)
    os.kill(os.getpid(), signal.SIGUSR1)
    while not calls:
        await asyncio.sleep(0.01)
    print("chained", calls, flush=True)

asyncio.run(main())
print("uninstalled", tbcollect.uninstall(), signal.getsignal(signal.SIGUSR1) is before, flush=True)
print("again", tbcollect.uninstall(), tbcollect.installed(), flush=True)
"""


def test_previous_handler_is_chained_and_restored(tmp_path):
    with Target(CHAIN_TARGET, args=[str(tmp_path)]) as target:
        assert target.expect("installed") == "<tbcollect dump handler> SIGUSR1"
        assert target.expect("asyncio") == "SIGUSR2"
        assert target.expect("chained") == f"[{int(signal.SIGUSR1)}]"
        assert target.expect("uninstalled") == "True True"
        assert target.expect("again") == "False None"
        rc, _, err = target.finish()
        assert rc == 0, err
        (path,) = dumps_of(tmp_path, target.pid)
        assert path.read_text().splitlines()[1] == "reason: signal SIGUSR1"


ASYNCIO_FIRST_TARGET = """
import asyncio, os, signal, sys
import tbcollect

async def main():
    loop = asyncio.get_running_loop()
    got = asyncio.Event()
    loop.add_signal_handler(signal.SIGQUIT, got.set)
    # Installed after asyncio's handler: the signal reaches both.
    tbcollect.install(directory=sys.argv[1])
    os.kill(os.getpid(), signal.SIGQUIT)
    await asyncio.wait_for(got.wait(), 60)
    print("asyncio", "SIGQUIT", flush=True)

asyncio.run(main())
"""


def test_asyncio_signal_handler_on_the_same_signal_keeps_working(tmp_path):
    with Target(ASYNCIO_FIRST_TARGET, args=[str(tmp_path)]) as target:
        assert target.expect("asyncio") == "SIGQUIT"
        wait_for_dumps(tmp_path, target.pid)
        assert target.finish()[0] == 0


def test_install_refuses_bad_options_before_touching_anything(tmp_path):
    before = signal.getsignal(signal.SIGQUIT)
    with pytest.raises(tbcollect.InvalidOptionError, match="SIGKILL cannot be caught"):
        tbcollect.install(signal.SIGKILL, directory=tmp_path)
    with pytest.raises(tbcollect.InvalidOptionError, match="SIGSEGV reports a crash"):
        tbcollect.install("SEGV", directory=tmp_path)
    with pytest.raises(tbcollect.InvalidOptionError, match="is not a signal"):
        tbcollect.install("SIGNOPE", directory=tmp_path)
    with pytest.raises(tbcollect.UnknownFormatError):
        tbcollect.install(directory=tmp_path, format="yaml")
    with pytest.raises(tbcollect.InvalidOptionError, match="raw_timeout"):
        tbcollect.install(directory=tmp_path, raw_timeout=-1)
    errors = []

    def from_a_thread():
        try:
            tbcollect.install(directory=tmp_path)
        except tbcollect.InstallError as e:
            errors.append(str(e))

    thread = threading.Thread(target=from_a_thread)
    thread.start()
    thread.join()
    assert errors and "main thread" in errors[0]
    assert tbcollect.installed() is None
    assert signal.getsignal(signal.SIGQUIT) == before
    assert os.listdir(tmp_path) == []


UNSAFE_TARGET = """
import signal, sys
import tbcollect

before = signal.getsignal(signal.SIGQUIT)
try:
    tbcollect.install(directory=sys.argv[1])
except tbcollect.DumpDirectoryError as e:
    print("refused", e, flush=True)
untouched = signal.getsignal(signal.SIGQUIT) == before
print("state", tbcollect.installed(), untouched, flush=True)
"""


def unsafe_directories(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    cases = [(link, "is a symlink"), (shared, "is writable by group or others")]
    if os.geteuid() == 0:
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 65534, 65534)
        cases.append((foreign, "is owned by uid 65534"))
    return real, cases


def test_unsafe_directory_is_refused_with_no_file_and_no_handler(tmp_path):
    real, cases = unsafe_directories(tmp_path)
    for directory, reason in cases:
        with Target(UNSAFE_TARGET, args=[str(directory)]) as target:
            refused = target.expect("refused")
            assert refused.startswith(f"dump directory {directory}: {reason}"), refused
            assert target.expect("state") == "None True"
            assert target.finish()[0] == 0
        assert list(directory.iterdir()) == []
    assert list(real.iterdir()) == []


@pytest.fixture
def unwritable_directory(tmp_path):
    """A directory of ours that we may not write: mode 0500, or for root
    (who writes anywhere) one marked immutable."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    if os.geteuid() != 0:
        locked.chmod(0o500)
        yield locked
        locked.chmod(0o700)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(locked)]).returncode != 0:
        pytest.skip("as root, only an immutable directory is unwritable, and chattr +i failed")
    try:
        yield locked
    finally:
        subprocess.run([chattr, "-i", str(locked)], check=True)


def test_unwritable_directory_is_refused(unwritable_directory):
    locked = unwritable_directory
    with Target(UNSAFE_TARGET, args=[str(locked)]) as target:
        refused = target.expect("refused")
        assert refused.startswith(f"dump directory {locked}: is not writable"), refused
        assert target.expect("state") == "None True"
    assert list(locked.iterdir()) == []


def test_dump_directory_is_created_private_by_default(tmp_path):
    code = "import tbcollect; print('dir', tbcollect.install())"
    env = base_env(None, TMPDIR=str(tmp_path))
    env.pop("XDG_RUNTIME_DIR", None)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    directory = tmp_path / f"tbcollect-{os.geteuid()}" / "python"
    assert result.stdout.split() == ["dir", str(directory)]
    assert os.stat(directory).st_mode & 0o777 == 0o700
    assert os.stat(directory.parent).st_mode & 0o777 == 0o700


def test_json_dump_of_installed_process_is_loadable(tmp_path):
    with Target(LOOP_TARGET, args=["json"], env=base_env(tmp_path)) as target:
        pid = int(target.expect("ready"))
        os.kill(pid, signal.SIGQUIT)
        (path,) = wait_for_dumps(tmp_path, pid)
        snapshot = tbcollect.load(path)
        assert snapshot.pid == pid
        assert json.loads(path.read_text())["schema"] == tbcollect.SCHEMA


GEVENT_TARGET = """
from gevent import monkey

monkey.patch_all()

import os, sys
import gevent
from gevent.fileobject import FileObject
import tbcollect

tbcollect.install(directory=sys.argv[1])

def spinner(n):
    while True:
        gevent.sleep(0.01)

workers = [gevent.spawn(spinner, i) for i in range(3)]
stdin = FileObject(sys.stdin, "r")
print("ready", os.getpid(), flush=True)
for line in stdin:
    print("echo", line.strip(), flush=True)
"""


def test_gevent_patched_process_keeps_running(tmp_path):
    pytest.importorskip("gevent")
    with Target(GEVENT_TARGET, args=[str(tmp_path)]) as target:
        pid = int(target.expect("ready"))
        for i in range(3):
            os.kill(pid, signal.SIGQUIT)
            wait_for_dumps(tmp_path, pid, i + 1)
            # The dumper is a real thread: waiting for the next signal does
            # not block the hub.
            assert target.ask(f"line {i}", "echo") == f"line {i}"
        text = dumps_of(tmp_path, pid)[-1].read_text()
        assert text.startswith(f"tbcollect: pid {pid} at ")


LOCK_TARGET = """
import logging, os, sys
import tbcollect

handler = logging.StreamHandler(sys.stdout)
log = logging.getLogger("ops")
log.addHandler(handler)
log.setLevel(logging.INFO)
tbcollect.install(directory=sys.argv[1], log=log)
print("pid", os.getpid(), flush=True)
handler.acquire()  # the interrupted code holds the log handler's lock...
try:
    print("holding", flush=True)
    sys.stdin.readline()  # ...until told to let go
finally:
    handler.release()
sys.stdout.write("released\\n")  # one write: the dumper's log line may come at once
for line in sys.stdin:
    print("echo", line.strip(), flush=True)
"""


def test_locks_held_by_the_interrupted_code_do_not_stop_the_dump(tmp_path):
    with Target(LOCK_TARGET, args=[str(tmp_path)]) as target:
        pid = int(target.expect("pid"))
        assert target.readline() == "holding"
        os.kill(pid, signal.SIGQUIT)
        (path,) = wait_for_dumps(tmp_path, pid)  # written while the lock is held
        target.send("go")
        # The log line waited for the lock; the dump did not. (Once the lock
        # is free, either thread may print first.)
        # one record per dump: the header line, why, and where the file went
        seen = {target.readline(), target.readline()}
        assert "released" in seen
        (logged,) = seen - {"released"}
        assert logged.startswith(f"tbcollect: pid {pid} at ")
        assert logged.endswith(f" (signal SIGQUIT; written to {path})")
        assert target.ask("hi", "echo") == "hi"


PROBES_TARGET = r"""
import os, sys
import tbcollect

tbcollect.install(format="json", probes=sys.argv[1])
print("ready", os.getpid(), flush=True)
for line in sys.stdin:
    if line.strip() == "ping":
        print("pong", flush=True)
    else:
        break
"""


def test_probes_are_reloaded_between_two_signals(tmp_path):
    probes = tmp_path / "probes"
    probes.mkdir(mode=0o700)
    probe = probes / "answer.py"
    probe.write_text("def probe():\n    return {'answer': 1}\n")
    probe.chmod(0o600)
    dumps = tmp_path / "dumps"
    with Target(PROBES_TARGET, args=[str(probes)], env=base_env(dumps)) as target:
        pid = int(target.expect("ready"))
        os.kill(pid, signal.SIGQUIT)
        (first,) = wait_for_dumps(dumps, pid)
        # edited between the signals, same size: the new source still runs
        probe.write_text("def probe():\n    return {'answer': 2}\n")
        os.kill(pid, signal.SIGQUIT)
        second = wait_for_dumps(dumps, pid, 2)[1]
        assert target.ask("ping", "pong") == ""
        results = [validate_json(p.read_text())["probes"] for p in (first, second)]
        assert results == [
            [{"name": "answer", "result": {"answer": 1}, "error": None}],
            [{"name": "answer", "result": {"answer": 2}, "error": None}],
        ]
        assert tbcollect.load(second).to_text().count("Probes (1):") == 1


def test_unsafe_probes_directory_is_refused_at_install(tmp_path):
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "evil.py").write_text("import sys\nsys.stderr.write('RAN')\ndef probe(): return 1\n")
    probes.chmod(0o777)  # anyone could drop a probe in here
    with Target(PROBES_TARGET, args=[str(probes)], env=base_env(tmp_path / "dumps")) as target:
        code, out, err = target.finish()
    assert code != 0
    assert "UnsafeProbesError" in err and "refusing probes" in err
    assert "RAN" not in err and "ready" not in out

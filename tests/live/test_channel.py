"""The request channel ``tbcollect dump`` talks to: it never signals, it
answers only the process's user and root, and what comes back from a target
(over the channel or in a file) is treated as hostile."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, List

import pytest
import tbcollect
from tbcollect import _request
from tbcollect.__main__ import main as cli_main

from tests.helpers import (
    HANG_GUARD,
    LOOP_TARGET,
    Target,
    base_env,
    cli,
    dumps_of,
    validate_json,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the channel is Linux only"
)


def channel_of(pid: int) -> str:
    return wait_until(
        lambda: _request.find_channel(pid, pid), f"the channel of {pid} to be advertised"
    )


# ---------------------------------------------------------------------------
# Never a signal to someone else's handler

RACE_TARGET = """
import os, random, signal, sys, time
import tbcollect

foreign = 0
def foreign_handler(signum, frame):
    global foreign
    foreign += 1

stop = sys.argv[1]
rounds = 0
print("ready", os.getpid(), flush=True)
while not os.path.exists(stop):
    tbcollect.install()
    time.sleep(random.uniform(0, 0.03))
    # Like a server taking its signals over, at a random moment.
    signal.signal(signal.SIGQUIT, foreign_handler)
    time.sleep(random.uniform(0, 0.03))
    tbcollect.uninstall()
    signal.signal(signal.SIGQUIT, foreign_handler)
    rounds += 1
print("rounds", rounds, flush=True)
print("foreign", foreign, flush=True)
"""


@pytest.mark.slow
def test_replacing_the_handler_at_random_moments_never_runs_it_because_of_us(tmp_path):
    stop = tmp_path / "stop"
    with Target(RACE_TARGET, args=[str(stop)], env=base_env(tmp_path)) as target:
        pid = int(target.expect("ready"))
        codes: List[int] = []
        # The command line, in this process (fast), hundreds of times.
        for _ in range(300):
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                codes.append(cli_main(["dump", str(pid), "--timeout", "2"]))
        stop.touch()
        rounds = int(target.expect("rounds"))
        assert target.expect("foreign") == "0"
    assert rounds > 0
    # Some requests met a channel and were answered; the others found none
    # (between installations) or a channel closing: never a signal.
    assert codes.count(0) > 0, codes
    assert set(codes) <= {0, 1, 5, 7}, codes
    assert dumps_of(tmp_path, pid) == []


def test_the_channel_survives_a_replaced_handler_and_a_fork(tmp_path):
    code = """
import os, signal, sys, time
import tbcollect
tbcollect.install()
signal.signal(signal.SIGQUIT, lambda *a: print("foreign", flush=True))
child = os.fork()
# One write each: both processes share the pipe, and print() under
# PYTHONUNBUFFERED writes word by word ("parent" then " child 12" mixed in).
if child == 0:
    os.write(1, f"child {os.getpid()}\\n".encode())
    # Ends with its parent, however the parent ends (the test may kill it).
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.1)
    os._exit(0)
os.write(1, f"parent {os.getpid()} {child}\\n".encode())
for line in sys.stdin:
    print("echo", line.strip(), flush=True)
os.kill(child, 9)
"""
    with Target(code, env=base_env(tmp_path)) as target:
        parent, child = map(int, target.expect("parent").split())
        for pid in (parent, child):
            channel_of(pid)
            result = cli("dump", str(pid))
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith(f"tbcollect: pid {pid} at ")
        # The child let go of its parent's socket: only its own is advertised.
        assert _request.find_channel(child, child) != _request.find_channel(parent, parent)
        assert target.ask("x", "echo") == "x"
        assert "foreign" not in target.lines


# ---------------------------------------------------------------------------
# Who may ask


def nobody_python(tmp_path: Path) -> List[str]:
    """The command prefix running this build's Python as ``nobody`` (root
    only: setpriv, and an interpreter of this version nobody can run)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a process as nobody")
    setpriv = "/usr/bin/setpriv"
    system = "/usr/bin/python3"
    if not (os.access(setpriv, os.X_OK) and os.access(system, os.X_OK)):
        pytest.skip("needs setpriv and /usr/bin/python3")
    prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", system]
    probe = subprocess.run(
        [*prefix, "-c", "import sys, tbcollect; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        env=nobody_env(tmp_path),
        timeout=HANG_GUARD,
    )
    if probe.returncode != 0 or probe.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip(f"nobody cannot import this build with {system}: {probe.stderr[-300:]}")
    return prefix


def nobody_env(directory: Path) -> dict:
    package = Path(tbcollect.__file__).resolve().parent.parent
    return base_env(directory, PYTHONPATH=str(package), HOME=str(directory))


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory of nobody's (tmp_path's parents are root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="tbcollect-test-"))
    try:
        os.chown(path, 65534, 65534)
        yield path
    finally:
        subprocess.run(["rm", "-rf", "--", str(path)], check=False, timeout=HANG_GUARD)


def test_root_dumps_another_users_process_and_that_user_cannot_dump_root(tmp_path, nobody_dir):
    prefix = nobody_python(nobody_dir)
    argv = [*prefix, "-c", LOOP_TARGET, "text"]
    with Target("", argv=argv, env=nobody_env(nobody_dir / "dumps")) as theirs:
        pid = int(theirs.expect("ready"))
        result = cli("dump", str(pid), "--format", "json")
        assert result.returncode == 0, result.stderr
        assert validate_json(result.stdout)["pid"] == pid

        with Target(LOOP_TARGET, args=["text"], env=base_env(tmp_path)) as ours:
            root_pid = int(ours.expect("ready"))
            name = channel_of(root_pid)
            # nobody cannot read root's /proc/PID/fd, so the command line says so ...
            as_nobody = subprocess.run(
                [*prefix, "-m", "tbcollect", "dump", str(root_pid)],
                capture_output=True,
                text=True,
                env=nobody_env(nobody_dir),
                timeout=HANG_GUARD * 2,
            )
            assert as_nobody.returncode == 4, as_nobody.stderr
            assert "not permitted to ask process" in as_nobody.stderr
            # ... and the channel itself, whose name /proc/net/unix shows to
            # anyone, answers nobody with a refusal before reading a request.
            ask = (
                "import socket, sys; s = socket.socket(socket.AF_UNIX); "
                "s.connect('\\0' + sys.argv[1]); print(s.recv(1000).decode())"
            )
            direct = subprocess.run(
                [*prefix, "-c", ask, name],
                capture_output=True,
                text=True,
                env=nobody_env(nobody_dir),
                timeout=HANG_GUARD,
            )
            assert direct.stdout.startswith("err denied uid 65534 may not ask process"), direct
            assert ours.ask("ping", "pong") == ""


# A nobody process that advertises a signal handler and a directory of its
# own, and on SIGQUIT plants something at the dump name the command line
# waits for (finding 1 of the security issue: root's `dump --signal` read it).
PLANTING_TARGET = r"""
import os, signal, sys, time
directory, kind, aim = sys.argv[1], sys.argv[2], sys.argv[3]
fd = os.memfd_create("tbcollect:SIGQUIT:" + directory)
def plant(signum, frame):
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = os.path.join(directory, f"tbcollect-{os.getpid()}-{stamp}-0001.txt")
    if kind == "symlink":
        os.symlink(aim, path)
    elif kind == "fifo":
        os.mkfifo(path, 0o600)
    else:
        with open(path, "w") as f:
            f.write("tbcollect: pid 1 at now\n\x1b[2J\x1b]0;owned\x07forged\rline\x9b31m\n")
    print("planted", flush=True)
signal.signal(signal.SIGQUIT, plant)
os.makedirs(directory, mode=0o700, exist_ok=True)
print("ready", os.getpid(), flush=True)
for line in sys.stdin:
    print("echo", line.strip(), flush=True)
"""


@pytest.mark.parametrize("kind", ["secret", "dev-zero", "fifo", "escapes"])
def test_dump_by_signal_reads_a_planted_file_as_hostile(tmp_path, nobody_dir, kind):
    prefix = nobody_python(nobody_dir)
    secret = tmp_path / "secret"
    secret.write_text("root's secret\n")
    secret.chmod(0o600)
    directory = nobody_dir / "dumps"
    planted = {"secret": ("symlink", str(secret)), "dev-zero": ("symlink", "/dev/zero")}
    how, aim = planted.get(kind, (kind, "-"))
    argv = [*prefix, "-c", PLANTING_TARGET, str(directory), how, aim]
    with Target("", argv=argv, env=nobody_env(nobody_dir)) as target:
        pid = int(target.expect("ready"))
        result = cli("dump", str(pid), "--signal", "QUIT", "--timeout", "20")
        assert target.expect("planted") == ""
        assert "root's secret" not in result.stdout
        assert "\x1b" not in result.stdout + result.stderr
        if kind == "escapes":
            assert result.returncode == 0, result.stderr
            assert "\\x1b[2J\\x1b]0;owned\\x07forged\\x0dline\\x9b31m" in result.stdout
        else:
            assert result.returncode == 6, result.stderr
            assert result.stderr.startswith("tbcollect: error: refusing to read the dump: ")
        assert target.ask("x", "echo") == "x"


# ---------------------------------------------------------------------------
# What a channel sends back is untrusted

FAKE_CHANNEL = r"""
import os, socket, sys
answer = bytes.fromhex(sys.argv[1])
name = "tbcollect/%d/%s" % (os.getpid(), "0123456789abcdef")
s = socket.socket(socket.AF_UNIX)
s.bind("\0" + name)
s.listen(1)
fd = os.memfd_create("tbcollect-channel:" + name)
print("ready", os.getpid(), flush=True)
conn, _ = s.accept()
conn.recv(1000)
conn.sendall(answer)
conn.close()
print("answered", flush=True)
sys.stdin.readline()
"""


HOSTILE = "hi \x1b[2J\x07\rthere\x9b\nsecond\n".encode()


@pytest.mark.parametrize(
    "answer, code, message",
    [
        (b"ok text full %d\n" % len(HOSTILE) + HOSTILE, 0, None),
        (b"ok text full 99999999999\n", 1, "over the 64 MiB limit"),
        (b"HTTP/1.1 200 OK\r\n\r\n", 1, "sent an answer that is not tbcollect/1"),
        (b"err denied \x1b[31mno\n", 4, "process {pid}: \\x1b[31mno"),
        (b"ok text full 100\nshort", 1, "closed the connection mid-answer"),
    ],
    ids=["escaped", "huge", "garbage", "error-escaped", "short"],
)
def test_an_answer_from_a_hostile_channel(tmp_path, answer, code, message):
    with Target(FAKE_CHANNEL, args=[answer.hex()], env=base_env(tmp_path)) as target:
        pid = int(target.expect("ready"))
        result = cli("dump", str(pid), "--timeout", "10")
        assert result.returncode == code, result.stderr
        assert "\x1b" not in result.stdout + result.stderr
        if message is None:
            assert result.stdout == "hi \\x1b[2J\\x07\\x0dthere\\x9b\nsecond\n"
        else:
            assert message.format(pid=pid) in result.stderr
        target.send("")


def test_a_channel_advertised_by_one_process_and_served_by_another_is_refused(tmp_path):
    # The advertiser names a socket a different process serves.
    server = """
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind("\\0" + sys.argv[1])
s.listen(1)
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
"""
    liar = """
import os, sys
fd = os.memfd_create("tbcollect-channel:" + sys.argv[1] % os.getpid())
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
"""
    with Target(liar, args=["tbcollect/%d/00000000000000aa"], env=base_env(tmp_path)) as t:
        pid = int(t.expect("ready"))
        name = f"tbcollect/{pid}/00000000000000aa"
        with Target(server, args=[name], env=base_env(tmp_path)) as s:
            other = int(s.expect("ready"))
            result = cli("dump", str(pid))
            assert result.returncode == 4
            assert (
                f"the channel process {pid} advertises is served by process {other}; nothing asked"
            ) in result.stderr
            s.send("")
        t.send("")


# ---------------------------------------------------------------------------
# Signal storms


def test_a_storm_of_signals_makes_one_dump_a_second(tmp_path):
    with Target(LOOP_TARGET, args=["text"], env=base_env(tmp_path)) as target:
        pid = int(target.expect("ready"))
        started = os.times().elapsed
        sent = 0
        # A storm long enough to outlast the first dump.
        while len(dumps_of(tmp_path, pid)) < 2 or os.times().elapsed - started < 1.5:
            os.kill(pid, signal.SIGQUIT)
            sent += 1
            if os.times().elapsed - started > HANG_GUARD:
                pytest.fail("hang guard: no second dump")
        storm = os.times().elapsed - started
        assert target.ask("ping", "pong") == ""
        files = dumps_of(tmp_path, pid)
        # One a second at most: never more files than seconds of storm, plus one.
        assert 2 <= len(files) <= 1 + int(storm) + 1, (len(files), storm, sent)
        reasons = [p.read_text().splitlines()[1] for p in files]
        assert reasons[0].startswith("reason: signal SIGQUIT")
        # The signals that arrived meanwhile are counted into the next dump.
        counted = [r for r in reasons[1:] if r.endswith("signals since the last dump)")]
        assert counted, reasons
        assert len(files) < sent


def test_remote_exec_refusals_say_what_to_do():
    from tbcollect import _remote

    denied = _remote._helper_error(
        4242, "Traceback ...\nPermissionError: [Errno 1] Operation not permitted\n"
    )
    assert denied.code == 4
    assert str(denied).startswith("sys.remote_exec is not permitted: ")
    assert "ptrace" in str(denied) and "install tbcollect" in str(denied)
    disabled = _remote._helper_error(
        4242, "RuntimeError: Remote debugging is not enabled in the remote process\n"
    )
    assert disabled.code == 4 and "-X disable_remote_debug" in str(disabled)
    hostile = _remote._helper_error(4242, "OSError: \x1b[2Jboom\n")
    assert "\x1b" not in str(hostile) and "\\x1b[2Jboom" in str(hostile)


def test_the_version_of_a_python_process_is_read_from_its_executable():
    from tbcollect import _remote

    assert _remote.target_version(os.getpid()) == sys.version_info[:2]
    assert _remote.target_version(0) is None

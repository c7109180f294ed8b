"""The ``tbcollect`` command line: ``dump``, ``render`` (``run`` is in test_run.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import tbcollect

from tests.helpers import (
    LOOP_TARGET,
    Target,
    base_env,
    cli,
    console_script,
    dumps_of,
    validate_json,
    wait_for_dumps,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="tbcollect dump reads /proc (Linux)"
)


def test_dump_prints_a_live_process_that_keeps_running(tmp_path):
    with Target(LOOP_TARGET, args=["text"], env=base_env(tmp_path)) as target:
        pid = int(target.expect("ready"))
        result = cli("dump", str(pid))
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"tbcollect: pid {pid} at ")
        assert lines[1] == "reason: request from tbcollect dump"
        assert any(line.startswith('Thread "worker"') for line in lines)
        assert "worker_loop" in result.stdout
        assert "serve" in result.stdout or "run_forever" in result.stdout
        assert result.stderr == ""
        # Asked through the channel: nothing signalled, no file written.
        assert dumps_of(tmp_path, pid) == []
        # It keeps running, and its event loop still answers.
        assert target.ask("ping", "pong") == ""
        again = cli("dump", str(pid), "--timeout", "60")
        assert again.returncode == 0, again.stderr
        assert again.stdout.startswith(f"tbcollect: pid {pid} at ")
        assert target.ask("ping", "pong") == ""
    assert dumps_of(tmp_path, pid) == []


def test_dump_json_process_as_json_and_as_text(tmp_path):
    with Target(LOOP_TARGET, args=["json"], env=base_env(tmp_path)) as target:
        pid = int(target.expect("ready"))
        as_json = cli("dump", str(pid), "--format", "json")
        assert as_json.returncode == 0, as_json.stderr
        data = validate_json(as_json.stdout)
        assert data["pid"] == pid and data["reason"] == "request from tbcollect dump"
        # Without --format: the format it writes its files in.
        default = cli("dump", str(pid))
        assert validate_json(default.stdout)["pid"] == pid

        as_text = cli("dump", str(pid), "--format", "text")
        assert as_text.returncode == 0, as_text.stderr
        lines = as_text.stdout.splitlines()
        assert lines[0].startswith(f"tbcollect: pid {pid} at ")
        assert lines[1] == "reason: request from tbcollect dump"
        assert target.ask("ping", "pong") == ""


@pytest.mark.parametrize("fmt", ["text", "json", "collapsed", "svg"])
def test_dump_any_format_from_a_text_process(tmp_path, fmt):
    import xml.etree.ElementTree as ET

    with Target(LOOP_TARGET, args=["text"], env=base_env(tmp_path)) as target:
        pid = int(target.expect("ready"))
        result = cli("dump", str(pid), "--format", fmt)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        if fmt == "json":
            data = validate_json(out)
            assert "worker" in [s["name"] for s in data["stacks"]]
        elif fmt == "svg":
            root = ET.fromstring(out)
            assert root.tag.endswith("svg")
            assert "worker_loop" in out
        elif fmt == "collapsed":
            lines = out.splitlines()
            assert lines
            for line in lines:
                stack, _, count = line.rpartition(" ")
                assert stack and int(count) >= 1
            assert any("worker_loop" in line for line in lines)
        else:
            assert out.startswith(f"tbcollect: pid {pid} at ")
        assert target.ask("ping", "pong") == ""
    # Nothing is written in the process's directory, whatever the format.
    assert dumps_of(tmp_path, pid) == []


PLAIN_TARGET = """
import os, sys
print("ready", os.getpid(), flush=True)
for line in sys.stdin:
    print("echo", line.strip(), flush=True)
"""

OWN_HANDLER_TARGET = """
import os, signal, sys
# Like a gunicorn worker: SIGQUIT is caught, and means "stop".
signal.signal(signal.SIGQUIT, lambda *a: (print("quitting", flush=True), sys.exit(3)))
print("ready", os.getpid(), flush=True)
for line in sys.stdin:
    print("echo", line.strip(), flush=True)
"""


@pytest.mark.parametrize("code", [PLAIN_TARGET, OWN_HANDLER_TARGET], ids=["default", "own"])
def test_dump_refuses_a_process_without_handler_and_leaves_it_alive(tmp_path, code):
    with Target(code, env=base_env(tmp_path)) as target:
        pid = int(target.expect("ready"))
        # 3.14+ would dump this process through sys.remote_exec (tests/remote):
        # the refusal is what --no-remote leaves.
        no_remote = ["--no-remote"] if sys.version_info >= (3, 14) else []
        result = cli("dump", str(pid), *no_remote)
        assert result.returncode == 5
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"tbcollect: error: process {pid} ")
        assert "nothing was sent" in line
        assert "tbcollect.install()" in line and "TBCOLLECT=1" in line
        assert "python -m tbcollect run" in line
        assert target.ask("hello", "echo") == "hello"
        assert target.alive()
        rc, out, _ = target.finish()
        assert rc == 0 and "quitting" not in out
    assert not tmp_path.exists() or os.listdir(tmp_path) == []


def test_dump_of_a_process_that_does_not_exist(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that existed and is gone
    result = cli("dump", str(proc.pid))
    assert result.returncode == 3
    assert result.stderr == f"tbcollect: error: no such process: {proc.pid}\n"
    assert cli("dump", "0").returncode == 3


@pytest.mark.slow
def test_dump_times_out_clearly_when_stopped(tmp_path):
    with Target(LOOP_TARGET, args=["text"], env=base_env(tmp_path)) as target:
        pid = int(target.expect("ready"))
        os.kill(pid, signal.SIGSTOP)  # a stopped process cannot answer
        try:
            result = cli("dump", str(pid), "--timeout", "0.5")
        finally:
            os.kill(pid, signal.SIGCONT)
        assert result.returncode == 7
        (line,) = result.stderr.splitlines()
        assert line == f"tbcollect: error: process {pid}: no answer in time"
        # The request the stopped process finds on waking is answered to
        # nobody: the process goes on, and writes nothing.
        assert target.ask("ping", "pong") == ""
        assert cli("dump", str(pid)).returncode == 0
    assert dumps_of(tmp_path, pid) == []


def test_dump_by_signal_uses_only_the_signal_and_directory_the_process_advertises(tmp_path):
    code = """
import os, signal, sys
import tbcollect
tbcollect.install(signal.SIGUSR2, directory=sys.argv[1])
print("ready", os.getpid(), flush=True)
for line in sys.stdin:
    print("echo", line.strip(), flush=True)
"""
    explicit = tmp_path / "explicit"
    with Target(code, args=[str(explicit)], env=base_env(tmp_path / "env")) as target:
        pid = int(target.expect("ready"))
        result = cli("dump", str(pid))  # through the channel, whatever the signal
        assert result.returncode == 0, result.stderr
        assert dumps_of(explicit, pid) == []

        by_signal = cli("dump", str(pid), "--signal", "USR2")
        assert by_signal.returncode == 0, by_signal.stderr
        assert by_signal.stdout.splitlines()[1] == "reason: signal SIGUSR2"
        (path,) = dumps_of(explicit, pid)
        assert by_signal.stderr == f"tbcollect: dump of process {pid} saved in {path}\n"

        wrong = cli("dump", str(pid), "--signal", "QUIT")
        assert wrong.returncode == 5
        assert wrong.stderr == (
            f"tbcollect: error: process {pid} dumps on SIGUSR2, not SIGQUIT; nothing was sent\n"
        )
        # A wrong directory is an error at once, before any signal.
        elsewhere = cli("dump", str(pid), "--signal", "USR2", "--directory", str(tmp_path))
        assert elsewhere.returncode == 6
        assert f"writes its dumps to {explicit}, not {tmp_path}; nothing was sent" in (
            elsewhere.stderr
        )
        assert len(dumps_of(explicit, pid)) == 1
        assert target.ask("hello", "echo") == "hello"


@pytest.mark.parametrize(
    "extra", [["--format", "json"], ["--children"], ["--no-remote"]], ids=lambda e: e[0]
)
def test_dump_by_signal_with_channel_options_is_a_usage_error(tmp_path, extra):
    with Target(LOOP_TARGET, args=["text"], env=base_env(tmp_path)) as target:
        pid = int(target.expect("ready"))
        result = cli("dump", str(pid), "--signal", "QUIT", *extra)
        assert result.returncode == 2
        assert "cannot be combined with --format, --children or --no-remote" in result.stderr
        assert target.ask("ping", "pong") == ""
    assert dumps_of(tmp_path, pid) == []


def test_dump_by_signal_refuses_an_unsafe_directory_before_signalling(tmp_path):
    shared = tmp_path / "shared"
    with Target(LOOP_TARGET, args=["text"], env=base_env(shared)) as target:
        pid = int(target.expect("ready"))
        shared.chmod(0o777)  # someone opened it up after install()
        result = cli("dump", str(pid), "--signal", "QUIT")
        assert result.returncode == 6
        assert result.stderr == (
            f"tbcollect: error: dump directory {shared}: is writable by group or others "
            "(mode 0777); refusing it\n"
        )
        assert target.ask("ping", "pong") == ""
        assert dumps_of(shared, pid) == []
        # The channel writes no file: it does not care.
        assert cli("dump", str(pid)).returncode == 0
        assert dumps_of(shared, pid) == []


def test_render_a_saved_dump(tmp_path):
    with Target(LOOP_TARGET, args=["json"], env=base_env(tmp_path)) as target:
        pid = int(target.expect("ready"))
        os.kill(pid, signal.SIGQUIT)
        (saved,) = wait_for_dumps(tmp_path, pid)
    as_text = cli("render", str(saved))
    assert as_text.returncode == 0, as_text.stderr
    assert as_text.stdout == tbcollect.load(saved).to_text()
    assert as_text.stdout.startswith(f"tbcollect: pid {pid} at ")
    as_json = cli("render", str(saved), "--format", "json", "--indent", "2")
    assert as_json.returncode == 0, as_json.stderr
    data = validate_json(as_json.stdout)
    assert data["pid"] == pid
    assert data["stacks"] == json.loads(saved.read_text())["stacks"]


def test_render_of_a_non_json_file_is_one_clear_error(tmp_path):
    raw = tmp_path / "dump.txt"
    raw.write_text("tbcollect: pid 1 at x, raw dump\n")
    result = cli("render", str(raw))
    assert result.returncode == 1
    # the message names the file (render and diff read several)
    assert result.stderr.startswith(f"tbcollect: error: {raw}: not a tbcollect/1 dump: ")
    assert len(result.stderr.splitlines()) == 1
    missing = cli("render", str(tmp_path / "missing.json"))
    assert missing.returncode == 1
    assert missing.stderr.startswith("tbcollect: error: cannot read dump ")


def test_console_script(tmp_path):
    script = console_script()
    if script is None:
        pytest.skip("the tbcollect console script is not installed in this environment")
    with Target(LOOP_TARGET, args=["text"], env=base_env(tmp_path)) as target:
        pid = int(target.expect("ready"))
        result = subprocess.run(
            [script, "dump", str(pid)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"tbcollect: pid {pid} at ")
        assert target.ask("ping", "pong") == ""
    help_text = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0
    assert all(word in help_text.stdout for word in ("dump", "run", "render"))


REPLACED_TARGET = """
import os, signal, sys
import tbcollect

tbcollect.install()
print("installed", tbcollect.installed().name, flush=True)
# Like a server setting up its own handlers after the fact.
signal.signal(signal.SIGQUIT, lambda *a: print("own handler", flush=True))
print("replaced", tbcollect.installed(), flush=True)
for line in sys.stdin:
    print("echo", line.strip(), flush=True)
"""


def test_dump_works_through_the_channel_when_the_handler_was_replaced(tmp_path):
    from tbcollect import _procinfo

    with Target(REPLACED_TARGET, env=base_env(tmp_path)) as target:
        assert target.expect("installed") == "SIGQUIT"
        assert target.expect("replaced") == "None"
        process = _procinfo.Process(target.pid)
        # The watcher notices and stops advertising the signal.
        wait_until(lambda: process.beacons() == [], "the beacon to go")
        result = cli("dump", str(target.pid))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"tbcollect: pid {target.pid} at ")
        by_signal = cli("dump", str(target.pid), "--signal", "QUIT")
        assert by_signal.returncode == 5
        assert "advertises no tbcollect handler on SIGQUIT; nothing was sent" in by_signal.stderr
        assert target.ask("hello", "echo") == "hello"
        assert "own handler" not in target.lines
        rc, out, err = target.finish()
        assert rc == 0 and "own handler" not in out
        assert (
            "tbcollect: the SIGQUIT handler was replaced (by a signal.signal() call?): "
            f"no more dumps on SIGQUIT in process {target.pid}; `tbcollect dump` still asks "
            "for them through its channel\n"
        ) in err
    assert dumps_of(tmp_path, target.pid) == []


def test_dump_of_a_process_in_its_own_pid_namespace(tmp_path):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) to make a PID namespace")
    base = [unshare, "--pid", "--fork", "--kill-child"]
    if subprocess.run([*base, "true"], capture_output=True, timeout=60).returncode != 0:
        pytest.skip("cannot create a PID namespace here (needs root or user namespaces)")
    argv = [*base, sys.executable, "-c", LOOP_TARGET, "text"]
    with Target("", argv=argv, env=base_env(tmp_path)) as target:
        assert target.expect("ready") == "1"  # its own pid, inside the namespace
        children = Path(f"/proc/{target.pid}/task/{target.pid}/children").read_text().split()
        (host_pid,) = map(int, children)
        result = cli("dump", str(host_pid))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("tbcollect: pid 1 at ")
        assert target.ask("ping", "pong") == ""
        by_signal = cli("dump", str(host_pid), "--signal", "QUIT")
        assert by_signal.returncode == 0, by_signal.stderr
        (path,) = dumps_of(tmp_path, 1)  # named with the pid the process knows
        assert by_signal.stderr.strip() == f"tbcollect: dump of process {host_pid} saved in {path}"

"""``tbcollect dump PID`` of a CPython 3.14+ process that has no tbcollect at
all, through ``sys.remote_exec`` (PEP 768). Run by ``make test-remote`` (and
``make test-all``) on 3.14 and 3.15; skipped on older Pythons."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import pytest

from tests.helpers import HANG_GUARD, Target, base_env, cli, validate_json

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 14) or not sys.platform.startswith("linux"),
    reason="sys.remote_exec is CPython 3.14+ (and tbcollect dump reads /proc)",
)

UNPREPARED = """
import asyncio, os, sys, threading, time

def worker_loop():
    while True:
        time.sleep(0.05)

threading.Thread(target=worker_loop, name="worker", daemon=True).start()

async def heartbeat():
    while True:
        await asyncio.sleep(0.05)

async def main():
    beat = asyncio.create_task(heartbeat(), name="heartbeat")
    try:
        import tbcollect
    except ImportError:
        print("tbcollect", "absent", flush=True)
    print("ready", os.getpid(), flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    print("echo", line.strip(), flush=True)
    beat.cancel()

asyncio.run(main())
"""

STUCK = """
import itertools, os
print("ready", os.getpid(), flush=True)
# Never returns to the eval loop, so never reaches a safe point.
sum(itertools.repeat(1, 10**15))
"""


def bare_python(tmp_path: Path, base: str) -> str:
    """A virtualenv of interpreter ``base`` without tbcollect."""
    venv = tmp_path / "bare"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return str(venv / "bin" / "python")


def remote_dirs() -> set:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "tbcollect-remote-*")))


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_an_unprepared_process_from_another_venv_is_dumped(tmp_path, fmt):
    python = bare_python(tmp_path, sys._base_executable)
    with Target("", argv=[python, "-c", UNPREPARED], env=base_env(tmp_path)) as target:
        assert target.expect("tbcollect") == "absent"
        pid = int(target.expect("ready"))
        before = remote_dirs()
        result = cli("dump", str(pid), "--format", fmt, "--timeout", "30")
        assert result.returncode == 0, result.stderr
        if fmt == "json":
            data = validate_json(result.stdout)
            assert data["pid"] == pid
            names = {s["name"] for s in data["stacks"]}
            assert {"MainThread", "worker", "heartbeat"} <= names, names
        else:
            assert result.stdout.startswith(f"tbcollect: pid {pid} at ")
            assert 'Thread "worker"' in result.stdout
            assert "heartbeat" in result.stdout and "worker_loop" in result.stdout
        # The private directory is gone, and the process goes on.
        assert remote_dirs() - before == set()
        assert target.ask("x", "echo") == "x"


def test_no_remote_refuses_an_unprepared_process(tmp_path):
    python = bare_python(tmp_path, sys._base_executable)
    with Target("", argv=[python, "-c", UNPREPARED], env=base_env(tmp_path)) as target:
        target.expect("tbcollect")
        pid = int(target.expect("ready"))
        result = cli("dump", str(pid), "--no-remote")
        assert result.returncode == 5
        assert "has no tbcollect channel (--no-remote" in result.stderr
        assert "nothing was sent" in result.stderr
        assert target.ask("x", "echo") == "x"


def test_a_process_stuck_in_c_is_reported_within_the_timeout(tmp_path):
    python = bare_python(tmp_path, sys._base_executable)
    with Target("", argv=[python, "-c", STUCK], env=base_env(tmp_path)) as target:
        pid = int(target.expect("ready"))
        result = cli("dump", str(pid), "--timeout", "2")
        assert result.returncode == 7, result.stderr
        assert "did not reach a safe point within 2 s: it is stuck in C code" in result.stderr
        assert "tbcollect.install()" in result.stderr and "py-spy" in result.stderr


def test_another_python_version_without_tbcollect_is_a_clear_error(tmp_path):
    other = "3.15" if sys.version_info[:2] == (3, 14) else "3.14"
    pattern = os.path.expanduser(f"~/.pyenv/versions/{other}.*/bin/python{other}")
    found = sorted(glob.glob(pattern))
    if not found:
        pytest.skip(f"needs a Python {other} to run the target")
    python = bare_python(tmp_path, found[-1])
    with Target("", argv=[python, "-c", UNPREPARED], env=base_env(tmp_path)) as target:
        target.expect("tbcollect")
        pid = int(target.expect("ready"))
        result = cli("dump", str(pid), "--timeout", str(HANG_GUARD / 2))
        assert result.returncode == 5, result.stderr
        assert "tbcollect is not importable in the target" in result.stderr
        assert f"does not fit its Python {other}" in result.stderr
        assert "Install tbcollect in its environment" in result.stderr
        assert target.ask("x", "echo") == "x"


def without_ptrace(*argv: str) -> List[str]:
    """``argv`` run as root without CAP_SYS_PTRACE (dropped from the bounding
    set, so the exec'd program has it neither permitted nor effective): what
    a container gets from Docker or Kubernetes by default."""
    return ["setpriv", "--bounding-set", "-sys_ptrace", "--", *argv]


def dump_without_ptrace(pid: int, env: Dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        without_ptrace(sys.executable, "-m", "tbcollect", "dump", str(pid), "--timeout", "30"),
        capture_output=True,
        text=True,
        env=env,
        timeout=HANG_GUARD * 2,
    )


def yama_scope() -> str:
    try:
        return Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip()
    except OSError:
        return "none"


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="dropping a capability needs root and setpriv",
)
def test_remote_dump_needs_cap_sys_ptrace_against_a_more_privileged_process(tmp_path):
    """The CLI without CAP_SYS_PTRACE cannot attach to a process that has
    capabilities it lacks: exit 4 and a message that names the capability.
    A process with no more capabilities than the CLI (the app and
    ``kubectl exec`` in one container) is dumped without it unless Yama's
    ptrace_scope is 1 or more."""
    python = bare_python(tmp_path, sys._base_executable)
    env = base_env(tmp_path)
    with Target("", argv=[python, "-c", UNPREPARED], env=env) as target:
        target.expect("tbcollect")
        pid = int(target.expect("ready"))
        refused = dump_without_ptrace(pid, env)
        # The kernel's ptrace check already hides its descriptors (is there
        # a channel?) and its executable (which Python?): refused there.
        assert refused.returncode == 4, refused.stderr
        assert refused.stderr.startswith(f"tbcollect: error: not permitted to read /proc/{pid}/fd")
        assert "CAP_SYS_PTRACE" in refused.stderr
        assert refused.stdout == ""

        with_it = cli("dump", str(pid), "--timeout", "30")
        assert with_it.returncode == 0, with_it.stderr
        assert "worker_loop" in with_it.stdout
        assert target.ask("x", "echo") == "x"  # it went on

    argv = without_ptrace(python, "-c", UNPREPARED)
    with Target("", argv=argv, env=env) as target:
        target.expect("tbcollect")
        pid = int(target.expect("ready"))
        same = dump_without_ptrace(pid, env)
        if yama_scope() in ("none", "0"):
            assert same.returncode == 0, same.stderr
            assert "worker_loop" in same.stdout
        else:
            assert same.returncode == 4, same.stderr
            assert "ptrace" in same.stderr

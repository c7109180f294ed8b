"""``tbcollect dump PID`` of a CPython 3.14+ process that has no tbcollect at
all, through ``sys.remote_exec`` (PEP 768). Run by ``make test-remote`` (and
``make test-all``) on 3.14 and 3.15; skipped on older Pythons."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
from pathlib import Path

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

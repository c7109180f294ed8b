"""The container recipe (docs/integrations.md, Docker and Kubernetes) without
a container engine: the app runs as PID 1 of a PID namespace of its own
(``unshare --pid --fork --mount-proc``), and ``tbcollect dump 1`` runs inside
that namespace (``nsenter -t PID -p -m``), as ``kubectl exec POD -- tbcollect
dump 1`` and ``docker exec`` do. The image side (the wheel installs and runs
with no Rust) is tests/test_wheel.py; the capability the 3.14+ remote dump
needs is tests/remote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import (
    Target,
    as_pid_1,
    base_env,
    children,
    cli,
    in_namespace,
    namespaces_permitted,
    wait_until,
)

APP = """
import os, sys, threading, time

def worker_loop():
    while True:
        time.sleep(0.05)

threading.Thread(target=worker_loop, name="worker", daemon=True).start()
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
"""


pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not namespaces_permitted(),
    reason="needs unshare and nsenter, and the right to make PID and mount namespaces "
    "(root or user namespaces)",
)


def tbcollect_in(host_pid: int, *args: str, env: dict) -> subprocess.CompletedProcess:
    return in_namespace(host_pid, sys.executable, "-m", "tbcollect", *args, env=env)


def test_dump_1_inside_the_apps_pid_namespace(tmp_path):
    env = base_env(None, TBCOLLECT="1", TMPDIR=str(tmp_path))
    env.pop("XDG_RUNTIME_DIR", None)
    with Target("", argv=as_pid_1(sys.executable, "-c", APP), env=env) as target:
        assert target.expect("ready") == "1", "the app is PID 1 of its namespace"
        (host_pid,) = wait_until(lambda: children(target.pid), "the app under unshare")

        inside = tbcollect_in(host_pid, "dump", "1", env=env)
        assert inside.returncode == 0, inside.stderr
        assert inside.stdout.startswith("tbcollect: pid 1 at "), inside.stdout
        assert 'Thread "worker"' in inside.stdout and "worker_loop" in inside.stdout

        json_inside = tbcollect_in(host_pid, "dump", "1", "--format", "json", env=env)
        assert json_inside.returncode == 0, json_inside.stderr
        assert '"pid": 1' in json_inside.stdout or '"pid":1' in json_inside.stdout

        # From the host, as root, by its host pid: the same process, which
        # names itself by the pid it sees.
        outside = cli("dump", str(host_pid), env=env)
        assert outside.returncode == 0, outside.stderr
        assert outside.stdout.startswith("tbcollect: pid 1 at "), outside.stdout

        # What a dump by signal leaves stays in the app's dump directory.
        by_signal = tbcollect_in(host_pid, "dump", "1", "--signal", "QUIT", env=env)
        assert by_signal.returncode == 0, by_signal.stderr
        saved = by_signal.stderr.strip().rsplit(" ", 1)[-1]
        assert saved.startswith(str(tmp_path / f"tbcollect-{os.geteuid()}" / "python")), saved
        assert Path(saved).name.startswith("tbcollect-1-")

        # A pid that is not there inside the namespace is a clear error.
        missing = tbcollect_in(host_pid, "dump", "4242", env=env)
        assert missing.returncode == 3, missing.stderr
        assert "no such process: 4242" in missing.stderr

"""A built wheel installs and runs in a fresh virtualenv on a machine
without Rust: the test takes Rust off the PATH before installing it.

It uses a wheel for this interpreter from dist/ (`make wheel`), or builds one
into a temporary directory with maturin when dist/ has none (minutes: slow)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict, Optional

import pytest
import tbcollect

from tests.helpers import (
    HANG_GUARD,
    ROOT,
    Target,
    as_pid_1,
    children,
    in_namespace,
    namespaces_permitted,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

TAG = f"cp{sys.version_info[0]}{sys.version_info[1]}"


def built_wheel(tmp_path: Path) -> Path:
    machine = sysconfig.get_platform().split("-")[-1]
    found = sorted(
        (ROOT / "dist").glob(f"tbcollect-{tbcollect.__version__}-{TAG}-{TAG}-*{machine}.whl")
    )
    if found:
        return found[-1]
    maturin = shutil.which("maturin") or str(Path(sys.executable).with_name("maturin"))
    if not Path(maturin).exists() or shutil.which("cargo") is None:
        pytest.skip("no wheel in dist/ and no maturin and cargo to build one (run make wheel)")
    out = tmp_path / "dist"
    env = dict(os.environ, CARGO_TARGET_DIR=str(ROOT / "target" / "wheel"))
    subprocess.run(
        [maturin, "build", "--release", "--quiet", "-i", sys.executable, "--out", str(out)],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=HANG_GUARD * 50,
    )
    (wheel,) = out.glob("*.whl")
    return wheel


def without_rust() -> Dict[str, str]:
    """This environment with every PATH entry that holds cargo or rustc taken out."""
    keep = [
        d
        for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and not any(Path(d, tool).exists() for tool in ("cargo", "rustc", "rustup"))
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TBCOLLECT", "CARGO", "RUST"))}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    env["PATH"] = os.pathsep.join(keep)
    return env


def run(cmd: list, env: Dict[str, str], cwd: Optional[Path] = None) -> str:
    proc = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=HANG_GUARD * 5
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_wheel_installs_and_runs_without_rust(tmp_path):
    wheel = built_wheel(tmp_path)
    env = without_rust()
    assert shutil.which("cargo", path=env["PATH"]) is None
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    run([base, "-m", "venv", str(venv)], env)
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "--quiet", "--no-index", str(wheel)], env)
    # From a directory of its own, so the source tree cannot be imported instead.
    out = run([python, "-m", "tbcollect", "--version"], env, cwd=tmp_path)
    assert out == f"tbcollect {tbcollect.__version__}\n"
    code = "import tbcollect; print(tbcollect.__file__); print(len(tbcollect.collect().stacks))"
    where, count = run([python, "-c", code], env, cwd=tmp_path).split()
    assert (
        Path(where).is_relative_to(venv) if hasattr(Path, "is_relative_to") else str(venv) in where
    )
    assert int(count) >= 1
    script = venv / "bin" / "tbcollect"
    assert run([str(script), "--version"], env, cwd=tmp_path) == out
    if namespaces_permitted():
        image_recipe(python, str(script), env, tmp_path)


IMAGE_APP = """
import os, sys, time
def serving():
    print("ready", os.getpid(), flush=True)
    sys.stdin.readline()
serving()
"""


def image_recipe(python: str, script: str, env: Dict[str, str], tmp_path: Path) -> None:
    """The container recipe with nothing but the wheel: the app started with
    ``TBCOLLECT=1`` as PID 1 of its own PID namespace, dumped by the wheel's
    ``tbcollect`` from inside that namespace (``kubectl exec POD -- tbcollect
    dump 1``)."""
    app_env = dict(env, TBCOLLECT="1", TMPDIR=str(tmp_path), PYTHONUNBUFFERED="1")
    argv = as_pid_1(python, "-c", IMAGE_APP)
    with Target("", argv=argv, env=app_env, cwd=tmp_path) as target:
        assert target.expect("ready") == "1"
        (host_pid,) = wait_until(lambda: children(target.pid), "the app under unshare")
        result = in_namespace(host_pid, script, "dump", "1", env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("tbcollect: pid 1 at "), result.stdout
        assert "in serving" in result.stdout, result.stdout

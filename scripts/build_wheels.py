"""Builds the release artifacts into dist/: one wheel per CPython found
(3.9-3.15, pyenv's or given with --python) and the source distribution.

The wheels are manylinux2014 when maturin can link through zig (`pip install
ziglang`, which `make wheel` tries); otherwise maturin tags them for the
oldest glibc its own audit finds they need, which is the best portable tag
this machine can give without a manylinux container. Each wheel is built by
maturin, which reads the version from Cargo.toml.

    python scripts/build_wheels.py                 # every Python pyenv has
    python scripts/build_wheels.py --python /usr/bin/python3.11 --no-sdist
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parent.parent
VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15"]


def pyenv_pythons() -> List[str]:
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = []
    for version in VERSIONS:
        candidates = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
        if candidates:
            found.append(candidates[-1])
    return found


def have_zig() -> bool:
    try:
        import ziglang  # noqa: F401
    except ImportError:
        return shutil.which("zig") is not None
    return True


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", help="an interpreter (repeatable)")
    parser.add_argument("--out", default=str(ROOT / "dist"), help="output directory")
    parser.add_argument("--no-sdist", action="store_true", help="wheels only")
    args = parser.parse_args(argv)

    pythons = args.python or pyenv_pythons()
    if not pythons:
        print("no CPython 3.9-3.15 found: pass --python", file=sys.stderr)
        return 1
    maturin = [sys.executable, "-m", "maturin"]
    portable = ["--zig", "--compatibility", "manylinux2014"] if have_zig() else []
    if not portable:
        print("zig not found: wheels are tagged for this machine's glibc", file=sys.stderr)
    # maturin finds zig as `python3 -m ziglang`: this environment's python3.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = dict(os.environ, CARGO_TARGET_DIR=str(ROOT / "target" / "wheel"), PATH=path)
    failed = []
    for python in pythons:
        print(f"=== wheel for {python}", flush=True)
        cmd = [*maturin, "build", "--release", "--out", args.out, "-i", python, *portable]
        if subprocess.run(cmd, cwd=ROOT, env=env).returncode != 0:
            failed.append(python)
    if not args.no_sdist:
        if subprocess.run([*maturin, "sdist", "--out", args.out], cwd=ROOT, env=env).returncode:
            failed.append("sdist")
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

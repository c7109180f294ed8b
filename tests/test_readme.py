"""The README for users: at most 300 lines, and every command and Python
block it shows runs, in order, in a directory of its own (PID stands for a
live process with the handler installed; app.py and app are a small
program; before.json and after.json are two dumps)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List, Tuple

import pytest

from tests.helpers import HANG_GUARD, ROOT, Target, base_env, validate_json

README = ROOT / "README.md"
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="tbcollect dump reads /proc (Linux)"
)

APP = """
import sys
print("app", sys.argv[1:], flush=True)
"""

# The process the `tbcollect dump PID` lines look at: installed as the quick
# start says, answering until its stdin closes.
TARGET = """
import sys, threading
import tbcollect
tbcollect.install()
print("ready", flush=True)
sys.stdin.readline()
"""


def blocks(kind: str) -> List[Tuple[int, str]]:
    """(line number, text) of every fenced block of this kind, in order."""
    found = []
    for m in re.finditer(rf"^( *)```{kind}\n(.*?)^\1```$", README.read_text(), re.M | re.S):
        line = README.read_text()[: m.start()].count("\n") + 1
        found.append((line, textwrap.dedent(m.group(2))))
    return found


def commands() -> List[Tuple[int, str]]:
    out = []
    for line, text in blocks("sh"):
        for i, command in enumerate(text.splitlines()):
            command = re.sub(r"\s+#.*$", "", command).strip()
            if command:
                out.append((line + 1 + i, command))
    return out


def test_readme_is_at_most_300_lines():
    assert len(README.read_text().splitlines()) <= 300


def test_readme_shows_commands_and_python():
    assert len(commands()) >= 8 and len(blocks("python")) >= 3


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def run_python_block(text: str, cwd: Path) -> None:
    # A recipe's hook is called as its server would call it.
    calls = re.findall(r"^def (\w+)\((\w*)", text, re.M)
    code = text + "".join(f"\n{name}(None)" if arg else f"\n{name}()" for name, arg in calls)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=base_env(cwd / "dumps"),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    if "ModuleNotFoundError" in proc.stderr and "celery" in proc.stderr:
        return  # the celery recipe needs celery, which the tests do not install
    assert proc.returncode == 0, proc.stderr


def run_command(command: str, cwd: Path, pid: int) -> str:
    words = shlex.split(command.replace("PID", str(pid)))
    if words[:2] == ["pip", "install"]:
        # Installing from the index is what tests/test_wheel.py does with a built wheel.
        assert words[2:] == ["tbcollect"]
        return ""
    if words[0] == "make":
        proc = subprocess.run(
            ["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, f"{command}: {proc.stderr}"
        return ""
    assert words[0] == "tbcollect", command
    proc = subprocess.run(
        [sys.executable, "-m", "tbcollect", *words[1:]],
        cwd=cwd,
        env=base_env(cwd / "dumps"),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD * 2,
    )
    assert proc.returncode == 0, f"{command}: {proc.stderr}"
    return proc.stdout


def test_every_readme_command_and_block_runs(workdir: Path):
    for _, text in blocks("python"):
        run_python_block(text, workdir)
    assert validate_json((workdir / "dump.json").read_text())["schema"] == "tbcollect/1"
    for name in ("before.json", "after.json"):
        run_command(f"tbcollect render dump.json --format json -o {name}", workdir, 0)
    with Target(TARGET, env=base_env(workdir / "dumps"), cwd=workdir) as target:
        target.expect("ready")
        outputs = {command: run_command(command, workdir, target.pid) for _, command in commands()}
    for command, out in outputs.items():
        if command.startswith("tbcollect dump") and "--format json" in command:
            assert validate_json(out)["schema"] == "tbcollect/1"
        elif command.startswith("tbcollect dump") and "--children" in command:
            assert out.startswith(f"==> pid {target.pid}:"), out
        elif command.startswith("tbcollect dump"):
            assert out.startswith("tbcollect: pid "), out
        elif command.startswith("tbcollect run"):
            assert out.startswith("app ['--port', '8000']"), out
        elif command == "tbcollect --version":
            assert out.startswith("tbcollect ")
    assert (workdir / "stacks.svg").read_text().lstrip().startswith("<?xml")

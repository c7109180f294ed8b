"""No code change needed: ``tbcollect run`` and ``TBCOLLECT=1``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import tbcollect

from tests.helpers import (
    Target,
    base_env,
    cli,
    console_script,
    dumps_of,
    inherited_disposition,
    validate_json,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="POSIX signals and /proc (Linux)"
)

# A program that knows nothing of tbcollect: reports how it was run, answers
# lines until "exit N", then exits with N.
PROGRAM = """
import os, signal, sys, threading, time

def background():
    while True:
        time.sleep(0.05)

threading.Thread(target=background, name="background", daemon=True).start()
tb = sys.modules.get("tbcollect")
print("name", __name__, flush=True)
print("argv", sys.argv, flush=True)
print("path0", sys.path[0], flush=True)
print("handler", repr(signal.getsignal(signal.SIGQUIT)), flush=True)
print("usr2", repr(signal.getsignal(signal.SIGUSR2)), flush=True)
print("pid", os.getpid(), flush=True)
for line in sys.stdin:
    if line.startswith("exit "):
        sys.exit(int(line.split()[1]))
    print("echo", line.strip(), flush=True)
"""


@pytest.fixture
def program(tmp_path):
    path = tmp_path / "prog" / "program.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(PROGRAM))
    return path


def run_target(argv, env, cwd=None):
    return Target("", argv=argv, env=env, cwd=cwd)


def check_dump(directory: Path, pid: int, fmt: str = "text") -> str:
    result = cli("dump", str(pid))
    assert result.returncode == 0, result.stderr
    assert dumps_of(directory, pid) == []  # asked through the channel: no file
    if fmt == "json":
        validate_json(result.stdout)
    return result.stdout


def test_run_script(tmp_path, program):
    dumps = tmp_path / "dumps"
    argv = [sys.executable, "-m", "tbcollect", "run", str(program), "a", "--b", "-m", "c"]
    with run_target(argv, base_env(dumps)) as target:
        assert target.expect("name") == "__main__"
        assert target.expect("argv") == repr([str(program), "a", "--b", "-m", "c"])
        assert target.expect("path0") == str(program.parent)
        assert target.expect("handler") == "<tbcollect dump handler>"
        pid = int(target.expect("pid"))
        text = check_dump(dumps, pid)
        assert 'Thread "background"' in text and f"{program}" in text
        # The main thread starts at the program, as under `python program.py`:
        # tbcollect run's own frames and runpy's are trimmed.
        assert "runpy" not in text and "tbcollect/__main__.py" not in text, text
        assert target.ask("hi", "echo") == "hi"
        target.send("exit 7")
        assert target.finish()[0] == 7


def test_run_module_with_options(tmp_path, program):
    dumps = tmp_path / "dumps"
    argv = [
        sys.executable,
        "-m",
        "tbcollect",
        "run",
        "--format",
        "json",
        "--signal",
        "USR2",
        "--directory",
        str(dumps),
        "-m",
        "program",
        "--format",
        "x",
    ]
    with run_target(argv, base_env(), cwd=program.parent) as target:
        assert target.expect("name") == "__main__"
        assert target.expect("argv") == repr([str(program), "--format", "x"])
        assert target.expect("path0") == str(program.parent)  # the current directory
        assert target.expect("handler") == repr(inherited_disposition(signal.SIGQUIT))
        assert target.expect("usr2") == "<tbcollect dump handler>"
        pid = int(target.expect("pid"))
        result = cli("dump", str(pid))  # the process advertises USR2 and the directory
        assert result.returncode == 0, result.stderr
        data = validate_json(result.stdout)
        assert data["reason"] == "request from tbcollect dump"
        by_signal = cli("dump", str(pid), "--signal", "USR2")
        assert by_signal.returncode == 0, by_signal.stderr
        assert validate_json(by_signal.stdout)["reason"] == "signal SIGUSR2"
        assert "background" in [s["name"] for s in data["stacks"]]
        main = [s for s in data["stacks"] if s["name"] == "MainThread"][0]
        assert (main["frames"][0]["filename"], main["frames"][0]["function"]) == (
            str(program),
            "<module>",
        )
        target.send("exit 0")
        assert target.finish()[0] == 0


def test_run_console_script(tmp_path, program):
    script = console_script()
    if script is None:
        pytest.skip("the tbcollect console script is not installed in this environment")
    with run_target([script, "run", str(program)], base_env(tmp_path)) as target:
        assert target.expect("name") == "__main__"
        pid = int(target.expect("pid"))
        text = check_dump(tmp_path, pid)
        assert text.startswith(f"tbcollect: pid {pid} at ")
        assert "runpy" not in text and "tbcollect/__main__.py" not in text, text
        target.send("exit 3")
        assert target.finish()[0] == 3


@pytest.mark.parametrize(
    "words",
    [
        ["--", "python", "{program}", "a", "--signal", "x"],
        ["python", "{program}", "a", "--signal", "x"],
        ["--signal", "USR2", "--", "{program}", "a", "--signal", "x"],
        ["--", "python{major}", "-m", "program", "a", "--signal", "x"],
    ],
    ids=["dashdash-python", "python", "dashdash-script", "python-m"],
)
def test_run_accepts_python_and_a_double_dash(tmp_path, program, words):
    major = sys.version_info[0]
    words = [w.format(program=program, major=major) for w in words]
    argv = [sys.executable, "-m", "tbcollect", "run", *words]
    with run_target(argv, base_env(tmp_path), cwd=program.parent) as target:
        assert target.expect("name") == "__main__"
        assert target.expect("argv") == repr([str(program), "a", "--signal", "x"])
        pid = int(target.expect("pid"))
        assert check_dump(tmp_path, pid).startswith(f"tbcollect: pid {pid} at ")
        target.send("exit 4")
        assert target.finish()[0] == 4


@pytest.mark.parametrize(
    "words, option",
    [
        (["--signal", "KILL", "x.py"], "--signal"),
        (["--signal", "NOPE", "x.py"], "--signal"),
        (["--format", "yaml", "x.py"], "--format"),
        (["--raw-timeout", "soon", "x.py"], "--raw-timeout"),
        (["--raw-timeout", "-1", "x.py"], "--raw-timeout"),
        (["--bogus", "x.py"], "--bogus"),
        (["python", "-u", "x.py"], "-u"),
        (["python2.7", "x.py"], "python2.7"),
        (["-m"], "-m"),
    ],
)
def test_run_usage_errors_exit_2_naming_the_option(words, option):
    result = cli("run", *words)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(("tbcollect run: error:", "tbcollect: error:")), result.stderr
    assert option in last, result.stderr


def test_dump_usage_errors_exit_2_naming_the_option():
    for words, option in [
        (["--timeout", "0", "1"], "--timeout"),
        (["--signal", "STOP", "1"], "--signal"),
        (["notapid"], "pid"),
    ]:
        result = cli("dump", *words)
        assert result.returncode == 2, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("tbcollect dump: error:") and option in last, result.stderr


def test_bare_command_prints_help_and_version_prints_the_version():
    bare = cli()
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.startswith("usage: tbcollect")
    assert all(word in bare.stdout for word in ("dump", "run", "render", "diff", "--version"))
    version = cli("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"tbcollect {tbcollect.__version__}\n"


def test_run_errors(tmp_path):
    missing = cli("run", str(tmp_path / "nope.py"))
    assert missing.returncode == 2
    assert missing.stderr == f"tbcollect: error: cannot run {tmp_path / 'nope.py'}: no such file\n"
    no_module = cli("run", "-m", "tbcollect_no_such_module_here")
    assert no_module.returncode == 1
    assert no_module.stderr.startswith("tbcollect: error: cannot run -m tbcollect_no_such_module")
    nothing = cli("run")
    assert nothing.returncode == 2
    assert "give a program to run" in nothing.stderr


def test_run_propagates_exceptions_like_python(tmp_path):
    script = tmp_path / "boom.py"
    script.write_text("raise RuntimeError('boom')\n")
    result = cli("run", str(script), env=base_env(tmp_path / "d"))
    assert result.returncode == 1
    assert result.stderr.rstrip().endswith("RuntimeError: boom")


def startup_pth_installed() -> bool:
    purelib = Path(sysconfig.get_paths()["purelib"])
    return (purelib / "tbcollect_startup.pth").exists()


needs_pth = pytest.mark.skipif(
    not startup_pth_installed(),
    reason="tbcollect_startup.pth is not in site-packages (install the wheel or `make build`)",
)


@needs_pth
def test_tbcollect_env_installs_at_startup(tmp_path, program):
    env = base_env(tmp_path, TBCOLLECT="1")
    with run_target([sys.executable, str(program)], env) as target:
        assert target.expect("handler") == "<tbcollect dump handler>"
        pid = int(target.expect("pid"))
        text = check_dump(tmp_path, pid)
        assert text.splitlines()[1] == "reason: request from tbcollect dump"
        assert target.ask("hi", "echo") == "hi"


@needs_pth
def test_tbcollect_env_options(tmp_path, program):
    env = base_env(tmp_path, TBCOLLECT="yes", TBCOLLECT_SIGNAL="SIGUSR1", TBCOLLECT_FORMAT="json")
    with run_target([sys.executable, str(program)], env) as target:
        pid = int(target.expect("pid"))
        result = cli("dump", str(pid))
        assert result.returncode == 0, result.stderr
        assert validate_json(result.stdout)["reason"] == "request from tbcollect dump"
        by_signal = cli("dump", str(pid), "--signal", "USR1")
        assert validate_json(by_signal.stdout)["reason"] == "signal SIGUSR1"


@needs_pth
@pytest.mark.parametrize("value", ["", "0"])
def test_tbcollect_unset_or_zero_costs_no_import(tmp_path, value):
    code = (
        "import sys, signal; "
        "print('tbcollect' in sys.modules, "
        f"signal.getsignal(signal.SIGQUIT) == signal.{inherited_disposition(signal.SIGQUIT).name})"
    )
    env = base_env(tmp_path)
    if value:
        env["TBCOLLECT"] = value
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]
    assert not os.path.exists(tmp_path) or os.listdir(tmp_path) == []


@needs_pth
def test_tbcollect_env_with_unsafe_directory_warns_and_runs(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    untouched = (
        f"signal.getsignal(signal.SIGQUIT) == signal.{inherited_disposition(signal.SIGQUIT).name}"
    )
    code = f"import signal; print('ran', {untouched})"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=base_env(shared, TBCOLLECT="1"),
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.split() == ["ran", "True"]
    assert result.stderr == (
        "tbcollect: warning: TBCOLLECT is set but no dump handler is installed: "
        f"dump directory {shared}: is writable by group or others (mode 0777); refusing it\n"
    )

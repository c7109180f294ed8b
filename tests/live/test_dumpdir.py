"""The dump directory rules and the dump files (``tbcollect._dumpdir``)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import tbcollect
from tbcollect import _dumpdir

from tests.helpers import Target, base_env, cli, dumps_of, validate_json


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_default_directory_rule(monkeypatch, tmp_path):
    monkeypatch.delenv("TBCOLLECT_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    program = _dumpdir.program_name(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    assert _dumpdir.default_directory(program="svc") == tmp_path / f"tbcollect-{os.geteuid()}/svc"
    assert _dumpdir.default_directory(uid=1234, program="svc") == tmp_path / "tbcollect-1234/svc"
    # Under pytest the program is pytest (or whatever ran it), never empty.
    assert _dumpdir.default_directory().parent == tmp_path / f"tbcollect-{os.geteuid()}"
    assert _dumpdir.default_directory().name in (program, _dumpdir._own_program_name())

    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert _dumpdir.default_directory(program="svc") == runtime / "tbcollect" / "svc"
    # Someone else's runtime directory (su, sudo -E) is not used, nor one
    # others may write to.
    assert _dumpdir.default_directory(uid=os.geteuid() + 1, program="svc") == tmp_path / (
        f"tbcollect-{os.geteuid() + 1}/svc"
    )
    runtime.chmod(0o777)
    assert _dumpdir.default_directory(program="svc") == tmp_path / f"tbcollect-{os.geteuid()}/svc"

    monkeypatch.setenv("TBCOLLECT_DIR", str(tmp_path / "explicit"))
    assert _dumpdir.default_directory() == tmp_path / "explicit"
    env = {"TMPDIR": str(tmp_path)}
    assert _dumpdir.default_directory(uid=7, environ=env, program="a/../b") == (
        tmp_path / "tbcollect-7" / "a_.._b"
    )
    # A TMPDIR that does not exist is not trusted to become one later.
    env = {"TMPDIR": "/elsewhere"}
    assert str(_dumpdir.default_directory(uid=7, environ=env, program="x")) == "/tmp/tbcollect-7/x"


@pytest.mark.parametrize(
    "argv, cgroup, name",
    [
        (["/venv/bin/python3.12", "/venv/bin/gunicorn", "-c", "conf.py"], "0::/", "gunicorn"),
        (["python", "-m", "celery", "-A", "app", "worker"], "", "celery"),
        (["python", "-X", "dev", "-mpytest.main", "-q"], "", "pytest"),
        (["python3", "-u", "/srv/app.py"], "", "app"),
        (["python3", "/srv/pkg/__main__.py"], "", "pkg"),
        (["python", "-c", "print(1)"], "", "python"),
        ([], "", "python"),
        (["uwsgi", "--ini", "x.ini"], "", "uwsgi"),
        (["/opt/.hidden/../weird name;rm"], "", "weird_name_rm"),
        (["python", "app.py"], "0::/system.slice/shop@2.service\n", "shop@2.service"),
        # A login session's scope is not a service: the program names it.
        (["python", "app.py"], "0::/user.slice/user-0.slice/session-3.scope\n", "app"),
    ],
)
def test_program_name(argv, cgroup, name):
    assert _dumpdir.program_name(argv, cgroup) == name


def test_default_directory_of_root_is_not_shared_by_every_program(tmp_path):
    """Two programs of one user, default rule: each its own directory (and
    retention rule), both below one private per-user directory."""
    env = base_env(None, TMPDIR=str(tmp_path))
    env.pop("XDG_RUNTIME_DIR", None)
    code = "import tbcollect; print(tbcollect.install())"
    for name in ("web", "jobs"):
        (tmp_path / f"{name}.py").write_text(code)
    dirs = {}
    for name in ("web", "jobs"):
        result = subprocess.run(
            [sys.executable, str(tmp_path / f"{name}.py")],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        dirs[name] = Path(result.stdout.strip())
    base = tmp_path / f"tbcollect-{os.geteuid()}"
    assert dirs == {"web": base / "web", "jobs": base / "jobs"}
    for path in (base, *dirs.values()):
        assert mode(path) == 0o700 and os.lstat(path).st_uid == os.geteuid()


def test_cli_finds_dumps_in_the_default_directory(tmp_path):
    code = """
import os, sys
import tbcollect
print("dir", tbcollect.install(), flush=True)
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
"""
    env = base_env(None, TMPDIR=str(tmp_path))
    env.pop("XDG_RUNTIME_DIR", None)
    with Target(code, env=env) as target:
        directory = Path(target.expect("dir"))
        pid = int(target.expect("ready"))
        assert directory == tmp_path / f"tbcollect-{os.geteuid()}" / "python"
        result = cli("dump", str(pid), "--signal", "QUIT", env=env)
        assert result.returncode == 0, result.stderr
        (path,) = dumps_of(directory, pid)
        assert result.stderr == f"tbcollect: dump of process {pid} saved in {path}\n"


def test_resolve_creates_private_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("TBCOLLECT_DIR", str(tmp_path / "a" / "dumps"))
    path = _dumpdir.resolve_directory()
    assert path == tmp_path / "a" / "dumps"
    assert mode(path) == 0o700
    assert os.stat(path).st_uid == os.geteuid()
    # An explicit argument wins over the environment; relative paths become absolute.
    monkeypatch.chdir(tmp_path)
    assert _dumpdir.resolve_directory("rel") == tmp_path / "rel"


def test_new_dump_files_are_whole_private_and_never_replaced(tmp_path):
    directory = _dumpdir.resolve_directory(tmp_path / "d")
    text = tbcollect.dump_all(format="json")
    paths = [
        _dumpdir.write_new_dump(text, directory=directory, fmt="json", reason=f"test {i}")
        for i in range(5)
    ]
    assert len(set(paths)) == 5
    assert sorted(os.listdir(directory)) == sorted(p.name for p in paths), "no temporaries"
    assert _dumpdir.list_dumps(directory, pid=os.getpid()) == paths
    assert _dumpdir.list_dumps(directory, pid=os.getpid() + 1) == []
    for i, path in enumerate(paths):
        m = _dumpdir.DUMP_NAME.match(path.name)
        assert m and int(m["pid"]) == os.getpid() and m["ext"] == "json"
        assert mode(path) == 0o600
        data = validate_json(path.read_text())
        assert data["reason"] == f"test {i}"
        assert tbcollect.load(path).pid == os.getpid()

    text_path = _dumpdir.write_new_dump(
        tbcollect.dump_all(), directory=directory, fmt="text", reason="signal SIGQUIT"
    )
    assert text_path.suffix == ".txt"
    lines = text_path.read_text().splitlines()
    assert lines[0].startswith(f"tbcollect: pid {os.getpid()} at ")
    assert lines[1] == "reason: signal SIGQUIT"


def test_write_refuses_unknown_format(tmp_path):
    directory = _dumpdir.resolve_directory(tmp_path / "d")
    with pytest.raises(tbcollect.UnknownFormatError):
        _dumpdir.write_new_dump("x", directory=directory, fmt="yaml")
    assert os.listdir(directory) == []


def test_symlink_is_refused(tmp_path):
    real = _dumpdir.resolve_directory(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(tbcollect.DumpDirectoryError, match="is a symlink"):
        _dumpdir.resolve_directory(link)
    with pytest.raises(tbcollect.DumpDirectoryError, match="is a symlink"):
        _dumpdir.write_new_dump("x", directory=link, fmt="text")
    assert os.listdir(real) == []


@pytest.mark.parametrize("bits", [0o777, 0o770, 0o702])
def test_group_or_world_writable_is_refused(tmp_path, bits):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(bits)
    with pytest.raises(tbcollect.DumpDirectoryError, match="writable by group or others") as e:
        _dumpdir.resolve_directory(shared)
    assert isinstance(e.value, OSError)
    assert os.listdir(shared) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_foreign_owner_is_refused(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, 65534, 65534)
    with pytest.raises(tbcollect.DumpDirectoryError, match="owned by uid 65534"):
        _dumpdir.resolve_directory(foreign)
    with pytest.raises(tbcollect.DumpDirectoryError, match="owned by uid 65534"):
        _dumpdir.write_new_dump("x", directory=foreign, fmt="text")
    assert os.listdir(foreign) == []


def test_not_a_directory_and_uncreatable(tmp_path):
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(tbcollect.DumpDirectoryError, match="is not a directory"):
        _dumpdir.resolve_directory(file)
    with pytest.raises(tbcollect.DumpDirectoryError, match="cannot be created"):
        _dumpdir.resolve_directory(file / "below")


def test_reason_in_json_keeps_it_valid():
    text = json.dumps({"a": 1}, indent=2) + "\n"
    assert json.loads(_dumpdir.with_reason(text, "json", 'quote " here')) == {
        "a": 1,
        "reason": 'quote " here',
    }

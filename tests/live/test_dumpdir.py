"""The dump directory rules and the dump files (``tbcollect._dumpdir``)."""

from __future__ import annotations

import json
import os
import stat

import pytest
import tbcollect
from tbcollect import _dumpdir

from tests.helpers import validate_json


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_default_directory_rule(monkeypatch, tmp_path):
    monkeypatch.delenv("TBCOLLECT_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert _dumpdir.default_directory() == tmp_path / f"tbcollect-{os.geteuid()}"
    assert _dumpdir.default_directory(uid=1234) == tmp_path / "tbcollect-1234"

    runtime = tmp_path / "run"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert _dumpdir.default_directory() == runtime / "tbcollect"
    # Someone else's runtime directory (su, sudo -E) is not used.
    assert _dumpdir.default_directory(uid=os.geteuid() + 1) == tmp_path / (
        f"tbcollect-{os.geteuid() + 1}"
    )

    monkeypatch.setenv("TBCOLLECT_DIR", str(tmp_path / "explicit"))
    assert _dumpdir.default_directory() == tmp_path / "explicit"
    env = {"TMPDIR": "/elsewhere"}
    assert str(_dumpdir.default_directory(uid=7, environ=env)) == "/elsewhere/tbcollect-7"


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

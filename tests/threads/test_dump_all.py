"""dump_all() and the snapshot's renderers: every target, every format, and
bad input that fails clearly without writing anything."""

from __future__ import annotations

import io
import json
import os
import stat
import sys

import pytest
import tbcollect

from tests.helpers import check_snapshot, validate_json


def test_dump_all_returns_text_by_default():
    text = tbcollect.dump_all()
    assert text.startswith(f"tbcollect: pid {os.getpid()} at ")
    assert text.endswith("\n")
    assert "in test_dump_all_returns_text_by_default" in text


def test_dump_all_to_a_path_as_json(tmp_path):
    path = tmp_path / "dump.json"
    returned = tbcollect.dump_all(path, format="json")
    written = path.read_text()
    assert written == returned
    data = validate_json(written)
    assert data["pid"] == os.getpid()
    assert [p.name for p in tmp_path.iterdir()] == ["dump.json"]  # no temporary left


def test_dump_all_to_a_str_path_replaces_an_old_dump(tmp_path):
    path = tmp_path / "dump.txt"
    path.write_text("old dump")
    tbcollect.dump_all(str(path))
    assert path.read_text().startswith("tbcollect: pid ")


def test_dump_all_to_a_text_file_object():
    buf = io.StringIO()
    returned = tbcollect.dump_all(buf)
    assert buf.getvalue() == returned


def test_dump_all_to_a_file_descriptor(tmp_path):
    path = tmp_path / "fd.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        returned = tbcollect.dump_all(fd, format="json", indent=2)
        os.write(fd, b"after\n")  # the descriptor is still open: it stays the caller's
    finally:
        os.close(fd)
    written = path.read_text()
    assert written == returned + "after\n"
    validate_json(returned)
    assert returned.startswith('{\n  "schema": "tbcollect/1",')


def test_collect_options_pass_through_dump_all():
    text = tbcollect.dump_all(format="json", threads=False, tasks=False)
    # Greenlets or tasks another test left behind may still be listed.
    assert [s for s in validate_json(text)["stacks"] if s["kind"] == "thread"] == []
    grouped = tbcollect.dump_all(group=False, source=False, max_depth=1)
    assert "frames omitted" in grouped or grouped.count("  File ") >= 1


def test_unknown_format_fails_before_anything_is_written(tmp_path):
    path = tmp_path / "dump.yaml"
    with pytest.raises(
        tbcollect.UnknownFormatError, match=r"unknown format 'yaml' \(expected one of: text, json"
    ):
        tbcollect.dump_all(path, format="yaml")
    assert not path.exists()
    with pytest.raises(ValueError):  # also a ValueError, for callers that catch those
        tbcollect.collect().render("yaml")


def test_unwritable_directory_is_a_clear_error_and_leaves_nothing(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        # root writes through permission bits; /proc/self refuses new files to everyone
        target_dir = (
            locked if not os.access(locked, os.W_OK) else __import__("pathlib").Path("/proc/self")
        )
        before = sorted(os.listdir(target_dir))
        with pytest.raises(
            tbcollect.DumpWriteError, match=f"cannot write dump to {target_dir}/dump.txt: "
        ):
            tbcollect.dump_all(target_dir / "dump.txt")
        assert sorted(os.listdir(target_dir)) == before
    finally:
        locked.chmod(0o700)


def test_missing_directory_is_a_clear_error(tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "dump.txt"
    with pytest.raises(tbcollect.DumpWriteError) as info:
        tbcollect.dump_all(target)
    assert str(info.value).startswith(f"cannot write dump to {target}: ")
    assert isinstance(info.value, OSError) and isinstance(info.value, tbcollect.TbcollectError)
    assert not (tmp_path / "no").exists()


def test_bad_descriptor_and_bad_target_are_clear_errors():
    with pytest.raises(tbcollect.DumpWriteError, match="file descriptor 987654"):
        tbcollect.dump_all(987654)
    with pytest.raises(
        tbcollect.InvalidOptionError, match="neither a path, a file nor a descriptor"
    ):
        tbcollect.dump_all(3.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("depth", [0, -3])
def test_bad_max_depth_is_refused(depth):
    with pytest.raises(tbcollect.InvalidOptionError, match="max_depth: must be an integer from 1"):
        tbcollect.collect(max_depth=depth)


def test_json_round_trips_through_load(tmp_path):
    snap = tbcollect.collect()
    path = tmp_path / "dump.json"
    path.write_text(snap.to_json(indent=2))
    for source in (path, str(path), snap.to_json(), io.StringIO(snap.to_json())):
        again = tbcollect.load(source)
        assert again.to_dict() == snap.to_dict()
        assert again.to_text() == snap.to_text()


def test_load_refuses_what_is_not_a_dump(tmp_path):
    with pytest.raises(tbcollect.InvalidDumpError, match="not a tbcollect/1 dump"):
        tbcollect.load('{"schema": "other"}')
    other = json.loads(tbcollect.collect().to_json())
    other["schema"] = "tbcollect/9"
    with pytest.raises(tbcollect.InvalidDumpError, match="this version reads 'tbcollect/1'"):
        tbcollect.load(json.dumps(other))
    with pytest.raises(tbcollect.InvalidDumpError, match="cannot read dump"):
        tbcollect.load(tmp_path / "missing.json")


def test_snapshot_api_surface():
    snap = tbcollect.collect()
    check_snapshot(snap)
    assert snap.schema == tbcollect.SCHEMA == "tbcollect/1"
    assert snap.pid == os.getpid()
    assert snap.python == ".".join(map(str, sys.version_info[:3]))
    assert snap.created.endswith("Z") and "T" in snap.created
    assert repr(snap).startswith(f"<tbcollect.Snapshot pid={os.getpid()} ")
    assert snap.summary() == snap.to_text().splitlines()[0]
    stack = snap.stacks[0]
    assert stack.to_dict() == snap.to_dict()["stacks"][0]
    frame = stack.frames[-1]
    assert frame.to_dict() == snap.to_dict()["stacks"][0]["frames"][-1]
    assert repr(frame).startswith("<tbcollect.Frame ")
    assert repr(stack).startswith(f"<tbcollect.Stack {stack.id} ")
    # fields of other kinds read as None on a thread
    assert stack.parent is None and stack.loop is None and stack.awaiting is None
    assert stack.awaited_by is None and stack.hub is None and stack.spawn_frames is None
    assert frame.locals is None
    assert json.loads(snap.to_json()) == snap.to_dict()
    assert snap.to_json(indent=4).startswith('{\n    "schema"')

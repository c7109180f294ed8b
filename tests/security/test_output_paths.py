"""Issue 15, finding 2: ``dump_all(path)`` and ``render -o`` decide by what is
at the path: a regular file is replaced whole and keeps its mode, a FIFO or
device is written through and never replaced, a symlink is followed only to
what this user may write. Every path here is under tmp_path."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import List

import pytest
import tbcollect

pytestmark = pytest.mark.skipif(os.name != "posix", reason="modes, FIFOs and devices are POSIX")

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NOBODY = 65534


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("locals_", [False, True])
def test_an_existing_private_file_stays_private(tmp_path: Path, locals_: bool) -> None:
    path = tmp_path / "dump.txt"
    path.write_text("old\n")
    path.chmod(0o600)
    tbcollect.dump_all(path, locals=locals_)
    assert path.read_text().startswith("tbcollect: pid ")
    assert mode_of(path) == 0o600


def test_an_existing_file_keeps_a_wider_mode_too(tmp_path: Path) -> None:
    path = tmp_path / "dump.txt"
    path.write_text("old\n")
    path.chmod(0o640)
    tbcollect.dump_all(path)
    assert mode_of(path) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["dump.txt"]


def test_a_new_file_with_locals_is_0600_and_without_0644_less_umask(tmp_path: Path) -> None:
    secret = "hunter2-in-a-local"  # noqa: F841 - read by the dump
    with_locals = tmp_path / "locals.txt"
    tbcollect.dump_all(with_locals, locals=True)
    assert mode_of(with_locals) == 0o600
    plain = tmp_path / "plain.txt"
    tbcollect.dump_all(plain)
    assert mode_of(plain) == 0o644 & ~current_umask()


def test_a_fifo_is_written_through_and_stays_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo, 0o600)
    received: List[bytes] = []
    # The reader holds the FIFO open before the dump starts (O_RDWR does not
    # wait for a writer), so the writer finds a reader at once.
    fd = os.open(fifo, os.O_RDWR)

    def read() -> None:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            chunks.append(chunk)
            if b"".join(chunks).endswith(b"\n") and b"Thread" in b"".join(chunks):
                break
        received.append(b"".join(chunks))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    text = tbcollect.dump_all(fifo, group=False)
    reader.join(30)
    os.close(fd)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert received and received[0].decode() == text


def test_a_fifo_nobody_reads_is_an_error_and_never_blocks(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(tbcollect.DumpWriteError, match="no process is reading"):
        tbcollect.dump_all(fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_a_symlink_to_own_file_replaces_the_file_and_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("old\n")
    real.chmod(0o600)
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    text = tbcollect.dump_all(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == text
    assert mode_of(real) == 0o600


def test_a_dangling_symlink_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "planted-target")
    with pytest.raises(tbcollect.DumpWriteError, match="symlink to nothing"):
        tbcollect.dump_all(link)
    assert not (tmp_path / "planted-target").exists()
    assert link.is_symlink()


@pytest.mark.skipif(not IS_ROOT, reason="needs root to give a file to another user")
def test_a_symlink_to_another_users_file_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs.txt"
    theirs.write_text("their secret\n")
    theirs.chmod(0o600)
    os.chown(theirs, NOBODY, NOBODY)
    link = tmp_path / "link.txt"
    link.symlink_to(theirs)
    with pytest.raises(tbcollect.DumpWriteError, match="refusing to follow"):
        tbcollect.dump_all(link)
    assert theirs.read_text() == "their secret\n"
    assert os.stat(theirs).st_uid == NOBODY
    assert link.is_symlink()


@pytest.mark.skipif(not IS_ROOT, reason="needs root to make a device node")
@pytest.mark.parametrize("through_link", [False, True])
def test_a_device_node_is_written_through_never_replaced(
    tmp_path: Path, through_link: bool
) -> None:
    # Our own node of the null device, in tmp_path: the real /dev is never touched.
    device = tmp_path / "null"
    os.mknod(device, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    target = device
    if through_link:
        target = tmp_path / "link"
        target.symlink_to(device)
    tbcollect.dump_all(target)
    assert stat.S_ISCHR(os.lstat(device).st_mode)
    assert os.lstat(device).st_rdev == os.makedev(1, 3)
    assert target.is_symlink() == through_link


@pytest.mark.skipif(not IS_ROOT, reason="needs root to replace another user's file")
def test_root_replacing_a_users_file_gives_it_back_to_them(tmp_path: Path) -> None:
    path = tmp_path / "dump.txt"
    path.write_text("old\n")
    path.chmod(0o600)
    os.chown(path, NOBODY, NOBODY)
    tbcollect.dump_all(path)
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o600)


def test_cli_render_output_keeps_mode_and_locals_make_new_files_private(tmp_path: Path) -> None:
    dump = tmp_path / "in.json"
    token = "abc"  # noqa: F841 - a local the dump carries
    dump.write_text(tbcollect.collect(locals=True).to_json())
    existing = tmp_path / "existing.txt"
    existing.write_text("old\n")
    existing.chmod(0o640)
    new = tmp_path / "new.txt"
    for out in (existing, new):
        done = subprocess.run(
            [sys.executable, "-m", "tbcollect", "render", str(dump), "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert out.read_text().startswith("tbcollect: pid ")
    assert mode_of(existing) == 0o640
    assert mode_of(new) == 0o600

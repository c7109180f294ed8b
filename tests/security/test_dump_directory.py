"""The default dump directory against a hostile host: another user's
directory (or symlink) planted where root's would go, an inherited TMPDIR
others can rearrange. Nothing is written into what someone else controls."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from tbcollect import _dumpdir

from tests.helpers import base_env


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _install_default(tmp_path):
    """``install()`` with the default directory rule below ``tmp_path``."""
    env = base_env(None, TMPDIR=str(tmp_path))
    env.pop("XDG_RUNTIME_DIR", None)
    return subprocess.run(
        [sys.executable, "-c", "import tbcollect; print(tbcollect.install())"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="planting another user's directory needs root")
def test_default_base_taken_by_another_user_is_replaced_not_used(tmp_path):
    """Another user creates /tmp/tbcollect-0 first (a planted directory, or a
    symlink to a place of theirs): root's dumps go to a fresh private
    directory beside it, stderr says so, and nothing is written into theirs."""
    base = tmp_path / f"tbcollect-{os.geteuid()}"
    base.mkdir(mode=0o700)
    os.chown(base, 65534, 65534)
    result = _install_default(tmp_path)
    assert result.returncode == 0, result.stderr
    used = Path(result.stdout.strip())
    assert used.parent.parent == tmp_path and used.parent.name.startswith(base.name + "-")
    assert used.name == "python"
    assert mode(used.parent) == 0o700 and os.lstat(used.parent).st_uid == 0
    assert f"{base} is not a private directory of uid 0" in result.stderr
    assert f"dumps go to {used.parent} instead" in result.stderr
    assert os.listdir(base) == []

    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o777)
    os.chown(theirs, 65534, 65534)
    os.rmdir(base)
    base.symlink_to(theirs)
    result = _install_default(tmp_path)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).parent.name.startswith(base.name + "-")
    assert os.listdir(theirs) == []


def test_untrusted_tmpdir_is_not_used(tmp_path):
    """TMPDIR open to everyone without the sticky bit (others could rename
    the dump directory away): /tmp is used instead."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    env = {"TMPDIR": str(shared)}
    assert _dumpdir.default_directory(uid=7, environ=env, program="x").parent.parent == Path("/tmp")
    shared.chmod(0o1777)
    assert _dumpdir.default_directory(uid=7, environ=env, program="x").parent.parent == shared

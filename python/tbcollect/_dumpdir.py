"""Where live dumps go: a private per-user directory, one new file per dump.

A minimal stand-in with the interface the signal-handler work (issue 5)
provides: ``resolve_directory()`` and ``write_new_dump()``. The watchdog and
the probes call only these two functions.
"""

from __future__ import annotations

import itertools
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Optional, Union

from tbcollect._errors import DumpWriteError
from tbcollect._tbcollect import check_format

__all__ = ["resolve_directory", "write_new_dump"]

PathArg = Union[str, "os.PathLike[str]"]

_sequence = itertools.count(1)


def resolve_directory(directory: Optional[PathArg] = None) -> Path:
    """The dump directory: ``directory``, else ``$TBCOLLECT_DIR``, else
    ``$XDG_RUNTIME_DIR/tbcollect``, else ``<tmp>/tbcollect-<uid>``.

    Created with mode 0700 when missing; refused (``DumpWriteError``) when it
    is a symlink, belongs to someone else, or others can write to it.
    """
    if directory is not None:
        path = Path(os.fspath(directory))
    elif os.environ.get("TBCOLLECT_DIR"):
        path = Path(os.environ["TBCOLLECT_DIR"])
    elif os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(os.environ["XDG_RUNTIME_DIR"]) / "tbcollect"
    else:
        path = Path(tempfile.gettempdir()) / f"tbcollect-{os.geteuid()}"
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise DumpWriteError(f"cannot create dump directory {path}: {e.strerror or e}") from None
    try:
        st = os.lstat(path)
    except OSError as e:
        raise DumpWriteError(f"cannot use dump directory {path}: {e.strerror or e}") from None
    if stat.S_ISLNK(st.st_mode):
        raise DumpWriteError(f"refusing dump directory {path}: it is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise DumpWriteError(f"refusing dump directory {path}: not a directory")
    if st.st_uid != os.geteuid():
        raise DumpWriteError(f"refusing dump directory {path}: owned by uid {st.st_uid}")
    if st.st_mode & 0o022:
        raise DumpWriteError(
            f"refusing dump directory {path}: writable by others "
            f"(mode {stat.S_IMODE(st.st_mode):o})"
        )
    return path


def write_new_dump(
    text: str, *, directory: PathArg, fmt: str, reason: Optional[str] = None
) -> Path:
    """Writes ``text`` to a new ``tbcollect-<pid>-<UTC time>-<seq>.<ext>`` file
    (mode 0600) in ``directory``, whole or not at all; returns its path.

    ``reason`` says why the dump was made; this version does not use it.
    """
    del reason
    ext = check_format(fmt)
    directory = Path(os.fspath(directory))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    data = text.encode("utf-8")
    for _ in range(1000):
        final = directory / f"tbcollect-{os.getpid()}-{stamp}-{next(_sequence)}.{ext}"
        tmp = final.with_name("." + final.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue
        except OSError as e:
            raise DumpWriteError(f"cannot write dump to {final}: {e.strerror or e}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            # link() refuses an existing name, where rename() would replace it.
            os.link(tmp, final)
        except FileExistsError:
            os.unlink(tmp)
            continue
        except OSError as e:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise DumpWriteError(f"cannot write dump to {final}: {e.strerror or e}") from None
        os.unlink(tmp)
        return final
    raise DumpWriteError(f"cannot write dump to {directory}: no free file name")

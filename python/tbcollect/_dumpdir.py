"""The dump directory and the dump files in it.

Every live dump (on a signal, from a watchdog, the raw dump made without the
GIL) is a new file in one private directory:

- the directory is ``directory`` if given, else ``$TBCOLLECT_DIR``, else
  ``$XDG_RUNTIME_DIR/tbcollect`` (when that is a directory of this user), else
  ``$TMPDIR/tbcollect-<uid>`` (``/tmp`` when ``TMPDIR`` is unset);
- it is created mode 0700 and refused (``DumpDirectoryError``) when it is a
  symlink, is owned by another user or is writable by group or others;
- each dump is ``tbcollect-<pid>-<UTC time>-<seq>.<txt|json>``, mode 0600,
  written under a hidden temporary name and linked into place when complete,
  so a reader never sees half a dump and no dump replaces another.

The checks and the writing are done in Rust (``src/live/dumpdir.rs``), relative to
a descriptor of the directory opened without following symlinks.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import List, Mapping, Optional, Union

from tbcollect._errors import DumpDirectoryError
from tbcollect._tbcollect import check_dump_directory, check_format
from tbcollect._tbcollect import write_new_dump as _write_new_dump

__all__ = [
    "DUMP_NAME",
    "DumpDirectoryError",
    "default_directory",
    "is_raw_dump",
    "list_dumps",
    "reason_of",
    "resolve_directory",
    "write_new_dump",
]

PathLike = Union[str, "os.PathLike[str]"]

#: The name of a finished dump file (temporary files start with a dot).
DUMP_NAME = re.compile(
    r"^tbcollect-(?P<pid>[0-9]+)-(?P<time>[0-9]{8}T[0-9]{6}Z)-(?P<seq>[0-9]+)\.(?P<ext>txt|json)$"
)


def default_directory(
    uid: Optional[int] = None,
    environ: Optional[Mapping[str, str]] = None,
    root: str = "/",
) -> Path:
    """The dump directory of a process of user ``uid`` with environment
    ``environ`` (default: this process), without creating or checking it.

    ``root`` is where that process's filesystem is seen from (``/proc/PID/root``
    for a process in another mount namespace); the returned path is the one
    the process itself uses.
    """
    env = os.environ if environ is None else environ
    uid = os.geteuid() if uid is None else uid
    explicit = env.get("TBCOLLECT_DIR")
    if explicit:
        return Path(explicit)
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        try:
            st = os.stat(os.path.join(root, runtime.lstrip("/")))
        except OSError:
            st = None
        # A runtime directory inherited from another user (su, sudo -E) is
        # not this user's: fall back to the temporary directory.
        if st is not None and st.st_uid == uid and stat.S_ISDIR(st.st_mode):
            return Path(runtime) / "tbcollect"
    tmp = env.get("TMPDIR") or "/tmp"
    return Path(tmp) / f"tbcollect-{uid}"


def resolve_directory(directory: Optional[PathLike] = None) -> Path:
    """The dump directory to use (``directory``, else the default rule),
    made absolute, created mode 0700 if missing, and checked.

    Raises ``DumpDirectoryError`` when it cannot be created or is unsafe.
    """
    # Absolute now, so a later chdir does not move the dumps.
    path = Path(os.path.abspath(os.fspath(directory) if directory else default_directory()))
    check_dump_directory(str(path), create=True)
    return path


def with_reason(text: str, fmt: str, reason: str) -> str:
    """``reason`` as the second line of a text dump, or as the top-level
    ``"reason"`` member of a JSON dump."""
    if fmt == "json":
        end = text.rstrip().rfind("}")
        if end < 0:
            return text
        return f"{text[:end]}, {json.dumps('reason')}: {json.dumps(reason)}{text[end:]}"
    first, sep, rest = text.partition("\n")
    return f"{first}\nreason: {reason}\n{rest}" if sep else f"{text}\nreason: {reason}\n"


def write_new_dump(
    text: str,
    *,
    directory: PathLike,
    fmt: str,
    reason: Optional[str] = None,
) -> Path:
    """Writes one finished dump as a new file in ``directory`` (checked again
    at write time) and returns its path.

    ``fmt`` is ``"text"`` or ``"json"`` (the extension follows). ``reason``
    (why the dump was made: ``"signal SIGQUIT"``, a watchdog report) goes on
    the second line of a text dump and into a top-level ``"reason"`` member
    of a JSON dump.
    """
    extension = check_format(fmt)
    if reason:
        text = with_reason(text, fmt, reason)
    if not text.endswith("\n"):
        text += "\n"
    return Path(_write_new_dump(text, directory=os.fspath(directory), extension=extension))


def list_dumps(directory: PathLike, pid: Optional[int] = None) -> List[Path]:
    """The finished dump files in ``directory`` (of process ``pid`` if given),
    oldest first."""
    found = []
    for name in os.listdir(directory):
        m = DUMP_NAME.match(name)
        if m and (pid is None or int(m["pid"]) == pid):
            found.append((m["time"], int(m["seq"]), name))
    return [Path(directory) / name for _, _, name in sorted(found)]


def reason_of(text: str) -> Optional[str]:
    """The reason a dump was made, as ``write_new_dump`` recorded it."""
    if text.lstrip().startswith("{"):
        try:
            reason = json.loads(text).get("reason")
        except (ValueError, AttributeError):
            return None
        return reason if isinstance(reason, str) else None
    lines = text.split("\n", 2)
    if len(lines) > 1 and lines[1].startswith("reason: "):
        return lines[1][len("reason: ") :]
    return None


def is_raw_dump(path: PathLike) -> bool:
    """Whether a dump file is a raw dump (written without the GIL)."""
    if not os.fspath(path).endswith(".txt"):
        return False
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline().rstrip("\n").endswith(", raw dump")

"""Probes: small operator-written scripts whose results ride along in a dump.

A probes directory holds ``*.py`` files, each defining ``probe()`` that
returns JSON-able data (a queue depth, a config value, a cache size). Every
dump reads the files afresh, so editing a probe and dumping again shows the
new result without restarting the process.

A probe runs inside the process with its full powers, so the files must be
as trustworthy as the program itself: the directory and every file must
belong to this process's user and be writable by nobody else, and nothing
may be a symlink. Otherwise ``UnsafeProbesError`` is raised and no probe runs.
"""

from __future__ import annotations

import json
import os
import stat
import traceback
import types
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from tbcollect._errors import ProbesError, UnsafeProbesError

__all__ = ["PROBES_ENV", "MAX_RESULT_BYTES", "probes_directory", "check_probes", "run_probes"]

PROBES_ENV = "TBCOLLECT_PROBES"

# A probe result bigger than this is refused: a dump is read by a person.
MAX_RESULT_BYTES = 1 << 20

PathArg = Union[str, "os.PathLike[str]"]
ProbeResult = Dict[str, Any]

_BAD_BITS = stat.S_IWGRP | stat.S_IWOTH


def probes_directory(probes: Optional[PathArg] = None) -> Optional[Path]:
    """``probes`` if given, else ``$TBCOLLECT_PROBES`` if set, else None."""
    if probes is not None:
        return Path(os.fspath(probes))
    env = os.environ.get(PROBES_ENV)
    return Path(env) if env else None


def _refuse_unsafe(
    what: str, path: str, st: os.stat_result, *, trusted_owners: Tuple[int, ...]
) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeProbesError(f"refusing probes: {what} {path} is a symlink")
    if st.st_uid not in trusted_owners:
        raise UnsafeProbesError(
            f"refusing probes: {what} {path} belongs to uid {st.st_uid}, "
            f"not to this process's user (uid {os.geteuid()})"
        )
    # A sticky directory (like /tmp) lets others add entries but not replace ours.
    sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and what == "parent"
    if st.st_mode & _BAD_BITS and not sticky_dir:
        raise UnsafeProbesError(
            f"refusing probes: {what} {path} is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):03o})"
        )


def _check_parents(directory: Path) -> None:
    """Whoever can rename a parent can swap the whole directory: the parents
    must belong to us or to root and be writable by nobody else (or sticky)."""
    parent = Path(os.path.realpath(directory.parent))
    for ancestor in [parent, *parent.parents]:
        try:
            st = os.stat(ancestor)
        except OSError as e:
            raise ProbesError(f"cannot read probes directory {directory}: {e.strerror}") from None
        _refuse_unsafe("parent", str(ancestor), st, trusted_owners=(os.geteuid(), 0))


def check_probes(directory: PathArg) -> List[Tuple[str, str, bytes]]:
    """Checks the directory and every probe file, then reads them all.

    Returns ``(name, path, source)`` per probe, sorted by name. Raises
    ``UnsafeProbesError`` (and reads nothing further) at the first unsafe
    entry, ``ProbesError`` when the directory cannot be read.
    """
    directory = Path(os.path.abspath(os.fspath(directory)))
    me = (os.geteuid(),)
    try:
        st = os.lstat(directory)
    except OSError as e:
        raise ProbesError(f"cannot read probes directory {directory}: {e.strerror}") from None
    _refuse_unsafe("directory", str(directory), st, trusted_owners=me)
    if not stat.S_ISDIR(st.st_mode):
        raise ProbesError(f"cannot read probes directory {directory}: not a directory")
    _check_parents(directory)
    try:
        # O_NOFOLLOW and the descriptor-relative reads below pin the checked
        # directory, so it cannot be swapped between the check and the read.
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise ProbesError(f"cannot read probes directory {directory}: {e.strerror}") from None
    try:
        _refuse_unsafe("directory", str(directory), os.fstat(dir_fd), trusted_owners=me)
        found = []
        for entry in sorted(os.listdir(dir_fd)):
            if not entry.endswith(".py") or entry.startswith("."):
                continue
            path = str(directory / entry)
            lst = os.lstat(entry, dir_fd=dir_fd)
            if stat.S_ISDIR(lst.st_mode):
                continue
            _refuse_unsafe("file", path, lst, trusted_owners=me)
            if not stat.S_ISREG(lst.st_mode):
                raise UnsafeProbesError(f"refusing probes: file {path} is not a regular file")
            found.append((entry[:-3], path, _read(entry, path, dir_fd)))
        return found
    except ProbesError:
        raise  # already says what is wrong (and is an OSError too)
    except OSError as e:
        raise ProbesError(f"cannot read probes directory {directory}: {e.strerror}") from None
    finally:
        os.close(dir_fd)


def _read(entry: str, path: str, dir_fd: int) -> bytes:
    fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        _refuse_unsafe("file", path, st, trusted_owners=(os.geteuid(),))
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeProbesError(f"refusing probes: file {path} is not a regular file")
        chunks: List[bytes] = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def run_probes(directory: PathArg) -> List[ProbeResult]:
    """Runs every probe of ``directory``, loaded afresh from its source.

    Returns ``[{"name", "result", "error"}, ...]`` sorted by name: the
    JSON-able value ``probe()`` returned, or the error text when it raised,
    returned something that is not JSON, or is missing. A failing probe never
    raises here; an unsafe directory raises ``UnsafeProbesError`` before any
    probe runs.
    """
    return [_run_one(name, path, source) for name, path, source in check_probes(directory)]


def _run_one(name: str, path: str, source: bytes) -> ProbeResult:
    try:
        # A fresh module object each time, never entered in sys.modules and
        # never cached as bytecode: an edited probe is what the next dump runs.
        module = types.ModuleType(f"tbcollect_probe_{name}")
        module.__file__ = path
        # No loader made it: with ModuleType's __spec__/__loader__ of None,
        # linecache (3.15) warns while formatting a probe's traceback; without
        # them it reads the lines from __file__, as before.
        del module.__spec__, module.__loader__
        exec(compile(source, path, "exec", dont_inherit=True), module.__dict__)
        function = module.__dict__.get("probe")
        if not callable(function):
            return _failed(name, f"{path} defines no probe() function")
        result = function()
    except BaseException as e:
        # Every BaseException (SystemExit, KeyboardInterrupt, GeneratorExit
        # too): a probe fails only its own entry, never the dump, and nothing
        # it raises reaches the code that asked for the dump.
        return _failed(name, _describe(e))
    try:
        text = json.dumps(result, allow_nan=False)
    except BaseException as e:  # a dict subclass's items() is the probe's code too
        return _failed(name, f"probe() returned data that is not JSON: {_describe_only(e)}")
    if len(text) > MAX_RESULT_BYTES:
        return _failed(
            name, f"probe() returned {len(text)} bytes of JSON, over the {MAX_RESULT_BYTES} limit"
        )
    # The copy made from the JSON holds no reference to the probe's objects.
    return {"name": name, "result": json.loads(text), "error": None}


def _failed(name: str, error: str) -> ProbeResult:
    return {"name": name, "result": None, "error": error}


def _describe(e: BaseException) -> str:
    """The traceback from the probe's own frames down (ours are left out)."""
    try:
        tb = e.__traceback__.tb_next if e.__traceback__ is not None else None
        return "".join(traceback.format_exception(type(e), e, tb)).rstrip()
    except BaseException:  # str() of the probe's exception runs its code
        return _describe_only(e)


def _describe_only(e: BaseException) -> str:
    try:
        return "".join(traceback.format_exception_only(type(e), e)).strip()
    except BaseException:
        return type(e).__name__

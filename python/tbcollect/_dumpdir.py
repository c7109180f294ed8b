"""The dump directory and the dump files in it.

Every live dump (on a signal, from a watchdog, the raw dump made without the
GIL) is a new file in one private directory:

- the directory is ``directory`` if given, else ``$TBCOLLECT_DIR``, else the
  default: ``<base>/<program>``, where ``<base>`` is ``$XDG_RUNTIME_DIR/tbcollect``
  (when that is a private directory of this user), else ``$TMPDIR/tbcollect-<uid>``
  (``/tmp`` when ``TMPDIR`` is unset or not safe), and ``<program>`` names the
  systemd service (``gunicorn.service``) or else the program (``gunicorn``,
  ``celery``, ``app``), so root's services do not share one directory and one
  retention rule;
- it is created mode 0700 (``<base>`` too) and refused (``DumpDirectoryError``)
  when it is a symlink, is owned by another user or is writable by group or
  others; a default ``<base>`` that another user created first is not used:
  a fresh private directory beside it is, and stderr says so;
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
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

from tbcollect._errors import DumpDirectoryError
from tbcollect._tbcollect import check_dump_directory, check_format
from tbcollect._tbcollect import write_new_dump as _write_new_dump

__all__ = [
    "DUMP_NAME",
    "DumpDirectoryError",
    "default_directory",
    "is_raw_dump",
    "list_dumps",
    "program_name",
    "reason_of",
    "resolve_directory",
    "write_new_dump",
]

PathLike = Union[str, "os.PathLike[str]"]

#: The name of a finished dump file (temporary files start with a dot).
DUMP_NAME = re.compile(
    r"^tbcollect-(?P<pid>[0-9]+)-(?P<time>[0-9]{8}T[0-9]{6}Z)-(?P<seq>[0-9]+)\.(?P<ext>txt|json)$"
)


# What a directory name made from a program or service name may hold.
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._@+-]")
_PYTHON_NAME = re.compile(r"python[0-9.]*")
# A systemd unit that names a service (not a login session's scope).
_SERVICE_UNIT = re.compile(r"[A-Za-z0-9:_.@-]{1,128}\.service")


def _safe_name(name: str) -> str:
    name = _UNSAFE_NAME.sub("_", name).lstrip(".")[:64]
    return name or "python"


def program_name(argv: Sequence[str], cgroup: str = "") -> str:
    """The name of the subdirectory a process's dumps go to: its systemd
    service (the leaf of its cgroup, ``/proc/PID/cgroup``) when it runs as
    one, else its program: ``gunicorn`` for ``python /venv/bin/gunicorn ...``,
    ``celery`` for ``python -m celery ...``, ``app`` for ``python app.py``,
    ``python`` for ``python -c ...`` or when nothing is known.

    ``argv`` is the command line as started (``sys.orig_argv``: a process
    title set later does not change it)."""
    for line in cgroup.splitlines():
        if line.startswith("0::"):
            leaf = line[3:].rstrip("/").rpartition("/")[2]
            if _SERVICE_UNIT.fullmatch(leaf):
                return _safe_name(leaf)
    words = [w for w in argv if w]
    if words and _PYTHON_NAME.fullmatch(os.path.basename(words[0])):
        words = words[1:]
        while words and words[0].startswith("-"):
            option = words.pop(0)
            if option == "-m" and words:
                return _safe_name(words[0].partition(".")[0])
            if option.startswith("-m") and len(option) > 2:
                return _safe_name(option[2:].partition(".")[0])
            if option.startswith("-c") or option == "-":
                return "python"
            if option in ("-W", "-X") and words:
                words.pop(0)
    if not words:
        return "python"
    base = os.path.basename(words[0])
    if base == "__main__.py":
        base = os.path.basename(os.path.dirname(words[0]))
    if base.endswith(".py"):
        base = base[: -len(".py")]
    return _safe_name(base)


def _own_program_name() -> str:
    try:
        with open("/proc/self/cgroup", encoding="utf-8", errors="replace") as f:
            cgroup = f.read(4096)
    except OSError:
        cgroup = ""
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return program_name(argv, cgroup)


def _private_to(st: os.stat_result, uid: int) -> bool:
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o022


def _temporary_root(env: Mapping[str, str], uid: int, root: str) -> str:
    """``$TMPDIR`` when it is a directory nobody else can rearrange (ours or
    root's, and not writable by others unless sticky, as ``/tmp`` is), else
    ``/tmp``: an inherited ``TMPDIR`` (``sudo -E``) must not let another
    user move the dump directory under root's feet."""
    tmp = env.get("TMPDIR") or ""
    if not os.path.isabs(tmp):
        return "/tmp"
    try:
        st = os.stat(os.path.join(root, tmp.lstrip("/")))
    except OSError:
        return "/tmp"
    shared = st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (uid, 0) or shared:
        return "/tmp"
    return tmp


def _default_base(env: Mapping[str, str], uid: int, root: str) -> Path:
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        try:
            st = os.stat(os.path.join(root, runtime.lstrip("/")))
        except OSError:
            st = None
        # A runtime directory inherited from another user (su, sudo -E) is
        # not this user's: fall back to the temporary directory.
        if st is not None and _private_to(st, uid):
            return Path(runtime) / "tbcollect"
    return Path(_temporary_root(env, uid, root)) / f"tbcollect-{uid}"


def default_directory(
    uid: Optional[int] = None,
    environ: Optional[Mapping[str, str]] = None,
    root: str = "/",
    program: Optional[str] = None,
) -> Path:
    """The dump directory of a process of user ``uid`` with environment
    ``environ`` running ``program`` (see ``program_name``; default: this
    process), without creating or checking it.

    ``root`` is where that process's filesystem is seen from (``/proc/PID/root``
    for a process in another mount namespace); the returned path is the one
    the process itself uses.
    """
    env = os.environ if environ is None else environ
    uid = os.geteuid() if uid is None else uid
    explicit = env.get("TBCOLLECT_DIR")
    if explicit:
        return Path(explicit)
    program = _own_program_name() if program is None else _safe_name(program)
    return _default_base(env, uid, root) / program


# The private directory used instead of a default base that another user
# took first, per base: every dump of this process (and of its forked
# children) goes to the same one.
_replaced_bases: Dict[Path, Path] = {}


def _usable_base(base: Path) -> Path:
    """``base``, or the private directory used instead when someone else
    created it first (owned by another user, a symlink, not a directory, or
    open to others): refusing would let any local user turn tbcollect off
    for root by creating ``/tmp/tbcollect-0``."""
    if base in _replaced_bases:
        return _replaced_bases[base]
    try:
        st = os.lstat(base)
    except FileNotFoundError:
        return base
    except OSError:
        return base  # the check that follows says what is wrong
    if _private_to(st, os.geteuid()):  # lstat: a symlink is no directory
        return base
    # mkdtemp creates the directory exclusively, mode 0700, under a name
    # nobody could have guessed.
    replacement = Path(tempfile.mkdtemp(prefix=base.name + "-", dir=base.parent))
    _replaced_bases[base] = replacement
    print(
        f"tbcollect: {base} is not a private directory of uid {os.geteuid()} (someone else "
        f"created it); dumps go to {replacement} instead (set TBCOLLECT_DIR to choose)",
        file=sys.stderr,
    )
    return replacement


def resolve_directory(directory: Optional[PathLike] = None) -> Path:
    """The dump directory to use (``directory``, else the default rule),
    made absolute, created mode 0700 if missing, and checked.

    Raises ``DumpDirectoryError`` when it cannot be created or is unsafe.
    """
    if not directory and not os.environ.get("TBCOLLECT_DIR"):
        default = default_directory()
        # Each level is created 0700 and checked before the next is made
        # in it, so nobody else can put anything between the two.
        base = _usable_base(Path(os.path.abspath(default.parent)))
        check_dump_directory(str(base), create=True)
        path = base / default.name
        check_dump_directory(str(path), create=True)
        return path
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

"""Dumping a CPython 3.14+ process that has no tbcollect channel, through
``sys.remote_exec`` (PEP 768).

The script is run by the target's own interpreter (``/proc/PID/exe``, so its
version and ABI are the target's) as a helper that calls
``sys.remote_exec(pid, script)``; the target runs the script at its next safe
point. The script imports tbcollect (from the target's environment, else
from this installation when its extension fits the target's ABI), collects
one snapshot and writes it into a private directory (0700, the target's
user's, removed afterwards), where this side reads it as untrusted data.
For a process in another mount namespace (a container) the directory is
made inside its root and named as the process sees it.

The target imports tbcollect (it stays imported) and runs one capture; it
is not signalled and nothing is installed in it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional, Tuple

from tbcollect import _procinfo, _request

EXIT_NOT_PERMITTED = 4
EXIT_NO_HANDLER = 5
EXIT_TIMEOUT = 7
EXIT_REMOTE = 8

_VERSION = re.compile(r"(?:python|libpython)([0-9])\.([0-9]{1,2})t?(?:$|[^0-9])")

SCRIPT = """\
def _tbcollect_remote_dump():
    import importlib.machinery, os, sys
    out, fmt, fallback, extension = {out!r}, {fmt!r}, {fallback!r}, {extension!r}

    def finish(name, text):
        # The asker may have given up and removed the directory: then
        # there is nobody to tell, and the target must not see an error.
        try:
            part = os.path.join(out, "." + name + ".part")
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                data = text.encode("utf-8", "replace")
                while data:
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
            os.rename(part, os.path.join(out, name))
        except OSError:
            pass

    try:
        try:
            import tbcollect
        except ImportError as e:
            # The whole suffix (".cpython-314-x86_64-linux-gnu.so"), not just
            # ".so", which every version accepts.
            suffix = "." + extension.split(".", 1)[-1]
            fits = fallback is not None and suffix in importlib.machinery.EXTENSION_SUFFIXES
            if not fits:
                finish("import", "tbcollect is not importable in the target (%s), and the "
                       "command's own install (%s) does not fit its Python %d.%d (%s)"
                       % (e, extension, sys.version_info[0], sys.version_info[1],
                          sys.implementation.cache_tag))
                return
            sys.path.insert(0, fallback)
            try:
                import tbcollect
            except ImportError as e2:
                finish("import", "tbcollect is not importable in the target: %s" % e2)
                return
            finally:
                if fallback in sys.path:
                    sys.path.remove(fallback)
        text = tbcollect.collect().render(fmt)
    except BaseException as e:
        finish("error", "%s: %s" % (type(e).__name__, e))
        return
    finish("dump", text)


_tbcollect_remote_dump()
del _tbcollect_remote_dump
"""


class RemoteError(Exception):
    def __init__(self, message: str, code: int = EXIT_REMOTE) -> None:
        super().__init__(message)
        self.code = code


def target_version(pid: int) -> Optional[Tuple[int, int]]:
    """The CPython version process ``pid`` runs, from its executable's name or
    its libpython; None when it is not recognisably CPython (or not readable)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    m = _VERSION.search(os.path.basename(exe))
    if m is None:
        try:
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    if "libpython" in line:
                        m = _VERSION.search(os.path.basename(line.split()[-1]))
                        if m:
                            break
        except OSError:
            return None
    return (int(m[1]), int(m[2])) if m else None


def _ptrace_advice() -> str:
    try:
        scope = Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip()
    except OSError:
        scope = None
    if scope == "0":
        why = "ptrace is allowed between processes of one user here; run as its user or as root"
    elif scope == "1":
        why = (
            "kernel.yama.ptrace_scope is 1 (only a parent may attach): run as root or with "
            "CAP_SYS_PTRACE, or set ptrace_scope to 0"
        )
    elif scope in ("2", "3"):
        why = f"kernel.yama.ptrace_scope is {scope}: only root with CAP_SYS_PTRACE may attach" + (
            " (3: nobody)" if scope == "3" else ""
        )
    else:
        why = "it needs ptrace access (the same user, or CAP_SYS_PTRACE)"
    return (
        f"sys.remote_exec is not permitted: {why}. Or install tbcollect in the program "
        "(tbcollect.install() or TBCOLLECT=1), whose channel needs none of this"
    )


def _fallback() -> Tuple[Optional[str], str]:
    """(the directory this tbcollect is imported from, its extension's file name)."""
    import tbcollect
    from tbcollect import _tbcollect

    return str(Path(tbcollect.__file__).resolve().parent.parent), Path(_tbcollect.__file__).name


def remote_dump(target: _procinfo.Process, uid: int, fmt: str, timeout: float) -> str:
    """One dump of ``target`` in ``fmt`` through ``sys.remote_exec``."""
    pid = target.pid
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError as e:
        raise RemoteError(f"cannot find its interpreter: {e.strerror or e}") from None
    root = target.root()
    here = exe if root == "/" else os.path.join(root, exe.lstrip("/"))
    if not os.access(here, os.X_OK):
        raise RemoteError(f"cannot run its interpreter {here} from here")
    fallback, extension = _fallback()
    if root != "/":
        fallback = None  # not visible from inside its mount namespace
    tmp_here = "/tmp" if root == "/" else os.path.join(root, "tmp")
    try:
        private = tempfile.mkdtemp(prefix="tbcollect-remote-", dir=tmp_here)
    except OSError as e:
        raise RemoteError(f"cannot make a private directory in {tmp_here}: {e}") from None
    try:
        if os.geteuid() != uid:
            os.chown(private, uid, -1)  # root asking: the target writes there
        theirs = "/tmp/" + os.path.basename(private) if root != "/" else private
        script = os.path.join(private, "dump.py")
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(SCRIPT.format(out=theirs, fmt=fmt, fallback=fallback, extension=extension))
        helper = subprocess.run(
            [
                here,
                "-I",
                "-c",
                "import sys; sys.remote_exec(int(sys.argv[1]), sys.argv[2])",
                str(pid),
                os.path.join(theirs, "dump.py"),
            ],
            capture_output=True,
            text=True,
            timeout=max(timeout, 5.0),
            stdin=subprocess.DEVNULL,
        )
        if helper.returncode != 0:
            raise _helper_error(pid, helper.stderr)
        return _wait(target, private, uid, timeout)
    except subprocess.TimeoutExpired:
        raise RemoteError(
            f"sys.remote_exec did not return within {timeout:g} s", EXIT_TIMEOUT
        ) from None
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _helper_error(pid: int, stderr: str) -> RemoteError:
    last = (stderr.strip().splitlines() or ["(no message)"])[-1]
    last = _request.printable(last[:300])
    if "PermissionError" in last or "Operation not permitted" in last:
        return RemoteError(f"{_ptrace_advice()} ({last})", EXIT_NOT_PERMITTED)
    if "ProcessLookupError" in last or "No such process" in last:
        return RemoteError("it exited", 3)
    if "disabled" in last.lower() or "remote debugging" in last.lower():
        return RemoteError(
            f"it does not allow remote execution ({last}): it was started with "
            "-X disable_remote_debug or PYTHON_DISABLE_REMOTE_DEBUG; install tbcollect in it",
            EXIT_NOT_PERMITTED,
        )
    return RemoteError(f"sys.remote_exec failed: {last}")


def _wait(target: _procinfo.Process, private: str, uid: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        for name in ("dump", "import", "error"):
            path = os.path.join(private, name)
            if os.path.lexists(path):
                try:
                    data = _request.read_dump_file(path, uid, max(1.0, deadline - time.monotonic()))
                except OSError as e:
                    raise RemoteError(f"refusing to read what it wrote: {e}") from None
                text = data.decode("utf-8", "replace")
                if name == "dump":
                    return text
                if name == "import":
                    raise RemoteError(
                        _request.printable(text)
                        + ". Install tbcollect in its environment, or run this command from a "
                        "tbcollect installed for the same Python version",
                        EXIT_NO_HANDLER,
                    )
                raise RemoteError(f"the dump failed in the target: {_request.printable(text)}")
        if not target.alive():
            raise RemoteError("it exited before the dump was written", 3)
        if time.monotonic() >= deadline:
            raise RemoteError(
                f"it did not reach a safe point within {timeout:g} s: it is stuck in C code "
                "(or blocked in a call that never returns to Python). tbcollect.install() in "
                "the program answers even then (a raw dump read without the GIL); py-spy dump "
                "reads a stuck process from outside",
                EXIT_TIMEOUT,
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)

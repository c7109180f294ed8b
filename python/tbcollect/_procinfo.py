"""What ``tbcollect dump`` needs to know about another process, from
``/proc`` (Linux): does it exist, which user runs it, does it catch the
signal (``SigCgt``), its pid inside its own PID namespace, its environment
and its view of the filesystem (for a process in a container)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

from tbcollect import _dumpdir


class Status(NamedTuple):
    uid: int  # effective uid: the owner of the files it creates
    caught: int  # SigCgt: bit n-1 set when signal n has a handler
    own_pid: int  # the pid the process sees for itself (NSpid, innermost)
    parent: int  # PPid

    def catches(self, signum: int) -> bool:
        return bool(self.caught >> (int(signum) - 1) & 1)


class Beacon(NamedTuple):
    """What an installed tbcollect handler advertises (see ``_live._open_beacon``)."""

    signal: str
    directory: str  # as the process names it
    inode: int  # of its memfd: the same in a child that inherited it by fork


class Process:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.proc = Path("/proc") / str(pid)
        self._status: Optional[Status] = None

    @property
    def own_pid(self) -> int:
        return self._status.own_pid if self._status else self.pid

    def status(self) -> Optional[Status]:
        """The process's status, or None when there is no such process."""
        if self.pid <= 0:
            return None
        try:
            text = (self.proc / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return None
        fields: Dict[str, str] = {}
        for line in text.splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if fields.get("State", "").startswith(("Z", "X")):
            return None  # a zombie: it has exited, only its parent has not waited
        nspid = fields.get("NSpid", "").split()
        self._status = Status(
            uid=int(fields["Uid"].split()[1]),
            caught=int(fields["SigCgt"], 16),
            own_pid=int(nspid[-1]) if nspid else self.pid,
            parent=int(fields.get("PPid", "0") or 0),
        )
        return self._status

    def alive(self) -> bool:
        try:
            text = (self.proc / "status").read_text()
        except OSError:
            return False
        state = next((ln for ln in text.splitlines() if ln.startswith("State:")), "")
        return not state.split(":", 1)[-1].strip().startswith(("Z", "X"))

    def environ(self) -> Optional[Dict[str, str]]:
        """Its environment at start-up, or None when not readable (another
        user's process, unless we are root)."""
        try:
            raw = (self.proc / "environ").read_bytes()
        except OSError:
            return None
        env = {}
        for item in raw.split(b"\0"):
            key, sep, value = item.partition(b"=")
            if sep:
                env[os.fsdecode(key)] = os.fsdecode(value)
        return env

    def program(self) -> str:
        """The name its default dump directory ends in
        (``_dumpdir.program_name``), from its command line and cgroup.
        A process title set after start-up (setproctitle) can hide the
        program: the directory a handler advertises is the one to trust."""
        try:
            argv = [os.fsdecode(a) for a in (self.proc / "cmdline").read_bytes().split(b"\0")]
            cgroup = (self.proc / "cgroup").read_text(errors="replace")
        except OSError:
            argv, cgroup = [], ""
        return _dumpdir.program_name(argv, cgroup)

    def beacons(self) -> Optional[List[Beacon]]:
        """The tbcollect handlers installed in the process (normally none or
        one), or None when its descriptors cannot be read (another user's
        process, unless we are root)."""
        from tbcollect._tbcollect import BEACON_PREFIX

        prefix, suffix = "/memfd:" + BEACON_PREFIX, " (deleted)"
        try:
            fds = os.listdir(self.proc / "fd")
        except OSError:
            return None
        found = []
        for fd in fds:
            try:
                link = os.readlink(self.proc / "fd" / fd)
            except OSError:
                continue
            if link.startswith(prefix):
                name = link[len(prefix) :]
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
                sig, _, directory = name.partition(":")
                if not directory:
                    continue
                try:
                    inode = os.stat(self.proc / "fd" / fd).st_ino
                except OSError:
                    continue
                found.append(Beacon(sig, directory, inode))
        return found

    def root(self) -> str:
        """Where its filesystem is seen from here: ``/`` unless it lives in
        another mount namespace (a container), then ``/proc/PID/root``."""
        root = str(self.proc / "root")
        try:
            theirs, ours = os.stat(root), os.stat("/")
        except OSError:
            return "/"
        same = (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)
        return "/" if same else root

    def dump_directory(
        self, explicit: Optional[str] = None, advertised: Optional[str] = None
    ) -> tuple[Path, Path]:
        """(the dump directory as the process names it, the same directory as
        seen from here). ``explicit`` is taken as seen from here;
        ``advertised`` (a beacon's) and the default rule as the process sees
        its filesystem."""
        if explicit:
            path = Path(os.path.abspath(explicit))
            return path, path
        root = self.root()
        if advertised:
            theirs = Path(advertised)
        else:
            status = self._status or self.status()
            uid = status.uid if status else os.geteuid()
            env = self.environ() or {}
            theirs = _dumpdir.default_directory(
                uid=uid, environ=env, root=root, program=self.program()
            )
        if root == "/":
            return theirs, theirs
        return theirs, Path(root) / str(theirs).lstrip("/")


def descendants(pid: int) -> List[int]:
    """Every process below ``pid`` (children, their children, ...), parents
    before their children, from ``/proc/*/stat``."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = (Path("/proc") / entry / "stat").read_text()
        except OSError:
            continue
        # `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: List[int] = []
    todo = sorted(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        if child in found or child == pid:
            continue
        found.append(child)
        todo.extend(sorted(children.get(child, [])))
    return found

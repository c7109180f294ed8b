"""The asking side of ``tbcollect dump``: find a process's request channel,
ask it for a dump, and read what comes back as untrusted data.

A process with ``tbcollect.install()`` (or ``TBCOLLECT=1``) serves an
abstract Unix socket ``tbcollect/<pid>/<random>`` from its watcher thread and
advertises the name with a memfd ``tbcollect-channel:<name>`` that shows in
``/proc/PID/fd`` (see ``src/live/channel.rs``). Nothing is signalled: the
channel belongs to tbcollect alone, whatever the process does with its
signals.

Everything the target sends is untrusted: the answer's header is parsed
strictly, its length is capped, the socket is checked to belong to the
process asked (``SO_PEERCRED``), and text meant for a terminal goes through
``printable()``.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import struct
import time
from typing import NamedTuple, Optional

from tbcollect._tbcollect import CHANNEL_BEACON_PREFIX

#: The largest answer or dump file read from a target (a dump of 10,000 tasks
#: with locals is a few MB).
MAX_DUMP_BYTES = 64 << 20
PROTOCOL = "tbcollect/1"
_NAME = re.compile(r"tbcollect/([0-9]+)/([0-9a-f]{16})")
_HEADER = re.compile(r"ok (text|json|collapsed|svg) (full|raw) ([0-9]{1,12})")
_ERROR = re.compile(r"err ([a-z]{1,20}) (.{0,1000})")


class RequestError(Exception):
    """Why a request failed: ``kind`` is one of ``denied``, ``gone``,
    ``timeout``, ``failed``, ``usage``, ``protocol``."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class Answer(NamedTuple):
    format: str
    raw: bool  # made without the GIL (faulthandler's stacks, always text)
    data: bytes


def find_channel(pid: int, own_pid: int) -> Optional[str]:
    """The name of the channel process ``pid`` advertises (``own_pid`` is the
    pid it sees for itself), or None when it has none. Raises
    PermissionError when its descriptors cannot be read (another user's
    process, unless we are root)."""
    fd_dir = f"/proc/{pid}/fd"
    prefix = "/memfd:" + CHANNEL_BEACON_PREFIX
    found = None
    refused = False
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(f"{fd_dir}/{fd}")
        except PermissionError:
            # Listing is allowed where reading the links is not (the
            # process has capabilities we lack): we cannot tell.
            refused = True
            continue
        except OSError:
            continue
        if not link.startswith(prefix):
            continue
        name = link[len(prefix) :]
        if name.endswith(" (deleted)"):
            name = name[: -len(" (deleted)")]
        m = _NAME.fullmatch(name)
        # A forked child holds its parent's advertisement until it has its
        # own: only a channel named for this very process counts.
        if m and int(m[1]) == own_pid:
            found = name
    if found is None and refused:
        raise PermissionError(f"cannot read the descriptors in {fd_dir}")
    return found


def _peer_pid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _uid, _gid = struct.unpack("3i", creds)
    return int(pid)


def _recv_until(sock: socket.socket, deadline: float, want: int) -> bytes:
    chunks = []
    got = 0
    while got < want:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RequestError("the answer did not arrive in time", "timeout")
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(want - got, 1 << 20))
        except socket.timeout:
            raise RequestError("the answer did not arrive in time", "timeout") from None
        if not chunk:
            raise RequestError("the process closed the connection mid-answer", "protocol")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_line(sock: socket.socket, deadline: float, limit: int = 1100) -> tuple[str, bytes]:
    """The first line of the answer, and whatever came after it."""
    buf = b""
    while b"\n" not in buf:
        if len(buf) > limit:
            raise RequestError("the process sent no valid answer", "protocol")
        left = deadline - time.monotonic()
        if left <= 0:
            raise RequestError("no answer in time", "timeout")
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            raise RequestError("no answer in time", "timeout") from None
        if not chunk:
            raise RequestError("the process closed the connection without answering", "protocol")
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    return line.decode("utf-8", "replace"), rest


def request_dump(pid: int, name: str, fmt: Optional[str], timeout: float) -> Answer:
    """Asks process ``pid`` over its channel ``name`` for a dump in ``fmt``
    (None: the format it writes its dump files in)."""
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(max(0.1, min(timeout, 5.0)))
        try:
            sock.connect("\0" + name)
        except (ConnectionRefusedError, FileNotFoundError):
            raise RequestError(
                f"process {pid} advertises a channel that does not answer here "
                "(is it in another network namespace, e.g. a container? run tbcollect dump "
                "inside it)",
                "gone",
            ) from None
        # The advertisement is the target's to write: make sure the socket
        # is served by the process we mean to ask, not one it points us at.
        peer = _peer_pid(sock)
        if peer != pid:
            raise RequestError(
                f"the channel process {pid} advertises is served by process {peer}; nothing asked",
                "denied",
            )
        options = f" format={fmt}" if fmt else ""
        sock.sendall(f"{PROTOCOL} dump{options} timeout={timeout:.3f}\n".encode())
        line, rest = _read_line(sock, deadline + 2.0)
        err = _ERROR.fullmatch(line)
        if err:
            raise RequestError(printable(err[2]), err[1])
        head = _HEADER.fullmatch(line)
        if not head:
            raise RequestError(
                f"process {pid} sent an answer that is not {PROTOCOL}: {printable(line[:80])!r}",
                "protocol",
            )
        length = int(head[3])
        if length > MAX_DUMP_BYTES:
            raise RequestError(
                f"process {pid} announced a dump of {length} bytes, over the "
                f"{MAX_DUMP_BYTES >> 20} MiB limit",
                "protocol",
            )
        data = rest[:length]
        if len(data) < length:
            data += _recv_until(sock, deadline + 10.0, length - len(data))
        return Answer(head[1], head[2] == "raw", data)
    finally:
        sock.close()


# ---------------------------------------------------------------------------
# Untrusted text


_C0_C1 = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str, fmt: str = "text") -> str:
    """``text`` from a target, safe for a terminal: C0 and C1 control
    characters (ESC, BEL, CR, ...) other than newline and tab are escaped,
    in the way the format allows (``\\x1b`` in text, ``\\u001b`` in JSON
    strings, a replacement character in SVG, where XML forbids them)."""
    if fmt == "json":
        return _C0_C1.sub(lambda m: f"\\u{ord(m[0]):04x}", text)
    if fmt == "svg":
        return _C0_C1.sub("\ufffd", text)
    return _C0_C1.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def read_dump_file(path: str, owner: Optional[int], timeout: float) -> bytes:
    """A dump file another process wrote, read without trusting it: not
    followed if it is a symlink, never blocked on (a FIFO, a device), a
    regular file owned by ``owner`` (when given), at most ``MAX_DUMP_BYTES``
    and read within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        if owner is not None and st.st_uid != owner:
            raise OSError(f"{path} belongs to uid {st.st_uid}, not to the process's uid {owner}")
        if st.st_size > MAX_DUMP_BYTES:
            raise OSError(
                f"{path} is {st.st_size} bytes, over the {MAX_DUMP_BYTES >> 20} MiB limit"
            )
        chunks = []
        total = 0
        while True:
            if time.monotonic() > deadline:
                raise OSError(f"{path} was not read within {timeout:g} s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_DUMP_BYTES:
                raise OSError(f"{path} grew over the {MAX_DUMP_BYTES >> 20} MiB limit")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)

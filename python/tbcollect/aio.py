"""Dumps from inside a running event loop.

>>> text = await tbcollect.aio.dump("/tmp/now.txt")        # one dump, now
>>> asyncio.create_task(tbcollect.aio.periodic_dump(60, "/tmp/app-{n}.txt"))

The capture itself runs in the loop's thread (it takes milliseconds and needs
the loop to be where it is): the calling task appears as ``running`` with its
frames ending at the ``await``. Writing to a path happens in a short-lived
thread of its own, so a slow disk or a saturated default executor never
stalls the loop or the dump.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import sys
import threading
import time
from typing import Any, NoReturn, Optional

from tbcollect import DumpTarget, _write, dump_all
from tbcollect._errors import InvalidOptionError, UnknownFormatError
from tbcollect._live import run_own_thread, signals_blocked
from tbcollect._tbcollect import check_format, collect

__all__ = ["dump", "periodic_dump"]

logger = logging.getLogger("tbcollect")

# Options dump_all accepts besides collect()'s.
_RENDER_ONLY = {"group", "indent"}


def _check_target(file: DumpTarget) -> None:
    """Rejects what ``dump_all`` could not write to, before anything is captured."""
    if file is None or isinstance(file, (str, os.PathLike)):
        return
    if isinstance(file, bool) or not (isinstance(file, int) or hasattr(file, "write")):
        raise InvalidOptionError(
            f"invalid option file: {file!r} is neither a path, a file nor a descriptor"
        )


def _check_options(options: dict[str, Any]) -> None:
    known = set(inspect.signature(collect).parameters) | _RENDER_ONLY
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidOptionError(f"invalid option {unknown[0]}: not an option of dump_all")


async def _write_off_loop(text: str, path: str | os.PathLike[str]) -> None:
    """Writes ``text`` to ``path`` in a thread of its own and waits for it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: Optional[BaseException]) -> None:
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def work() -> None:
        error: Optional[BaseException] = None
        try:
            _write(text, path)
        except BaseException as e:  # handed to the awaiting task, raised there
            error = e
        try:
            loop.call_soon_threadsafe(settle, error)
        except RuntimeError:  # the loop closed while we were writing
            pass

    writer = threading.Thread(
        target=run_own_thread,
        args=(work, "tbcollect-write", threading.get_ident),
        name="tbcollect-write",
        daemon=True,
    )
    with signals_blocked():
        writer.start()
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        # Let the write in progress finish (milliseconds) so a cancelled
        # dumper leaves the file whole and no temporary behind, then obey.
        await asyncio.wait([done])
        raise


async def dump(file: DumpTarget = None, *, format: str = "text", **options: Any) -> str:
    """Collect every thread, greenlet and task from inside a task, and render them.

    Takes what ``tbcollect.dump_all`` takes and returns the rendered dump. The
    calling task is listed as ``running``, its frames ending at this call. A
    path is written atomically in a separate thread while the loop keeps
    running; file objects and descriptors are written directly.
    """
    check_format(format)
    _check_target(file)
    _check_options(options)
    text = dump_all(None, format=format, **options)
    if isinstance(file, (str, os.PathLike)):
        await _write_off_loop(text, file)
    else:
        _write(text, file)
    return text


def _target(file: DumpTarget, n: int) -> DumpTarget:
    """The n-th periodic dump's file: path templates get ``{n}`` and ``{time}``."""
    if isinstance(file, (str, os.PathLike)):
        path = os.fspath(file)
        if "{" in path:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            return path.format(n=n, time=stamp)
        return path
    return sys.stderr if file is None else file


async def periodic_dump(
    interval: float,
    file: DumpTarget = None,
    *,
    format: str = "text",
    **options: Any,
) -> NoReturn:
    """Dump every ``interval`` seconds until cancelled; start it with ``asyncio.create_task``.

    ``file`` decides where each dump goes:

    * a path: each dump atomically replaces the file, which therefore always
      holds the latest complete dump;
    * a path with ``{n}`` (1, 2, 3, ...) and/or ``{time}`` (UTC,
      ``20261122T003831Z``): a new file per dump (double other braces);
    * a file object or descriptor: dumps are appended one after the other;
    * ``None``: dumps go to ``sys.stderr``.

    Arguments are checked when the task starts (``InvalidOptionError``,
    ``UnknownFormatError``). After that it never raises for a failed dump: a
    write error (full disk, closed file) is logged as a warning on the
    ``tbcollect`` logger and the next dump is tried on schedule.
    """
    if isinstance(interval, bool) or not isinstance(interval, (int, float)):
        raise InvalidOptionError(f"invalid option interval: {interval!r} is not a number")
    if not (interval > 0 and math.isfinite(interval)):
        raise InvalidOptionError(
            f"invalid option interval: must be a positive number of seconds, got {interval!r}"
        )
    check_format(format)
    _check_target(file)
    _check_options(options)
    try:
        _target(file, 1)
    except (KeyError, IndexError, ValueError) as e:
        path = os.fspath(file)  # type: ignore[arg-type]
        raise InvalidOptionError(
            f"invalid option file: {path!r} may only use the placeholders {{n}} and {{time}} ({e})"
        ) from None
    n = 0
    while True:
        await asyncio.sleep(interval)
        n += 1
        target = _target(file, n)
        try:
            await dump(target, format=format, **options)
        except (InvalidOptionError, UnknownFormatError):
            raise  # a wrong argument (max_depth=0) is the caller's to fix, not to log
        except (OSError, ValueError) as e:
            # DumpWriteError is an OSError; a closed file object raises ValueError.
            logger.warning("tbcollect: periodic dump %d to %r failed: %s", n, target, e)

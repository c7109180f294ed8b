"""Dumps from inside gevent programs.

>>> import tbcollect.gevent
>>> dumper = tbcollect.gevent.periodic_dump(60, file="/var/tmp/app.dump.txt")
>>> ...
>>> dumper.kill()

A one-off dump from a greenlet needs nothing special, with or without
monkey patching: ``gevent.spawn(tbcollect.dump_all, "/tmp/dump.txt")``.
Capture never yields to the hub and never blocks on a gevent primitive, so the
dump shows every other greenlet exactly where it was, and the dumping greenlet
itself as the one running.

Importing this module imports gevent.
"""

from __future__ import annotations

import inspect
import math
import sys
from typing import IO, Any, Set

import gevent

from tbcollect import (
    DumpTarget,
    InvalidOptionError,
    TbcollectError,
    collect,
    dump_all,
)
from tbcollect._tbcollect import check_format

__all__ = ["DUMPER_NAME", "periodic_dump"]

#: The name of the greenlet ``periodic_dump`` spawns, as dumps show it.
DUMPER_NAME = "tbcollect.periodic_dump"

# Options ``dump_all`` passes to the renderer rather than to ``collect``.
_RENDER_OPTIONS = {"group", "indent"}


def _option_names() -> Set[str]:
    return set(inspect.signature(collect).parameters) | _RENDER_OPTIONS


def periodic_dump(
    interval: float,
    file: DumpTarget = None,
    *,
    format: str = "text",
    **options: Any,
) -> gevent.Greenlet:
    """Spawn a greenlet that writes a dump every ``interval`` seconds.

    Each dump is ``tbcollect.dump_all(file, format=format, **options)``: a
    path is rewritten atomically each time (the file always holds the latest
    whole dump), a file object or descriptor gets one dump after another, and
    ``None`` means ``sys.stderr``. The first dump is written after
    ``interval`` seconds.

    Returns the greenlet; ``kill()`` it to stop. Bad arguments raise
    ``InvalidOptionError`` (or ``UnknownFormatError``) here, before anything
    is spawned; a dump that fails to be written later (``TbcollectError``,
    ``OSError``) is reported on stderr and the next one is still attempted.
    """
    if isinstance(interval, bool) or not isinstance(interval, (int, float)):
        raise InvalidOptionError(
            f"invalid option interval: expected seconds as a number, got {interval!r}"
        )
    if not (interval > 0 and math.isfinite(interval)):
        raise InvalidOptionError(
            f"invalid option interval: must be a positive number of seconds, got {interval!r}"
        )
    check_format(format)
    unknown = sorted(set(options) - _option_names())
    if unknown:
        raise InvalidOptionError(
            f"invalid option {unknown[0]}: "
            "periodic_dump takes the options of collect() and dump_all()"
        )
    if isinstance(file, bool) or not (
        file is None
        or isinstance(file, (str, int))
        or hasattr(file, "__fspath__")
        or hasattr(file, "write")
    ):
        raise InvalidOptionError(
            f"invalid option file: {type(file).__name__} is neither a path, a file nor a descriptor"
        )

    def dump_forever() -> None:
        while True:
            gevent.sleep(interval)
            target: DumpTarget = sys.stderr if file is None else file
            try:
                dump_all(target, format=format, **options)
            except (TbcollectError, OSError) as e:
                _warn(f"tbcollect: periodic dump failed: {e}")

    dumper = gevent.Greenlet(dump_forever)
    dumper.name = DUMPER_NAME
    dumper.start()
    return dumper


def _warn(message: str, stream: IO[str] = sys.stderr) -> None:
    try:
        print(message, file=stream, flush=True)
    except (OSError, ValueError):  # stderr closed: nowhere left to say it
        pass

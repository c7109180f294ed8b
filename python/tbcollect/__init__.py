"""tbcollect: what is every thread, greenlet and asyncio task doing right now?

>>> import tbcollect
>>> snap = tbcollect.collect()
>>> print(snap.to_text())        # Python-traceback form, identical stacks grouped
>>> snap.to_json(indent=2)       # schema "tbcollect/1"
>>> tbcollect.dump_all("/tmp/dump.txt")
>>> await tbcollect.aio.dump("/tmp/dump.txt")   # from inside an asyncio task
"""

from __future__ import annotations

import os
import sys

from tbcollect import _tbcollect
from tbcollect._errors import (
    DumpDirectoryError,
    DumpWriteError,
    InstallError,
    InvalidDumpError,
    InvalidOptionError,
    MissingDependencyError,
    ProbesError,
    TbcollectError,
    UnknownFormatError,
    UnsafeProbesError,
)
from tbcollect._tbcollect import (
    FORMATS,
    SCHEMA,
    Diff,
    Frame,
    Snapshot,
    Stack,
    check_format,
    collect,
    diff,
    keep_history,
    label,
    unlabel,
    write_dump,
)

# `import tbcollect` loads only the native module and the exceptions (a few
# ms); `typing`, `logging`, the signal handler, the watchdog and every
# integration load on first use, through __getattr__ below (PEP 562).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import IO, Any, List, Union

    from tbcollect import aio
    from tbcollect import gevent as gevent
    from tbcollect import sentry as sentry
    from tbcollect._live import install, installed, uninstall
    from tbcollect._probes import run_probes
    from tbcollect.watchdog import Heartbeat, Watch, Watchdog, heartbeat, watchdog

    DumpTarget = Union[str, "os.PathLike[str]", IO[str], int, None]
    REDACT: List[str]
else:
    ModuleType = type(sys)

__all__ = [
    "FORMATS",
    "REDACT",
    "SCHEMA",
    "Diff",
    "DumpDirectoryError",
    "DumpWriteError",
    "Frame",
    "Heartbeat",
    "InstallError",
    "InvalidDumpError",
    "InvalidOptionError",
    "MissingDependencyError",
    "ProbesError",
    "Snapshot",
    "Stack",
    "TbcollectError",
    "UnknownFormatError",
    "UnsafeProbesError",
    "Watch",
    "Watchdog",
    "__version__",
    "aio",
    "collect",
    "diff",
    "dump_all",
    "heartbeat",
    "install",
    "installed",
    "keep_history",
    "label",
    "load",
    "run_probes",
    "uninstall",
    "unlabel",
    "watchdog",
]

# Names loaded on first use, and the module each comes from.
_LAZY_NAMES = {
    "install": "tbcollect._live",
    "installed": "tbcollect._live",
    "uninstall": "tbcollect._live",
    "run_probes": "tbcollect._probes",
    "Heartbeat": "tbcollect.watchdog",
    "Watch": "tbcollect.watchdog",
    "Watchdog": "tbcollect.watchdog",
    "heartbeat": "tbcollect.watchdog",
}
# Public submodules, reachable as attributes (`tbcollect.sentry.capture()`)
# without an import of their own. `tbcollect.watchdog` is the submodule, and
# calling it makes a watchdog (`tbcollect.watchdog(reminder=60)`).
_SUBMODULES = ("aio", "celery", "gevent", "gunicorn", "sentry", "watchdog", "web")


class _Package(ModuleType):
    """The package's module type: ``tbcollect.REDACT`` is the native module's
    list, so the capture reads it without importing this package."""

    @property
    def REDACT(self) -> List[str]:
        """With ``collect(locals=...)``: a variable or ``str`` dict key whose name
        contains one of these (case-insensitive) is shown as ``[redacted]``. Extend
        it for the whole program (``tbcollect.REDACT.append("ssn")``) or per call
        (``collect(locals=True, redact=["ssn"])``)."""
        names: List[str] = _tbcollect.REDACT
        return names

    @REDACT.setter
    def REDACT(self, names: List[str]) -> None:
        _tbcollect.REDACT = names


sys.modules[__name__].__class__ = _Package

# Options of ``dump_all`` that shape the rendering rather than the capture.
_RENDER_OPTIONS = ("group", "indent")


def dump_all(
    file: DumpTarget = None,
    *,
    format: str = "text",
    probes: Union[str, os.PathLike[str], None] = None,
    **options: Any,
) -> str:
    """Collect every thread, greenlet and task and render them in one call.

    ``file`` is a path, a text file object, or an open file descriptor; with
    ``None`` nothing is written. A path to a regular file (or to none yet) is
    written whole or not at all and keeps its mode; a new file is 0644 less
    the umask, or 0600 with ``locals``; a device or FIFO is written through
    (docs/security.md).
    ``options`` are ``collect()``'s (``threads``, ``greenlets``, ``tasks``,
    ``source``, ``max_depth``, ``done_tasks``, ``locals``, ``redact``) plus the
    renderer's ``group`` and ``indent``. ``format`` is one of ``FORMATS``
    (``text``, ``json``, ``collapsed``, ``svg``).
    ``probes`` is a probes directory whose results go into the dump (see
    ``run_probes``). Returns the rendered dump.
    """
    check_format(format)  # an unknown format fails before anything is captured
    if probes is not None:
        from tbcollect._probes import check_probes, run_probes

        check_probes(probes)  # so does an unsafe probes directory, before any probe runs
    render = {k: options.pop(k) for k in _RENDER_OPTIONS if k in options}
    snapshot = collect(**options)
    if probes is not None:
        snapshot = snapshot.with_probes(run_probes(probes))
    text: str = snapshot.render(format, **render)
    if not text.endswith("\n"):
        text += "\n"
    _write(text, file, private=bool(options.get("locals")))
    return text


def _write(text: str, file: DumpTarget, *, private: bool = False) -> None:
    """Writes a rendered dump to ``dump_all``'s ``file`` (nothing for None)."""
    if file is None:
        return
    if isinstance(file, bool):
        raise InvalidOptionError(
            f"invalid option file: {file!r} is neither a path, a file nor a descriptor"
        )
    if isinstance(file, int):
        write_dump(text, fd=file)
    elif isinstance(file, (str, os.PathLike)):
        write_dump(text, path=os.fspath(file), private=private)
    elif hasattr(file, "write"):
        file.write(text)
        flush = getattr(file, "flush", None)
        if flush is not None:
            flush()
    else:
        raise InvalidOptionError(
            f"invalid option file: {type(file).__name__} is neither a path, a file nor a descriptor"
        )


def load(source: Union[str, os.PathLike[str], IO[str]]) -> Snapshot:
    """Read a JSON dump back into a ``Snapshot`` (path, file object, or the JSON text)."""
    if hasattr(source, "read"):
        text = source.read()
    elif isinstance(source, str) and source.lstrip().startswith("{"):
        text = source
    else:
        try:
            with open(os.fspath(source), encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise InvalidDumpError(f"cannot read dump {source}: {e.strerror or e}") from None
    return Snapshot.from_json(text)


def __getattr__(name: str) -> Any:
    import importlib

    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value: Any = version("tbcollect")
        except PackageNotFoundError:  # a source tree without metadata
            value = "0+unknown"
    elif name == "DumpTarget":  # for the annotations of aio and gevent
        from typing import IO, Union

        value = Union[str, "os.PathLike[str]", IO[str], int, None]
    elif name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    elif name in _SUBMODULES:
        try:
            value = importlib.import_module(f"tbcollect.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"tbcollect.{name}":
                raise
            raise AttributeError(f"module 'tbcollect' has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module 'tbcollect' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))

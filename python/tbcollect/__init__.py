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
from typing import IO, TYPE_CHECKING, Any, List, Union

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
from tbcollect._live import install, installed, uninstall
from tbcollect._probes import check_probes as _check_probes
from tbcollect._probes import run_probes
from tbcollect._tbcollect import (
    DEFAULT_REDACT,
    FORMATS,
    SCHEMA,
    Diff,
    Frame,
    Snapshot,
    Stack,
    check_format,
    collect,
    diff,
    write_dump,
)
from tbcollect.watchdog import Heartbeat, Watch, Watchdog, heartbeat, watchdog

__all__ = [
    "FORMATS",
    "REDACT",
    "SCHEMA",
    "Diff",
    "DumpDirectoryError",
    "DumpWriteError",
    "Frame",
    "InstallError",
    "InvalidDumpError",
    "InvalidOptionError",
    "MissingDependencyError",
    "ProbesError",
    "Snapshot",
    "Stack",
    "TbcollectError",
    "UnknownFormatError",
    "aio",
    "UnsafeProbesError",
    "Heartbeat",
    "Watch",
    "Watchdog",
    "collect",
    "diff",
    "dump_all",
    "heartbeat",
    "load",
    "run_probes",
    "watchdog",
    "install",
    "installed",
    "load",
    "uninstall",
]

if TYPE_CHECKING:  # imported lazily at run time, see __getattr__ below
    from tbcollect import aio

__version__ = "0.1.0"

#: With ``collect(locals=...)``: a variable or ``str`` dict key whose name
#: contains one of these (case-insensitive) is shown as ``[redacted]``. Extend
#: it for the whole program (``tbcollect.REDACT.append("ssn")``) or per call
#: (``collect(locals=True, redact=["ssn"])``).
REDACT: List[str] = list(DEFAULT_REDACT)

DumpTarget = Union[str, "os.PathLike[str]", IO[str], int, None]

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

    ``file`` is a path (written atomically: whole or not at all), a text file
    object, or an open file descriptor; with ``None`` nothing is written.
    ``options`` are ``collect()``'s (``threads``, ``greenlets``, ``tasks``,
    ``source``, ``max_depth``, ``done_tasks``, ``locals``, ``redact``) plus the
    renderer's ``group`` and ``indent``. ``format`` is one of ``FORMATS``
    (``text``, ``json``, ``collapsed``, ``svg``).
    ``probes`` is a probes directory whose results go into the dump (see
    ``run_probes``). Returns the rendered dump.
    """
    check_format(format)  # an unknown format fails before anything is captured
    if probes is not None:
        _check_probes(probes)  # so does an unsafe probes directory, before any probe runs
    render = {k: options.pop(k) for k in _RENDER_OPTIONS if k in options}
    snapshot = collect(**options)
    if probes is not None:
        snapshot = snapshot.with_probes(run_probes(probes))
    text: str = snapshot.render(format, **render)
    if not text.endswith("\n"):
        text += "\n"
    _write(text, file)
    return text


def _write(text: str, file: DumpTarget) -> None:
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
        write_dump(text, path=os.fspath(file))
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
        text = source.read()  # type: ignore[union-attr]
    elif isinstance(source, str) and source.lstrip().startswith("{"):
        text = source
    else:
        try:
            with open(os.fspath(source), encoding="utf-8") as f:  # type: ignore[arg-type]
                text = f.read()
        except OSError as e:
            raise InvalidDumpError(f"cannot read dump {source}: {e.strerror or e}") from None
    return Snapshot.from_json(text)


def __getattr__(name: str) -> Any:
    # `tbcollect.aio` imports asyncio: only when it is used.
    if name == "aio":
        import importlib

        return importlib.import_module("tbcollect.aio")
    raise AttributeError(f"module 'tbcollect' has no attribute {name!r}")

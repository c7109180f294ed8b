"""tbcollect: what is every thread, greenlet and asyncio task doing right now?

>>> import tbcollect
>>> snap = tbcollect.collect()
>>> print(snap.to_text())        # Python-traceback form, identical stacks grouped
>>> snap.to_json(indent=2)       # schema "tbcollect/1"
>>> tbcollect.dump_all("/tmp/dump.txt")
"""

from __future__ import annotations

import os
from typing import IO, Any, Union

from tbcollect._errors import (
    DumpDirectoryError,
    DumpWriteError,
    InstallError,
    InvalidDumpError,
    InvalidOptionError,
    TbcollectError,
    UnknownFormatError,
)
from tbcollect._live import install, installed, uninstall
from tbcollect._tbcollect import (
    FORMATS,
    SCHEMA,
    Frame,
    Snapshot,
    Stack,
    check_format,
    collect,
    write_dump,
)

__all__ = [
    "FORMATS",
    "SCHEMA",
    "DumpDirectoryError",
    "DumpWriteError",
    "Frame",
    "InstallError",
    "InvalidDumpError",
    "InvalidOptionError",
    "Snapshot",
    "Stack",
    "TbcollectError",
    "UnknownFormatError",
    "collect",
    "dump_all",
    "install",
    "installed",
    "load",
    "uninstall",
]

__version__ = "0.1.0"

DumpTarget = Union[str, "os.PathLike[str]", IO[str], int, None]

# Options of ``dump_all`` that shape the rendering rather than the capture.
_RENDER_OPTIONS = ("group", "indent")


def dump_all(
    file: DumpTarget = None,
    *,
    format: str = "text",
    **options: Any,
) -> str:
    """Collect every thread, greenlet and task and render them in one call.

    ``file`` is a path (written atomically: whole or not at all), a text file
    object, or an open file descriptor; with ``None`` nothing is written.
    ``options`` are ``collect()``'s (``threads``, ``greenlets``, ``tasks``,
    ``source``, ``max_depth``) plus the renderer's ``group`` and ``indent``.
    Returns the rendered dump.
    """
    check_format(format)  # an unknown format fails before anything is captured
    render = {k: options.pop(k) for k in _RENDER_OPTIONS if k in options}
    snapshot = collect(**options)
    text: str = snapshot.render(format, **render)
    if not text.endswith("\n"):
        text += "\n"
    if file is None:
        return text
    if isinstance(file, bool):
        raise InvalidOptionError(f"invalid option file: {file!r} is neither a path, a file nor a descriptor")
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
    return text


def load(source: Union[str, "os.PathLike[str]", IO[str]]) -> Snapshot:
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

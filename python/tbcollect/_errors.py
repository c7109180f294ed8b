"""The exception tree. The Rust core raises these by name (``src/error.rs``).

Each error also inherits the standard exception a caller would catch anyway,
so ``except ValueError`` or ``except OSError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "TbcollectError",
    "InvalidOptionError",
    "UnknownFormatError",
    "DumpWriteError",
    "InvalidDumpError",
    "MissingDependencyError",
    "ProbesError",
    "UnsafeProbesError",
    "DumpDirectoryError",
    "InstallError",
]


class TbcollectError(Exception):
    """Base class of every error tbcollect raises."""


class InvalidOptionError(TbcollectError, ValueError):
    """An option has a value it cannot take (``max_depth=0``)."""


class UnknownFormatError(TbcollectError, ValueError):
    """A format name that no renderer knows."""


class DumpWriteError(TbcollectError, OSError):
    """The dump could not be written; nothing was left half-written."""


class InvalidDumpError(TbcollectError, ValueError):
    """A file or string that is not a ``tbcollect/1`` JSON dump."""


class MissingDependencyError(TbcollectError, ImportError):
    """An optional integration's package (e.g. ``sentry-sdk``) is not installed."""


class ProbesError(TbcollectError, OSError):
    """The probes directory cannot be read (missing, not a directory)."""


class UnsafeProbesError(ProbesError, PermissionError):
    """A probes directory or file that someone else could change; nothing was run."""


class DumpDirectoryError(TbcollectError, OSError):
    """The dump directory cannot be used: missing and not creatable, a
    symlink, owned by another user, or writable by group or others."""


class InstallError(TbcollectError, RuntimeError):
    """``install()`` or ``uninstall()`` cannot be done here (not the main
    thread, or a platform without POSIX signals)."""

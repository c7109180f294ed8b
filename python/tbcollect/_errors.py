"""The exception tree, declared in the native module (``src/bindings/errors.rs``)
so that raising one never imports this package; re-exported here.

Each error also inherits the standard exception a caller would catch anyway,
so ``except ValueError`` or ``except OSError`` keeps working.
"""

from __future__ import annotations

from tbcollect._tbcollect import (
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

"""The range of every option the Python layer takes, checked in one place,
when the option is given: a value out of range is one ``InvalidOptionError``
naming the public option, never a handler or watchdog that fails later.
``src/bindings/options.rs`` does the same for the extension's options."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional, Union

from tbcollect._errors import InvalidOptionError
from tbcollect._tbcollect import check_format

if TYPE_CHECKING:
    import logging

#: The formats a dump file is written in (by a signal or a watchdog); svg and
#: collapsed are made from a saved JSON dump with ``tbcollect render``.
DUMP_FILE_FORMATS = ("text", "json")

#: ``install(raw_timeout=)``: below 0.1 s every dump would be a raw one.
RAW_TIMEOUT_RANGE = (0.1, 86400.0)
#: Watchdog thresholds and reminders, in seconds.
THRESHOLD_RANGE = (0.001, 365 * 86400.0)


def dump_file_format(value: Any, option: str = "format") -> str:
    """``"text"`` or ``"json"``; UnknownFormatError for a name no renderer
    knows, InvalidOptionError for one a dump file cannot be written in."""
    if not isinstance(value, str):
        raise InvalidOptionError(f"invalid option {option}: must be a str, got {value!r}")
    check_format(value)
    if value not in DUMP_FILE_FORMATS:
        raise InvalidOptionError(
            f"invalid option {option}: dump files are written as text or json, not {value!r} "
            f"(make {value} from a JSON dump with `tbcollect render DUMP.json --format {value}`)"
        )
    return value


def seconds(option: str, value: Any, bounds: tuple[float, float]) -> float:
    """A number of seconds within ``bounds`` (both included)."""
    lo, hi = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOptionError(
            f"invalid option {option}: must be a number of seconds, got {value!r}"
        )
    number = float(value) if not isinstance(value, int) or abs(value) < 2**53 else math.inf
    if not (lo <= number <= hi):
        raise InvalidOptionError(
            f"invalid option {option}: must be from {lo:g} to {hi:g} seconds, got {value!r}"
            if isinstance(value, float) or abs(value) < 10**20
            else f"invalid option {option}: must be from {lo:g} to {hi:g} seconds"
        )
    return number


def logger(value: Any) -> Optional[logging.Logger]:
    """``log=``: a Logger, a logger's name, or None."""
    if value is None:
        return None
    import logging

    if isinstance(value, str):
        return logging.getLogger(value)
    if isinstance(value, (logging.Logger, logging.LoggerAdapter)):
        return value  # type: ignore[return-value]
    raise InvalidOptionError(
        f"invalid option log: must be a logging.Logger or a logger name, got {value!r}"
    )


LogArg = Union["logging.Logger", str, None]

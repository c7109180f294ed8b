"""One log record per dump, for log pipelines (used by ``install(log=...)``
and the watchdogs; callable directly).

The record's message is the dump's header line, so a plain log file shows
one readable line; the whole snapshot rides along as ``record.tbcollect``
(the ``tbcollect/1`` JSON as a dict) for structured handlers and shippers
(JSON formatters, Sentry's and OpenTelemetry's logging integrations) that
serialize a record's extra attributes.
"""

from __future__ import annotations

import logging
from typing import Optional, Union

import tbcollect
from tbcollect._errors import InvalidOptionError

__all__ = ["emit", "LOGGER_NAME"]

#: The logger used when none is given.
LOGGER_NAME = "tbcollect"


def emit(
    snapshot: tbcollect.Snapshot,
    *,
    logger: Union[logging.Logger, str, None] = None,
    level: int = logging.WARNING,
    reason: Optional[str] = None,
) -> None:
    """Log one record for ``snapshot`` on ``logger`` (a Logger or its name;
    default ``"tbcollect"``) at ``level``.

    Message: ``snapshot.summary()``, followed by `` (reason)`` when a reason
    is given (``"event loop blocked for 2.1 s"``). Extra attributes:
    ``record.tbcollect`` (the snapshot as a dict, as ``to_dict()``) and
    ``record.tbcollect_reason`` (the reason or None). Nothing is rendered
    when the logger does not handle ``level``.
    """
    if logger is None or isinstance(logger, str):
        log = logging.getLogger(logger or LOGGER_NAME)
    elif isinstance(logger, logging.Logger):
        log = logger
    else:
        raise InvalidOptionError(
            f"invalid option logger: {type(logger).__name__} is neither a Logger nor a name"
        )
    if isinstance(level, bool) or not isinstance(level, int):
        raise InvalidOptionError(f"invalid option level: {level!r} is not a logging level number")
    if not log.isEnabledFor(level):
        return
    message = snapshot.summary()
    if reason:
        message = f"{message} ({reason})"
    log.log(
        level,
        "%s",
        message,
        extra={"tbcollect": snapshot.to_dict(), "tbcollect_reason": reason},
    )

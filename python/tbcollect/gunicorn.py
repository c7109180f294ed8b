"""gunicorn: every worker dumps on request, on a hang, and when it times out.

As a config module, as is::

    gunicorn -c python:tbcollect.gunicorn app:app

With a config of your own, import its hooks (``from tbcollect.gunicorn
import *`` brings ``post_worker_init`` and ``worker_abort``) or call them from
your hooks of the same name::

    import tbcollect.gunicorn

    def post_worker_init(worker):
        ...                                   # your own set-up
        tbcollect.gunicorn.post_worker_init(worker)

    def worker_abort(worker):
        tbcollect.gunicorn.worker_abort(worker)

In every worker (sync, gthread, gevent, ``uvicorn.workers.UvicornWorker``),
after gunicorn has set up its own signal handlers:

- a dump on SIGURG (``kill -URG WORKER`` or ``tbcollect dump WORKER``): the
  signals gunicorn owns (QUIT, INT, TERM, HUP, USR1, USR2, WINCH, TTIN, TTOU,
  ABRT) keep their meaning; ``$TBCOLLECT_SIGNAL`` picks another free one;
- a raw dump when the arbiter aborts the worker for a ``--timeout``
  (SIGABRT), written from a C-level handler so that it works while the worker
  holds the GIL in C code; then gunicorn's own abort handling runs, and there
  this module's ``worker_abort`` writes a full dump when the GIL can be had.
  The UvicornWorker resets SIGABRT to its default (a core dump): there the
  worker gets gunicorn's usual abort handling back (``worker_abort``, then
  exit status 1);
- a watchdog set below ``--timeout`` (``timeout - 1`` s, and at least 3/4
  of it; ``$TBCOLLECT_WATCHDOG`` seconds overrides it, 0 turns it off): on
  the worker's heartbeat to the arbiter, or on the gevent hub for gevent
  workers. Its report is a dump made while the worker is still stuck.

Every dump goes to the dump directory (``$TBCOLLECT_DIR``, else the private
per-user one), and gunicorn's error log says where.
"""

from __future__ import annotations

import logging as _logging
import os as _os
import signal as _signal
from pathlib import Path as _Path
from typing import Any as _Any
from typing import Optional as _Optional

__all__ = ["post_worker_init", "worker_abort"]

#: The dump signal in workers: free in gunicorn, and ignored by default, so
#: one sent to a process without tbcollect harms nothing.
DUMP_SIGNAL = _signal.SIGURG
#: The signals gunicorn's arbiter and workers act on.
GUNICORN_SIGNALS = frozenset(
    getattr(_signal, "SIG" + name)
    for name in "ABRT HUP QUIT INT TERM USR1 USR2 WINCH CHLD TTIN TTOU".split()
)

# The watchdog of this worker (None in the arbiter, or when turned off).
_watchdog: _Optional[_Any] = None


def _dump_signal(log: _Any) -> _signal.Signals:
    from tbcollect._live import parse_signal

    wanted = _os.environ.get("TBCOLLECT_SIGNAL", "").strip()
    if not wanted:
        return DUMP_SIGNAL
    sig = parse_signal(wanted)
    if sig in GUNICORN_SIGNALS:
        log.warning(
            "tbcollect: TBCOLLECT_SIGNAL=%s is a gunicorn signal; dumping on %s instead",
            wanted,
            DUMP_SIGNAL.name,
        )
        return DUMP_SIGNAL
    return sig


def watchdog_threshold(timeout: float) -> _Optional[float]:
    """The watchdog's threshold for a gunicorn ``--timeout`` (None: no
    watchdog). ``$TBCOLLECT_WATCHDOG`` (seconds, 0: off) overrides it."""
    wanted = _os.environ.get("TBCOLLECT_WATCHDOG", "").strip()
    if wanted:
        try:
            seconds = float(wanted)
        except ValueError:
            from tbcollect._errors import InvalidOptionError

            raise InvalidOptionError(
                f"invalid option watchdog: $TBCOLLECT_WATCHDOG is {wanted!r}"
            ) from None
        return seconds if seconds > 0 else None
    if not timeout or timeout <= 0:
        return None  # --timeout 0: gunicorn never aborts a worker
    # Below the timeout so the report is made while the worker is still
    # stuck; not so close to the heartbeat period (timeout / 2) that an idle
    # worker looks stuck.
    return max(timeout - 1.0, 0.75 * timeout)


def _is_gevent(worker: _Any) -> bool:
    return any(cls.__module__ == "gunicorn.workers.ggevent" for cls in type(worker).__mro__)


def post_worker_init(worker: _Any) -> None:
    """gunicorn's ``post_worker_init`` hook: installs tbcollect in the
    worker. A failure is logged and never stops the worker."""
    try:
        _setup(worker)
    except Exception as e:
        worker.log.warning("tbcollect: worker %s makes no dumps: %s", worker.pid, e)


def _setup(worker: _Any) -> None:
    global _watchdog
    import tbcollect

    log = _logging.getLogger("gunicorn.error")
    sig = _dump_signal(worker.log)
    if _signal.getsignal(_signal.SIGABRT) in (_signal.SIG_DFL, None):
        # UvicornWorker: SIGABRT would dump core. Give it gunicorn's handling
        # as every other worker has: worker_abort, then exit(1).
        _signal.signal(_signal.SIGABRT, lambda signum, frame: _abort_and_exit(worker))
    directory = tbcollect.install(
        sig,
        format=_os.environ.get("TBCOLLECT_FORMAT") or "text",
        log=log,
        abort=True,
    )
    threshold = watchdog_threshold(float(getattr(worker.cfg, "timeout", 0) or 0))
    watching = "no watchdog"
    if threshold is not None:
        if _watchdog is not None:
            _watchdog.stop()
        _watchdog = tbcollect.watchdog(directory=directory, log=log)
        if _is_gevent(worker):
            _watchdog.watch_hub(threshold=threshold)
            watching = f"a {threshold:g} s gevent hub watchdog"
        else:
            beat = _watchdog.watch_thread(threshold=threshold, name="gunicorn worker heartbeat")
            _beat_with_notify(worker, beat)
            watching = f"a {threshold:g} s heartbeat watchdog"
    worker.log.info(
        "tbcollect: worker %s dumps to %s on %s (tbcollect dump %s), on a timeout, and from %s",
        worker.pid,
        directory,
        sig.name,
        worker.pid,
        watching,
    )


def _abort_and_exit(worker: _Any) -> None:
    worker.alive = False
    try:
        worker.cfg.worker_abort(worker)
    finally:
        # Not sys.exit(): uvicorn answers a SystemExit raised in a request
        # with a 500 and keeps the stuck worker alive.
        _logging.shutdown()
        _os._exit(1)


def _beat_with_notify(worker: _Any, beat: _Any) -> None:
    """Beats the watchdog whenever the worker tells the arbiter it is alive,
    so the watchdog sees what the arbiter sees, a little earlier."""
    notify = worker.notify

    def notify_and_beat() -> None:
        notify()
        beat.beat()

    worker.notify = notify_and_beat


def worker_abort(worker: _Any) -> None:
    """gunicorn's ``worker_abort`` hook: a full dump of the worker the
    arbiter is aborting (it missed its ``--timeout``), with the GIL, from the
    signal handler, before the worker exits. Never raises."""
    try:
        path = dump(
            f"gunicorn worker_abort: the arbiter aborts worker {worker.pid}, "
            f"silent for more than --timeout {getattr(worker.cfg, 'timeout', '?')} s"
        )
        worker.log.critical("tbcollect: stacks of timed-out worker %s: %s", worker.pid, path)
    except Exception as e:
        worker.log.warning("tbcollect: worker %s: no dump on abort: %s", worker.pid, e)


def dump(reason: str) -> _Path:
    """Writes a full dump to this process's dump directory, with ``reason``
    on its second line; returns its path."""
    from tbcollect import _live

    return _live.dump_now(reason)

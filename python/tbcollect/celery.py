"""Celery: every worker process dumps on request, and when a task exceeds its
soft time limit.

    app = Celery(...)
    tbcollect.celery.setup(app)

installs the dump handler where tasks run, whatever the pool:

- in the worker's main process (``worker_ready``, once its logging is set
  up): there the threads, gevent and solo pools run their tasks, and the
  prefork pool's parent lives;
- in every prefork child (``worker_process_init``).

The dump signal is SIGURG (``kill -URG PID`` or ``tbcollect dump PID``):
Celery owns SIGUSR1 (its own stack dump, and soft time limits in prefork
children), SIGUSR2, SIGQUIT, SIGTERM, SIGINT and SIGHUP. ``$TBCOLLECT_SIGNAL``
picks another free one.

A task past its soft time limit: Celery enforces soft limits in the prefork
pool only (its threads, gevent and solo pools ignore them). There the dump is
made the moment the limit hits, before ``SoftTimeLimitExceeded`` unwinds the
task, so it shows where the task was. A task that fails with
``SoftTimeLimitExceeded`` some other way (raised by a hard ``Timeout`` of its
own, say) gets a dump at its failure, whose reason names where the exception
interrupted it.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any, Optional

__all__ = ["DUMP_SIGNAL", "setup"]

#: The dump signal in Celery workers: one Celery and billiard leave alone.
DUMP_SIGNAL = signal.SIGURG
#: The signals Celery and billiard act on.
CELERY_SIGNALS = frozenset(
    getattr(signal, "SIG" + name) for name in "USR1 USR2 QUIT TERM INT HUP".split()
)

_state = threading.local()


def _dump_signal() -> signal.Signals:
    from tbcollect._live import parse_signal

    wanted = os.environ.get("TBCOLLECT_SIGNAL", "").strip()
    sig = parse_signal(wanted) if wanted else DUMP_SIGNAL
    return DUMP_SIGNAL if sig in CELERY_SIGNALS else sig


def _log() -> Any:
    from celery.utils.log import get_logger

    return get_logger("tbcollect.celery")


def install_here() -> Optional[Path]:
    """Installs the dump handler in this process (from its main thread);
    a failure is logged and never stops the worker. Returns the directory."""
    if threading.current_thread() is not threading.main_thread():
        return None
    import tbcollect

    try:
        directory = tbcollect.install(
            _dump_signal(), format=os.environ.get("TBCOLLECT_FORMAT") or "text", log=_log()
        )
    except Exception as e:
        _log().warning("tbcollect: process %s makes no dumps: %s", os.getpid(), e)
        return None
    _log().info(
        "tbcollect: process %s dumps to %s on %s (tbcollect dump %s)",
        os.getpid(),
        directory,
        _dump_signal().name,
        os.getpid(),
    )
    return directory


def _dump(reason: str) -> Optional[Path]:
    from tbcollect import _live

    try:
        path = _live.dump_now(reason)
    except Exception as e:
        _log().warning("tbcollect: no dump (%s): %s", reason, e)
        return None
    _log().warning("tbcollect: %s; stacks in %s", reason, path)
    return path


def _describe(task: Any, task_id: Any) -> str:
    return f"{getattr(task, 'name', task)}[{task_id}]"


def _wrap_soft_timeout() -> None:
    """In a prefork child, billiard raises SoftTimeLimitExceeded from its
    SIGUSR1 handler: dump first, then let it do so."""
    if threading.current_thread() is not threading.main_thread():
        return
    usr1 = getattr(signal, "SIGUSR1", None)
    if usr1 is None:
        return
    current: Any = signal.getsignal(usr1)
    if (
        not callable(current)
        or getattr(current, "__module__", None) != "billiard.pool"
        or getattr(current, "__name__", "") != "soft_timeout_sighandler"
    ):
        return

    def soft_timeout_dump(signum: int, frame: Any) -> Any:
        running = getattr(_state, "task", None)
        if running is not None:
            _state.dumped = running
            _dump(f"celery soft time limit: task {running} exceeded its soft time limit")
        return current(signum, frame)

    signal.signal(usr1, soft_timeout_dump)


def setup(app: Any = None) -> None:
    """Connects the hooks (see the module's doc) for ``app``'s workers (for
    every app when None). Call it where the app is defined, so that the
    worker imports it."""
    from celery import signals

    def same_app(sender: Any) -> bool:
        return app is None or getattr(sender, "app", app) is app

    def on_worker_ready(sender: Any = None, **_: Any) -> None:
        if same_app(sender):
            install_here()

    def on_process_init(**_: Any) -> None:
        install_here()

    def on_prerun(sender: Any = None, task_id: Any = None, task: Any = None, **_: Any) -> None:
        if app is not None and getattr(task, "app", app) is not app:
            return
        _state.task = _describe(task or sender, task_id)
        _wrap_soft_timeout()

    def on_postrun(**_: Any) -> None:
        _state.task = None

    def on_failure(
        sender: Any = None, task_id: Any = None, exception: Any = None, einfo: Any = None, **_: Any
    ) -> None:
        from celery.exceptions import SoftTimeLimitExceeded

        if not isinstance(exception, SoftTimeLimitExceeded):
            return
        described = _describe(sender, task_id)
        if getattr(_state, "dumped", None) == described:
            _state.dumped = None
            return  # dumped when the limit hit
        where = _innermost(getattr(einfo, "tb", None))
        _dump(
            f"celery soft time limit: task {described} exceeded its soft time limit"
            + (f" (interrupted in {where})" if where else "")
        )

    signals.worker_ready.connect(on_worker_ready, weak=False)
    signals.worker_process_init.connect(on_process_init, weak=False)
    signals.task_prerun.connect(on_prerun, weak=False)
    signals.task_postrun.connect(on_postrun, weak=False)
    signals.task_failure.connect(on_failure, weak=False)


def _innermost(tb: Any) -> Optional[str]:
    """``function (file:line)`` of a traceback's innermost frame."""
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{code.co_name} ({code.co_filename}:{tb.tb_lineno})"

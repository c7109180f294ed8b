"""Dump on a signal: ``tbcollect.install()`` and ``tbcollect.uninstall()``.

The signal is caught by a C-level handler (``src/live/handler.rs``) that only
writes a byte to a pipe; a watcher thread (Rust, never holding the GIL) wakes
the dumper thread below, which makes the dump outside the interrupted frame.
When the dumper cannot get the GIL within ``raw_timeout`` seconds, the watcher
writes a raw dump without it (faulthandler's stacks of every thread). After
``os.fork()`` the child gets its own watcher and dumper.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Union

from tbcollect import _dumpdir, _options
from tbcollect._errors import InstallError, InvalidOptionError
from tbcollect._tbcollect import Snapshot, collect

if TYPE_CHECKING:  # logging is imported only when a logger is named (start-up cost)
    import logging

__all__ = ["install", "installed", "uninstall"]

#: The signal ``install()`` uses by default (``kill -QUIT``, Ctrl-\\ on a terminal).
DEFAULT_SIGNAL = getattr(signal, "SIGQUIT", 3)
#: How long the dumper may wait for the GIL before a raw dump is written.
DEFAULT_RAW_TIMEOUT = 2.0
#: How long ``uninstall()`` waits for a dump in progress to finish.
_JOIN_TIMEOUT = 5.0

# Signals that cannot be caught, or that mean the process is broken and must
# not be resumed (faulthandler.enable() is the tool for those).
_CRASH = "reports a crash; use faulthandler.enable() for it"
_REFUSED = {
    "SIGKILL": "cannot be caught",
    "SIGSTOP": "cannot be caught",
    "SIGSEGV": _CRASH,
    "SIGBUS": _CRASH,
    "SIGFPE": _CRASH,
    "SIGILL": _CRASH,
    "SIGABRT": _CRASH,
}

SignalLike = Union[int, str, signal.Signals]


def parse_signal(value: SignalLike) -> signal.Signals:
    """``signal.SIGUSR2``, ``12``, ``"SIGUSR2"`` or ``"USR2"`` -> ``Signals``;
    InvalidOptionError for anything that is no catchable signal here."""
    if isinstance(value, bool):
        raise InvalidOptionError(f"invalid option signum: {value!r} is not a signal")
    try:
        if isinstance(value, str):
            name = value.strip().upper()
            if name.isdigit():
                sig = signal.Signals(int(name))
            else:
                sig = signal.Signals[name if name.startswith("SIG") else "SIG" + name]
        else:
            sig = signal.Signals(int(value))
    except (KeyError, ValueError, TypeError):
        raise InvalidOptionError(f"invalid option signum: {value!r} is not a signal") from None
    refused = _REFUSED.get(sig.name)
    if refused:
        raise InvalidOptionError(f"invalid option signum: {sig.name} {refused}")
    return sig


class _SignalHandler:
    """The Python-level handler ``signal.getsignal()`` reports. The dump is
    asked for by the C-level handler; this one passes the signal on to the
    Python handler it replaced, so that one keeps working."""

    __slots__ = ("previous",)

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(self, signum: int, frame: Any) -> None:
        previous = self.previous
        if callable(previous):
            previous(signum, frame)

    def __repr__(self) -> str:
        return "<tbcollect dump handler>"


def _report(message: str) -> None:
    # os.write, not sys.stderr: the stream's lock may be held by the thread
    # that is stuck.
    try:
        os.write(2, f"tbcollect: {message}\n".encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def _report_failure(what: str, e: BaseException) -> None:
    try:
        detail = f"{type(e).__name__}: {e}"
    except BaseException:  # str() of a hostile exception
        detail = type(e).__name__
    _report(f"{what} failed: {detail}")


def _probe_results(probes: Optional[str]) -> Optional[Any]:
    """The probes hook: the results of the probes directory for this dump, or
    None (no probes directory, or no probes support in this build)."""
    if not probes:
        return None
    from tbcollect import _probes
    from tbcollect._errors import ProbesError

    try:
        return _probes.run_probes(probes)
    except ProbesError as e:
        # Made unsafe or removed since install(): the dump still goes out,
        # saying why no probe ran.
        return [{"name": "(probes)", "result": None, "error": str(e)}]


def _log_dump(log: Optional[logging.Logger], snapshot: Snapshot, path: Path, reason: str) -> None:
    """The logging hook: one record per dump (the header line, and the dump
    as a dict for structured log shippers), after the file is written, so a
    logging lock held by a stuck thread cannot delay the file."""
    if log is not None:
        from tbcollect import _logging

        _logging.emit(snapshot, logger=log, reason=f"{reason}; written to {path}")


#: tbcollect's own OS threads (dumper, watchdog), ident -> name. Under gevent
#: or eventlet monkey-patching they start outside ``threading``, which then
#: knows them as ``Dummy-N`` or not at all; a capture reads this table (in C,
#: no code run) to name them and mark them ``own``.
OWN_THREADS: Dict[int, str] = {}
# A child of fork() has none of its parent's threads, and their idents can
# come back as the child's own threads.
os.register_at_fork(after_in_child=OWN_THREADS.clear)


def run_own_thread(target: Callable[[], None], name: str, get_ident: Callable[[], int]) -> None:
    """Runs ``target`` as tbcollect's own thread ``name`` (``get_ident``: the
    real thread's ident, not a greenlet's)."""
    ident = get_ident()
    OWN_THREADS[ident] = name
    try:
        target()
    finally:
        OWN_THREADS.pop(ident, None)


# The faults a thread raises on itself: left deliverable in tbcollect's
# threads so that faulthandler still reports a crash there (abort() unblocks
# SIGABRT itself).
_OWN_FAULTS = {"SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL"}


def _application_signals() -> set[int]:
    return {s for s in signal.valid_signals() if getattr(s, "name", "") not in _OWN_FAULTS}


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Around the start of one of tbcollect's threads: the new thread starts,
    and stays, with the application's signals blocked. A signal sent to the
    process that lands in a thread other than the main one only sets
    CPython's flag, and a main thread blocked in a read then never runs its
    handler; a new thread takes such a signal when it first unblocks its mask,
    which under load is well after the start returns."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _application_signals())
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def application_signals() -> Iterator[None]:
    """Inside one of tbcollect's threads, around code of the application's
    (probes, log handlers): what it starts (a subprocess) inherits the mask
    of a plain thread, not tbcollect's."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    unblocked = _application_signals()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, unblocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, unblocked)


def _original_thread_primitives() -> tuple[Any, Any, Any]:
    """(start_new_thread, allocate_lock, get_ident) of real OS threads when
    gevent or eventlet has monkey-patched threading, else Nones."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return tuple(
            monkey.get_original("_thread", name)
            for name in ("start_new_thread", "allocate_lock", "get_ident")
        )
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("thread"):
        original = patcher.original("_thread")
        return original.start_new_thread, original.allocate_lock, original.get_ident
    return None, None, None


class _OsThread:
    """The dumper's thread: a real OS thread even under gevent or eventlet
    monkey-patching, whose threads are greenlets (a dumper greenlet waiting
    for a signal would block the whole hub)."""

    def __init__(self, target: Any, name: str) -> None:
        start, allocate_lock, self._get_ident = _original_thread_primitives()
        self._thread: Optional[threading.Thread] = None
        if start is None:
            self._thread = threading.Thread(
                target=run_own_thread,
                args=(target, name, threading.get_ident),
                name=name,
                daemon=True,
            )
            with signals_blocked():
                self._thread.start()
            return
        self._done = allocate_lock()
        self._done.acquire()

        def run() -> None:
            try:
                run_own_thread(target, name, self._get_ident)
            finally:
                self._done.release()

        with signals_blocked():
            self._ident = start(run, ())

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            if self._thread is not threading.current_thread():
                self._thread.join(timeout)
        elif self._get_ident() != self._ident and self._done.acquire(True, timeout):
            self._done.release()


class _Installation:
    def __init__(
        self,
        sig: signal.Signals,
        directory: Path,
        fmt: str,
        probes: Optional[str],
        log: Optional[logging.Logger],
        raw_timeout: Optional[float],
    ) -> None:
        self.signal = sig
        self.directory = directory
        self.fmt = fmt
        self.probes = probes
        self.log = log
        self.raw_timeout = raw_timeout
        self.thread: Optional[_OsThread] = None
        # The process this installation serves; see _catch_up_on_fork.
        self.pid = os.getpid()

    def start(self, handle: Any) -> None:
        self.thread = _OsThread(lambda: self._run(handle), "tbcollect-dumper")

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.join(_JOIN_TIMEOUT)

    def _run(self, handle: Any) -> None:
        while True:
            try:
                request = handle.wait()
            except BaseException:  # the interpreter is going away
                return
            if request is None:
                return
            signals, fmt, request_id = request
            if fmt is not None:
                self.answer(handle, fmt, request_id)
                continue
            try:
                self.dump(signals)
            except BaseException as e:  # the dumper must outlive any failure
                _report_failure(f"dump on {self.signal.name}", e)

    def answer(self, handle: Any, fmt: str, request_id: int) -> None:
        """Answers a request from the channel: a dump in ``fmt`` (empty: the
        installation's format), sent back over the connection and written
        nowhere."""
        fmt = fmt or self.fmt
        try:
            snapshot = collect()
            with application_signals():
                results = _probe_results(self.probes)
            if results is not None:
                snapshot = snapshot.with_probes(results)
            text = snapshot.render(fmt)
            if fmt in ("text", "json"):
                text = _dumpdir.with_reason(text, fmt, "request from tbcollect dump")
            data = text.encode("utf-8")
        except BaseException as e:  # the dumper must outlive any failure
            try:
                handle.fail(request_id, f"{type(e).__name__}: {e}")
            except BaseException:
                pass
            return
        handle.answer(request_id, fmt, data)

    def dump(self, signals: int) -> Path:
        reason = f"signal {self.signal.name}"
        if signals > 1:
            reason += f" ({signals} signals since the last dump)"
        snapshot = collect()
        with application_signals():
            results = _probe_results(self.probes)
        if results is not None:
            snapshot = snapshot.with_probes(results)
        text = snapshot.render(self.fmt)
        # Recreated if a cleaner removed it since install().
        directory = _dumpdir.resolve_directory(self.directory)
        path = _dumpdir.write_new_dump(text, directory=directory, fmt=self.fmt, reason=reason)
        with application_signals():
            _log_dump(self.log, snapshot, path, reason)
        return path


_installation: Optional[_Installation] = None
_hooks_registered = False


def _require_main_thread(what: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        raise InstallError(
            f"{what}() must be called from the main thread (signal handlers live there)"
        )


def install(
    signum: SignalLike = DEFAULT_SIGNAL,
    *,
    directory: Union[str, os.PathLike[str], None] = None,
    format: str = "text",
    probes: Union[str, os.PathLike[str], None] = None,
    log: Union[logging.Logger, str, None] = None,
    raw_timeout: Optional[float] = DEFAULT_RAW_TIMEOUT,
    abort: bool = False,
    keep: Optional[int] = None,
    max_age_days: Optional[float] = None,
) -> Path:
    """Dump every thread, greenlet and task to a new file on ``signum``
    (default SIGQUIT: ``kill -QUIT PID`` or ``tbcollect dump PID``); the
    process keeps running. Returns the dump directory.

    ``directory``: where dumps go (default ``$TBCOLLECT_DIR``, else a private
    per-user directory; see ``tbcollect._dumpdir``). ``format``: ``"text"`` or
    ``"json"`` (svg and collapsed are made from a JSON dump with
    ``tbcollect render``). ``probes``: a probes directory (default ``$TBCOLLECT_PROBES``)
    whose results go into each dump. ``log``: a logger (or logger name) told
    where each dump went. ``raw_timeout``: seconds to wait for the GIL before
    a raw dump is written without it (0.1 to 86400; None: never). ``abort``: also write a
    raw dump when the process gets SIGABRT (a gunicorn worker past its
    ``--timeout``, a C ``abort()``), then hand the signal to the handler that
    was there before (needs ``raw_timeout``). ``keep`` and ``max_age_days``:
    the retention rule applied after every dump (default
    ``$TBCOLLECT_KEEP``, else 50 dumps per process; ``$TBCOLLECT_MAX_AGE_DAYS``,
    else 7 days; 0 turns a limit off).

    Calling it again replaces the previous installation. Must be called from
    the main thread; the previous handler of the signal is chained to and put
    back by ``uninstall()``.
    """
    global _installation, _hooks_registered
    if not hasattr(signal, "pthread_kill") or os.name != "posix":
        raise InstallError("install() needs POSIX signals, which this platform does not have")
    sig = parse_signal(signum)
    # Every option is checked before anything is installed: a handler that
    # could not write its dumps is never put in place.
    _options.dump_file_format(format)
    if raw_timeout is not None:
        raw_timeout = _options.seconds("raw_timeout", raw_timeout, _options.RAW_TIMEOUT_RANGE)
    if abort and raw_timeout is None:
        raise InvalidOptionError(
            "invalid option abort: the abort dump is written by the raw-dump path, "
            "which raw_timeout=None turns off"
        )
    keep, max_age_days = retention_options(keep, max_age_days)
    log = _options.logger(log)
    if probes is None:
        probes = os.environ.get("TBCOLLECT_PROBES") or None
    _require_main_thread("install")
    path = _dumpdir.resolve_directory(directory)
    if probes:
        from tbcollect import _probes

        # An unsafe probes directory is refused now, with a clear error,
        # rather than at the first signal.
        _probes.check_probes(probes)
    from tbcollect import _tbcollect

    uninstall()
    inst = _Installation(sig, path, format, os.fspath(probes) if probes else None, log, raw_timeout)
    handler = _SignalHandler(signal.getsignal(sig))
    handle = _tbcollect.live_install(
        int(sig),
        handler,
        directory=str(path),
        signal_name=sig.name,
        raw_timeout=raw_timeout,
        chain_python=callable(handler.previous),
    )
    _installation = inst
    # Each dump then says which stacks are unchanged since an earlier one.
    _tbcollect.keep_history(True)
    inst.start(handle)
    _tbcollect.set_retention(keep=keep, max_age_days=max_age_days)
    if abort:
        _tbcollect.abort_install(directory=str(path))
    if not _hooks_registered:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        atexit.register(_at_exit)
        _hooks_registered = True
    return path


def retention_options(keep: Any, max_age_days: Any) -> tuple[int, float]:
    """``keep`` and ``max_age_days`` checked, defaults from ``$TBCOLLECT_KEEP``
    and ``$TBCOLLECT_MAX_AGE_DAYS`` (InvalidOptionError names the bad one)."""
    if keep is None:
        keep = _from_env("TBCOLLECT_KEEP", "keep", _DEFAULT_KEEP)
    if max_age_days is None:
        max_age_days = _from_env("TBCOLLECT_MAX_AGE_DAYS", "max_age_days", _DEFAULT_MAX_AGE_DAYS)
    if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep < 2**32:
        raise InvalidOptionError(f"invalid option keep: {keep!r} is not a number of dumps (0: all)")
    if (
        isinstance(max_age_days, bool)
        or not isinstance(max_age_days, (int, float))
        or not 0 <= max_age_days <= 36500
    ):
        raise InvalidOptionError(
            f"invalid option max_age_days: {max_age_days!r} is not a number of days (0: any age)"
        )
    return keep, float(max_age_days)


_DEFAULT_KEEP = 50
_DEFAULT_MAX_AGE_DAYS = 7.0


def _from_env(variable: str, option: str, default: Any) -> Any:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        return int(text) if option == "keep" else float(text)
    except ValueError:
        raise InvalidOptionError(f"invalid option {option}: ${variable} is {text!r}") from None


def uninstall() -> bool:
    """Removes the handler ``install()`` put in place and puts the previous
    one back. Returns False when nothing was installed."""
    global _installation
    _catch_up_on_fork()
    inst = _installation
    if inst is None:
        return False
    _require_main_thread("uninstall")
    from tbcollect import _tbcollect

    _installation = None
    _tbcollect.abort_uninstall()
    removed: bool = _tbcollect.live_uninstall()
    inst.stop()
    return removed


def installed() -> Optional[signal.Signals]:
    """The signal a dump handler is installed on in this process, or None
    (also when other code has since replaced the handler with ``signal.signal``)."""
    _catch_up_on_fork()
    inst = _installation
    if inst is None:
        return None
    from tbcollect import _tbcollect

    return inst.signal if _tbcollect.live_active() else None


def dump_now(reason: str) -> Path:
    """Writes a full dump, made by the calling thread, to the dump directory
    of this process's installation (the default one without), in its
    format, with ``reason`` recorded; returns its path. The server
    integrations call it from their hooks."""
    _catch_up_on_fork()
    inst = _installation
    fmt = inst.fmt if inst is not None else "text"
    directory = _dumpdir.resolve_directory(inst.directory if inst is not None else None)
    text = collect().render(fmt)
    return _dumpdir.write_new_dump(text, directory=directory, fmt=fmt, reason=reason)


def _catch_up_on_fork() -> None:
    """A child forked from C (a uWSGI worker, unless uWSGI runs with
    ``--py-call-osafterfork``) never ran the ``os.register_at_fork`` hooks:
    its installation is still its parent's, whose threads and channel it
    does not have. Does now what the hook would have done."""
    inst = _installation
    if inst is not None and inst.pid != os.getpid():
        OWN_THREADS.clear()
        _after_fork_in_child()


def _after_fork_in_child() -> None:
    global _installation
    inst = _installation
    if inst is None:
        return
    inst.pid = os.getpid()
    from tbcollect import _tbcollect

    try:
        handle = _tbcollect.live_after_fork_child()
    except Exception as e:
        _installation = None
        _report(f"the forked child {os.getpid()} has no dump handler: {e}")
        return
    if handle is None:
        _installation = None
        return
    inst.start(handle)


def _at_exit() -> None:
    # Stop the watcher before the interpreter is torn down under it.
    try:
        uninstall()
    except Exception as e:
        _report(f"uninstall at exit failed: {e}")

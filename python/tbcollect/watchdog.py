"""Watchdogs: dump every stack when a thread, an event loop or a gevent hub hangs.

>>> wd = tbcollect.watchdog(directory="/var/tmp/myapp-dumps")
>>> beat = wd.watch_thread(threshold=30.0)       # this thread must beat every 30 s
>>> beat.beat()                                   # or tbcollect.heartbeat()
>>> wd.watch_loop(loop, threshold=1.0)            # an asyncio loop must run a callback within 1 s
>>> wd.watch_hub(threshold=1.0)                   # this thread's gevent hub must switch within 1 s
>>> wd.stop()

One watcher thread serves every watch of a watchdog. It sleeps until the
nearest deadline: a heartbeat only stores a timestamp and never wakes it,
and a loop or hub is pinged (one callback scheduled from the watcher) every
half threshold. When a watch fires, the watcher takes a snapshot from its own
thread -- while the culprit is still stuck -- and writes one report: header
lines naming the watch, the culprit thread and how long it has been stuck,
then the dump. A hang is reported once (plus one reminder every ``reminder``
seconds, if set) and its end is logged as "recovered after N s".

Reports go to a new file in the dump directory and to the ``logging`` logger
``tbcollect.watchdog`` (WARNING). Nothing here raises into the watched code:
``beat()`` only stores a float, and the loop/hub ping callback only stores
two numbers.

Fork: the watcher thread does not survive ``os.fork()``. In the child every
watchdog inherited from the parent is stopped and its watches are inert
(``beat()`` still does nothing harmful); a child that wants watchdogs creates
its own (for gunicorn, in a ``post_worker_init`` hook).

gevent: the watcher is always a real OS thread, even when gevent has
monkey-patched ``threading``, so a blocked hub cannot block its own watchdog.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import sys
import sysconfig
import time
import types
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from tbcollect import _dumpdir, _options, _probes
from tbcollect._errors import InvalidOptionError, TbcollectError
from tbcollect._tbcollect import Snapshot, collect, escape_text

__all__ = [
    "EVENT_LOOP_LAG",
    "GEVENT_HUB",
    "THREAD_HEARTBEAT",
    "Heartbeat",
    "HubWatch",
    "LoopWatch",
    "Watch",
    "Watchdog",
    "heartbeat",
    "watchdog",
]

# The names of the three kinds of watch, as reports and JSON spell them.
THREAD_HEARTBEAT = "thread heartbeat"
EVENT_LOOP_LAG = "event loop lag"
GEVENT_HUB = "gevent hub"

logger = logging.getLogger("tbcollect.watchdog")

WATCHER_THREAD_NAME = "tbcollect-watchdog"

PathArg = Union[str, "os.PathLike[str]"]

# A loop or hub gets a ping every PING_FRACTION * threshold: a hang is seen at
# most 1.5 thresholds after it starts, for two cheap wake-ups per threshold.
PING_FRACTION = 0.5
# Longest single sleep of the watcher; TIMEOUT_MAX is far beyond any need.
_MAX_SLEEP = 3600.0


def _original(module: str, name: str) -> Any:
    """``module.name`` as it was before gevent monkey-patched it, if it did."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        try:
            return monkey.get_original(module, name)
        except Exception:
            pass
    return getattr(importlib.import_module(module), name)


def _thread_primitives() -> Tuple[Callable[[], Any], Callable[[], int]]:
    """Real-thread ``allocate_lock`` and ``get_ident``."""
    return _original("_thread", "allocate_lock"), _original("_thread", "get_ident")


def _start_thread(run: Callable[[], None]) -> None:
    """Starts ``run`` in a real OS thread, named when ``threading`` allows it."""
    monkey = sys.modules.get("gevent.monkey")
    try:
        patched = monkey is not None and monkey.is_module_patched("threading")
    except Exception:
        patched = True
    from tbcollect._live import run_own_thread, signals_blocked

    if patched:
        # A patched threading.Thread would be a greenlet on the very hub it watches.
        get_ident = _original("_thread", "get_ident")
        with signals_blocked():
            _original("_thread", "start_new_thread")(
                run_own_thread, (run, WATCHER_THREAD_NAME, get_ident)
            )
    else:
        import threading

        thread = threading.Thread(
            target=run_own_thread,
            args=(run, WATCHER_THREAD_NAME, threading.get_ident),
            name=WATCHER_THREAD_NAME,
            daemon=True,
        )
        with signals_blocked():
            thread.start()


def _hub_blockers(snapshot: Snapshot, ident: Optional[int]) -> List[Any]:
    """The greenlets that run (not the hub) on thread ``ident``: what keeps its hub from running."""
    return [
        s
        for s in snapshot.stacks
        if s.kind == "greenlet" and s.thread == ident and s.state == "running" and not s.hub
    ]


def _stuck_at(snapshot: Snapshot, report: Dict[str, Any]) -> List[str]:
    """One line for the log: the innermost frame of the report's culprit
    (for a hub, of the greenlet that blocks it), or nothing when unknown."""
    culprit = report.get("culprit")
    stacks = [s for s in snapshot.stacks if s.id == culprit]
    if report.get("watch") == GEVENT_HUB and stacks:
        stacks = _hub_blockers(snapshot, stacks[0].thread) or stacks
    if not stacks or not stacks[0].frames:
        return []
    frames = stacks[0].frames

    def at(frame: Any) -> str:
        line = f":{frame.lineno}" if frame.lineno is not None else ""
        return f"{escape_text(frame.function)} ({escape_text(frame.filename)}{line})"

    text = f"  stuck in {at(frames[-1])}"
    # The standard library's innermost frames (Condition.wait) say little:
    # the program's own call into them is named too.
    stdlib = sysconfig.get_paths().get("stdlib", "\0")
    if frames[-1].filename.startswith(stdlib):
        caller = next((f for f in reversed(frames) if not f.filename.startswith(stdlib)), None)
        if caller is not None:
            text += f", called from {at(caller)}"
    return [f"{text}; {escape_text(stacks[0].name)}"]


def _check_threshold(name: str, value: Any) -> float:
    return _options.seconds(name, value, _options.THRESHOLD_RANGE)


class _Gone(Exception):
    """The watched thing no longer exists (closed loop, destroyed hub, ended thread)."""


class _Hang:
    """One ongoing hang of one watch, from when it was first reported."""

    __slots__ = ("since", "reported_at", "reports", "subject")

    def __init__(self, since: float, reported_at: float) -> None:
        self.since = since
        self.reported_at = reported_at
        self.reports = 1
        # How the first report named it, for the recovery line.
        self.subject = ""


class _Fired:
    """What one watch contributes to one report."""

    __slots__ = ("watch", "stuck_for", "ident", "reminder")

    def __init__(self, watch: Watch, stuck_for: float, ident: Optional[int], reminder: int) -> None:
        self.watch = watch
        self.stuck_for = stuck_for
        self.ident = ident
        self.reminder = reminder


class Watch:
    """One watched thread, loop or hub. Made by ``Watchdog.watch_*()``."""

    kind: str = ""

    def __init__(self, watchdog: Watchdog, threshold: float) -> None:
        self._watchdog = watchdog
        self._threshold = threshold
        self._hang: Optional[_Hang] = None
        self._cancelled = False

    @property
    def threshold(self) -> float:
        """Seconds of silence after which the watch fires."""
        return self._threshold

    @property
    def stuck(self) -> bool:
        """True from the moment this watch reports a hang until it recovers."""
        return self._hang is not None

    @property
    def cancelled(self) -> bool:
        """True after ``cancel()``, ``Watchdog.stop()``, or when the watched
        thread, loop or hub went away."""
        return self._cancelled

    def cancel(self) -> None:
        """Stops watching. Idempotent; never raises."""
        self._cancelled = True
        self._watchdog._remove(self)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    # The watcher's side. `_stuck_since` says since when the watched thing
    # has shown no sign of life (None: it is fine), `_due` when to look again.

    def _stuck_since(self, now: float) -> Optional[float]:
        raise NotImplementedError

    def _culprit_ident(self) -> Optional[int]:
        raise NotImplementedError

    def _subject(self, thread: str) -> str:
        raise NotImplementedError

    def _silence(self) -> str:
        raise NotImplementedError

    def _step(self, now: float, fired: List[_Fired]) -> float:
        """Looks at the watch once; returns when it next needs looking at."""
        since = self._stuck_since(now)
        hang = self._hang
        if hang is not None and since != hang.since:
            # Any sign of life since the hang began ends it.
            self._recovered(hang)
            self._hang = hang = None
        if since is None:
            return self._due(now)
        stuck_for = now - since
        if hang is None:
            if stuck_for >= self._threshold:
                self._hang = _Hang(since, now)
                fired.append(_Fired(self, stuck_for, self._culprit_ident(), 0))
                return self._next_reminder(now)
            return since + self._threshold
        reminder = self._watchdog._reminder
        if reminder is not None and now >= hang.reported_at + reminder:
            hang.reported_at = now
            hang.reports += 1
            fired.append(_Fired(self, stuck_for, self._culprit_ident(), hang.reports - 1))
        return self._next_reminder(now)

    def _next_reminder(self, now: float) -> float:
        # A sign of life wakes the watcher (see `_alive`), but one that comes
        # just before `_hang` is set does not: look again once per threshold
        # while the hang lasts, so its recovery is never missed.
        due = now + self._threshold
        reminder = self._watchdog._reminder
        if reminder is not None and self._hang is not None:
            due = min(due, self._hang.reported_at + reminder)
        return due

    def _due(self, now: float) -> float:
        raise NotImplementedError

    def _gone(self, frames: Dict[int, Any]) -> Optional[str]:
        """Why the watched thing no longer exists (None while it does);
        ``frames`` is ``sys._current_frames()``."""
        return None

    def _alive(self) -> None:
        """Called by the watched side on a sign of life; wakes the watcher only
        when a hang is being reported, so it can log the recovery at once."""
        if self._hang is not None:
            self._watchdog._wake_up()

    def _recovered(self, hang: _Hang) -> None:
        self._watchdog._log_recovery(self, hang.subject, self._recovered_after(hang))

    def _recovered_after(self, hang: _Hang) -> float:
        raise NotImplementedError


class Heartbeat(Watch):
    """A thread that must call ``beat()`` (or ``tbcollect.heartbeat()``) at
    least every ``threshold`` seconds; when it stops, its stack is dumped."""

    kind = THREAD_HEARTBEAT

    def __init__(self, watchdog: Watchdog, threshold: float, ident: int, name: str) -> None:
        super().__init__(watchdog, threshold)
        self._ident = ident
        self._name = name
        self._last = time.monotonic()

    @property
    def ident(self) -> int:
        """``threading.get_ident()`` of the watched thread."""
        return self._ident

    def beat(self) -> None:
        """Says the thread is alive. Costs one clock read; never raises."""
        self._last = time.monotonic()
        if self._hang is not None:
            self._alive()

    def _stuck_since(self, now: float) -> Optional[float]:
        last = self._last
        return last if now - last >= self._threshold or self._hang is not None else None

    def _due(self, now: float) -> float:
        return self._last + self._threshold

    def _culprit_ident(self) -> Optional[int]:
        return self._ident

    def _subject(self, thread: str) -> str:
        return thread

    def _silence(self) -> str:
        return "has not sent a heartbeat"

    def _recovered_after(self, hang: _Hang) -> float:
        return self._last - hang.since

    def _gone(self, frames: Dict[int, Any]) -> Optional[str]:
        if self._ident not in frames:
            return f"thread {self._name!r} (ident {self._ident}) has ended"
        return None

    def __repr__(self) -> str:
        return f"<tbcollect.Heartbeat thread {self._name!r} threshold={self._threshold}>"


class _PingWatch(Watch):
    """A loop or hub pinged from the watcher: a callback scheduled into it
    that must run within the threshold."""

    def __init__(self, watchdog: Watchdog, threshold: float, target: Any) -> None:
        super().__init__(watchdog, threshold)
        self._target = target
        self._interval = threshold * PING_FRACTION
        self._sent = 0
        # As if the last ping went out an interval ago: the first goes out at
        # once, and its answer tells which thread runs the loop.
        self._sent_at = time.monotonic() - self._interval
        self._answered = 0
        self._answered_at = self._sent_at
        self._ident: Optional[int] = None
        self._get_ident = watchdog._get_ident

    def _answer(self, seq: int) -> None:
        # Runs inside the watched loop or hub: stores, never raises.
        self._answered = seq
        self._answered_at = time.monotonic()
        self._ident = self._get_ident()
        if self._hang is not None:
            self._alive()

    def _ping(self, seq: int) -> None:
        raise NotImplementedError

    def _running(self) -> bool:
        """Whether it runs at all; raises ``_Gone`` once it never will again."""
        raise NotImplementedError

    def _stuck_since(self, now: float) -> Optional[float]:
        if self._answered == self._sent:
            if self._hang is not None:
                return None  # the recovery is logged before anything else happens
            if now >= self._sent_at + self._interval:
                if self._running():
                    self._sent += 1
                    self._sent_at = now
                    self._ping(self._sent)
                else:
                    self._sent_at = now
            return None
        if not self._running():
            # A stopped loop is not a blocked one: count from when it runs again.
            self._sent_at = now
            return None
        return self._sent_at

    def _due(self, now: float) -> float:
        if self._answered == self._sent:
            return self._sent_at + self._interval
        return self._sent_at + self._threshold

    def _culprit_ident(self) -> Optional[int]:
        return self._ident if self._ident is not None else self._known_ident()

    def _known_ident(self) -> Optional[int]:
        return None

    def _recovered_after(self, hang: _Hang) -> float:
        return self._answered_at - hang.since


class LoopWatch(_PingWatch):
    """An asyncio (or uvloop) event loop that must run a callback within
    ``threshold`` seconds; when it cannot, its thread's stack is dumped."""

    kind = EVENT_LOOP_LAG

    def _ping(self, seq: int) -> None:
        self._target.call_soon_threadsafe(self._answer, seq)

    def _running(self) -> bool:
        if self._target.is_closed():
            raise _Gone(f"loop 0x{id(self._target):x} is closed")
        return bool(self._target.is_running())

    def _known_ident(self) -> Optional[int]:
        # asyncio records the running thread; uvloop does not, and then only
        # an answered ping tells.
        ident = getattr(self._target, "_thread_id", None)
        return ident if isinstance(ident, int) else None

    def _subject(self, thread: str) -> str:
        return f"loop 0x{id(self._target):x} in {thread}"

    def _silence(self) -> str:
        return "has not run a callback"

    def _gone(self, frames: Dict[int, Any]) -> Optional[str]:
        if self._target.is_closed():
            return f"loop 0x{id(self._target):x} is closed"
        return None

    def __repr__(self) -> str:
        return f"<tbcollect.LoopWatch loop 0x{id(self._target):x} threshold={self._threshold}>"


class HubWatch(_PingWatch):
    """A gevent hub that must switch (run a callback) within ``threshold``
    seconds; when it cannot, the greenlet blocking it -- whatever runs in the
    hub's thread -- is dumped."""

    kind = GEVENT_HUB

    def _ping(self, seq: int) -> None:
        self._target.loop.run_callback_threadsafe(self._answer, seq)

    def _running(self) -> bool:
        if self._target.loop is None:
            raise _Gone(f"hub 0x{id(self._target):x} is destroyed")
        return True

    def _known_ident(self) -> Optional[int]:
        ident = getattr(self._target, "thread_ident", None)
        return ident if isinstance(ident, int) else None

    def _subject(self, thread: str) -> str:
        return f"hub 0x{id(self._target):x} in {thread}"

    def _silence(self) -> str:
        return "has not switched"

    def _gone(self, frames: Dict[int, Any]) -> Optional[str]:
        if self._target.loop is None:
            return f"hub 0x{id(self._target):x} is destroyed"
        ident = self._known_ident()
        if ident is not None and ident not in frames:
            return f"hub 0x{id(self._target):x}: its thread (ident {ident}) has ended"
        return None

    def __repr__(self) -> str:
        return f"<tbcollect.HubWatch hub 0x{id(self._target):x} threshold={self._threshold}>"


# Every heartbeat by thread ident, for `heartbeat()`. Replaced, never mutated,
# so readers need no lock.
_heartbeats: Dict[int, Tuple[Heartbeat, ...]] = {}
_live: weakref.WeakSet[Watchdog] = weakref.WeakSet()
_real_get_ident: Optional[Callable[[], int]] = None


def heartbeat() -> None:
    """Beats every heartbeat watch of the calling thread (a no-op without one)."""
    get_ident = _real_get_ident
    if get_ident is None:
        return
    for beat in _heartbeats.get(get_ident(), ()):
        beat.beat()


class Watchdog:
    """One watcher thread and the watches it serves. Made by ``tbcollect.watchdog()``."""

    def __init__(
        self,
        *,
        directory: Optional[PathArg] = None,
        format: str = "text",
        files: bool = True,
        log: Optional[logging.Logger] = None,
        reminder: Optional[float] = None,
        probes: Optional[PathArg] = None,
    ) -> None:
        global _real_get_ident
        _options.dump_file_format(format)
        self._reminder = None if reminder is None else _check_threshold("reminder", reminder)
        self._format = format
        self._directory = _dumpdir.resolve_directory(directory) if files else None
        self._log = _options.logger(log) or logger
        self._probes = Path(os.fspath(probes)) if probes is not None else None
        if self._probes is not None:
            _probes.check_probes(self._probes)  # an unsafe directory fails here, clearly
        allocate_lock, get_ident = _thread_primitives()
        self._get_ident = get_ident
        _real_get_ident = get_ident
        self._allocate_lock = allocate_lock
        self._lock = allocate_lock()  # guards _watches and _heartbeats
        self._watches: Tuple[Watch, ...] = ()
        # `_wake` is a binary semaphore: held while nobody asked the watcher
        # to look, released by whoever does. A raw lock works from any thread.
        self._wake = allocate_lock()
        self._wake.acquire()
        self._done = allocate_lock()
        self._done.acquire()
        self._stopping = False
        self._pid = os.getpid()
        self._reports = 0
        self._ident: Optional[int] = None
        _start_thread(self._run)
        _live.add(self)

    # -- watches ---------------------------------------------------------

    def watch_thread(
        self, thread: Any = None, *, threshold: float = 5.0, name: Optional[str] = None
    ) -> Heartbeat:
        """Watches a thread (default: the calling one) that promises to call
        ``beat()`` on the returned ``Heartbeat`` (or ``tbcollect.heartbeat()``
        in that thread) at least every ``threshold`` seconds."""
        threshold = _check_threshold("threshold", threshold)
        if thread is None:
            ident = self._get_ident()
            if name is None:
                import threading

                name = threading.current_thread().name
        else:
            maybe_ident = getattr(thread, "ident", None)
            if not isinstance(maybe_ident, int):
                raise InvalidOptionError(
                    f"invalid option thread: {thread!r} is not a started thread"
                )
            ident = maybe_ident
            if name is None:
                name = str(getattr(thread, "name", "") or ident)
        beat = Heartbeat(self, threshold, ident, name)
        self._add(beat)
        return beat

    def watch_loop(self, loop: Any = None, *, threshold: float = 5.0) -> LoopWatch:
        """Watches an asyncio event loop (default: the running one) that must
        run a scheduled callback within ``threshold`` seconds."""
        threshold = _check_threshold("threshold", threshold)
        if loop is None:
            import asyncio

            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise InvalidOptionError(
                    "invalid option loop: no loop given and none is running in this thread"
                ) from None
        if not callable(getattr(loop, "call_soon_threadsafe", None)):
            raise InvalidOptionError(f"invalid option loop: {loop!r} is not an event loop")
        if loop.is_closed():
            raise InvalidOptionError(f"invalid option loop: {loop!r} is closed")
        watch = LoopWatch(self, threshold, loop)
        self._add(watch)
        return watch

    def watch_hub(self, hub: Any = None, *, threshold: float = 5.0) -> HubWatch:
        """Watches a gevent hub (default: the calling thread's) that must
        switch -- run a scheduled callback -- within ``threshold`` seconds."""
        threshold = _check_threshold("threshold", threshold)
        if hub is None:
            try:
                import gevent
            except ImportError:
                raise InvalidOptionError("invalid option hub: gevent is not installed") from None
            hub = gevent.get_hub()
        loop = getattr(hub, "loop", None)
        if loop is None or not callable(getattr(loop, "run_callback_threadsafe", None)):
            raise InvalidOptionError(f"invalid option hub: {hub!r} is not a live gevent hub")
        watch = HubWatch(self, threshold, hub)
        self._add(watch)
        return watch

    @property
    def watches(self) -> List[Watch]:
        """The watches still active."""
        return list(self._watches)

    @property
    def running(self) -> bool:
        """True until ``stop()`` (or a fork, in the child)."""
        return not self._stopping

    @property
    def reports(self) -> int:
        """How many reports this watchdog has made (one report may cover
        several watches that fired together)."""
        return self._reports

    @property
    def directory(self) -> Optional[Path]:
        """Where reports are written (None with ``files=False``)."""
        return self._directory

    def _add(self, watch: Watch) -> None:
        if self._stopping:
            raise InvalidOptionError("invalid option watchdog: it is stopped")
        with self._lock:
            self._watches = (*self._watches, watch)
            if isinstance(watch, Heartbeat):
                _heartbeats[watch.ident] = (*_heartbeats.get(watch.ident, ()), watch)
        self._wake_up()

    def _remove(self, watch: Watch) -> None:
        try:
            with self._lock:
                self._watches = tuple(w for w in self._watches if w is not watch)
                if isinstance(watch, Heartbeat):
                    rest = tuple(b for b in _heartbeats.get(watch.ident, ()) if b is not watch)
                    if rest:
                        _heartbeats[watch.ident] = rest
                    else:
                        _heartbeats.pop(watch.ident, None)
        except Exception:
            pass

    # -- the watcher thread ----------------------------------------------

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Stops watching and joins the watcher thread; True once it has
        exited (False if ``timeout`` ran out first, e.g. mid-report)."""
        self._stopping = True
        for watch in self._watches:
            watch._cancelled = True
            self._remove(watch)
        self._wake_up()
        if os.getpid() != self._pid or self._get_ident() == self._ident:
            return True  # no thread to join in a forked child, nor from inside it
        if self._done.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._done.release()
            return True
        return False

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wake_up(self) -> None:
        try:
            self._wake.release()
        except Exception:
            pass  # already awake

    def _run(self) -> None:
        self._ident = self._get_ident()
        try:
            while not self._stopping:
                now = time.monotonic()
                fired: List[_Fired] = []
                due = math.inf
                for watch in self._watches:
                    try:
                        due = min(due, watch._step(now, fired))
                    except _Gone as e:
                        self._drop(watch, str(e))
                    except Exception:
                        self._drop(watch, "watching it failed", exc_info=True)
                if fired and not self._stopping:
                    try:
                        self._report(fired)
                    except Exception:
                        self._log.exception("tbcollect watchdog: a report failed")
                sleep = min(due - time.monotonic(), _MAX_SLEEP)
                if sleep > 0:
                    self._wake.acquire(timeout=sleep)
        except BaseException:
            # The last resort: a watchdog never takes the process down.
            try:
                self._log.exception("tbcollect watchdog: the watcher thread failed")
            except BaseException:
                pass
        finally:
            self._stopping = True
            self._done.release()

    def _drop(self, watch: Watch, why: str, exc_info: bool = False) -> None:
        watch._cancelled = True
        self._remove(watch)
        try:
            self._log.log(
                logging.ERROR if exc_info else logging.INFO,
                "tbcollect watchdog: %s: no longer watching %r: %s",
                watch.kind,
                watch,
                why,
                exc_info=exc_info,
            )
        except Exception:
            pass

    def _report(self, fired: List[_Fired]) -> None:
        frames = sys._current_frames()
        still: List[_Fired] = []
        for f in fired:
            try:
                gone = f.watch._gone(frames)
            except Exception as e:
                gone = f"cannot tell whether it is alive: {e}"
            if gone is None:
                still.append(f)
            else:
                self._drop(f.watch, gone)
        del frames
        if not still:
            return
        snapshot = collect()
        if self._probes is not None:
            try:
                results = _probes.run_probes(self._probes)
            except TbcollectError as e:
                results = [{"name": str(self._probes), "result": None, "error": str(e)}]
            snapshot = snapshot.with_probes(results)
        reports = [self._describe(f, snapshot) for f in still]
        headers = "\n".join(r["message"] for r in reports)
        dump = snapshot.to_text()
        text = f"{headers}\n\n{dump}"
        where: Optional[str] = None
        if self._directory is not None:
            if self._format == "json":
                data = json.loads(snapshot.to_json())
                data["watchdog"] = {"reports": reports}
                body = json.dumps(data, indent=2) + "\n"
            else:
                body = text if text.endswith("\n") else text + "\n"
            try:
                kinds = ", ".join(dict.fromkeys(r["watch"] for r in reports))
                path = _dumpdir.write_new_dump(
                    body, directory=self._directory, fmt=self._format, reason=f"watchdog: {kinds}"
                )
                where = f"(dump written to {path})"
            except (TbcollectError, OSError) as e:
                self._reports += 1
                self._log.warning("%s\n(no dump file: %s)\n\n%s", headers, e, dump)
                return
        self._reports += 1
        if where is None:
            # No file: the log is the only record, so it gets the whole dump.
            self._log.warning("%s\n\n%s", headers, dump)
            return
        # A server's error log gets a few lines, not the hundred of a dump:
        # what hangs, where it is stuck, and the file with the rest.
        stuck = [line for r in reports for line in _stuck_at(snapshot, r)]
        self._log.warning("%s\n%s", "\n".join([headers, *stuck]), where)

    def _describe(self, fired: _Fired, snapshot: Snapshot) -> Dict[str, Any]:
        watch = fired.watch
        ident = fired.ident
        culprit = f"thread:{ident}" if ident is not None else None
        thread = "an unknown thread (no ping answered yet)"
        if ident is not None:
            thread = f"thread (ident {ident})"
            for stack in snapshot.stacks:
                if stack.id == culprit:
                    thread = f'thread "{escape_text(stack.name)}" (ident {ident})'
                    break
        hang = watch._hang
        if hang is not None and not hang.subject:
            hang.subject = watch._subject(thread)
        message = (
            f"tbcollect watchdog: {watch.kind}: {watch._subject(thread)} {watch._silence()} "
            f"for {fired.stuck_for:.1f} s (threshold {watch.threshold:g} s)"
        )
        if isinstance(watch, HubWatch) and ident is not None:
            running = _hub_blockers(snapshot, ident)
            if running:
                blocker = running[0]
                name, gid = escape_text(blocker.name), escape_text(blocker.id)
                message += f'; blocked by greenlet "{name}" ({gid})'
        if fired.reminder:
            message += f"; still stuck (reminder {fired.reminder})"
        return {
            "watch": watch.kind,
            "message": message,
            "culprit": culprit,
            "stuck_for": round(fired.stuck_for, 3),
            "threshold": watch.threshold,
        }

    def _log_recovery(self, watch: Watch, subject: str, after: float) -> None:
        try:
            self._log.warning(
                "tbcollect watchdog: %s: %s recovered after %.1f s",
                watch.kind,
                subject or repr(watch),
                max(after, 0.0),
            )
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<tbcollect.Watchdog {state}, {len(self._watches)} watches>"


def watchdog(
    *,
    directory: Optional[PathArg] = None,
    format: str = "text",
    files: bool = True,
    log: Optional[logging.Logger] = None,
    reminder: Optional[float] = None,
    probes: Optional[PathArg] = None,
) -> Watchdog:
    """Starts a watchdog: one watcher thread, no watches yet.

    ``directory``: where reports are written (default: the private per-user
    dump directory, see ``tbcollect.install``); ``files=False`` only logs.
    ``format``: ``"text"`` or ``"json"`` for the report files (the log always
    gets text). ``log``: the logger (default ``tbcollect.watchdog``).
    ``reminder``: while a hang lasts, report it again every this many seconds
    (default: once per hang). ``probes``: a probes directory whose results
    are added to every report (see ``tbcollect.dump_all``); a probe that
    needs what the stuck thread holds would stall the watcher, so keep them
    simple.
    """
    return Watchdog(
        directory=directory,
        format=format,
        files=files,
        log=log,
        reminder=reminder,
        probes=probes,
    )


def _after_fork_in_child() -> None:
    """The watcher thread is gone in the child: mark every watchdog stopped,
    with fresh locks, since the parent's may have been held at the fork."""
    global _heartbeats
    _heartbeats = {}
    for wd in list(_live):
        try:
            wd._stopping = True
            wd._lock = wd._allocate_lock()
            wd._wake = wd._allocate_lock()
            wd._done = wd._allocate_lock()
            for watch in wd._watches:
                watch._cancelled = True
            wd._watches = ()
        except Exception:
            pass


def _stop_all_at_exit() -> None:
    for wd in list(_live):
        try:
            wd.stop(timeout=1.0)
        except Exception:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

import atexit  # noqa: E402  (kept beside its one use)

atexit.register(_stop_all_at_exit)


class _CallableModule(types.ModuleType):
    """``tbcollect.watchdog`` is this module, loaded on first use, and
    ``tbcollect.watchdog(...)`` starts a watchdog, however it was imported."""

    def __call__(
        self,
        *,
        directory: Optional[PathArg] = None,
        format: str = "text",
        files: bool = True,
        log: Optional[logging.Logger] = None,
        reminder: Optional[float] = None,
        probes: Optional[PathArg] = None,
    ) -> Watchdog:
        return watchdog(
            directory=directory,
            format=format,
            files=files,
            log=log,
            reminder=reminder,
            probes=probes,
        )


sys.modules[__name__].__class__ = _CallableModule

"""Send a dump to Sentry through the application's own ``sentry-sdk`` client.

>>> import sentry_sdk, tbcollect.sentry
>>> sentry_sdk.init(dsn="https://key@o0.ingest.sentry.io/0")
>>> event_id = tbcollect.sentry.capture(message="worker pool stuck")

The event carries Sentry's ``threads`` interface with one entry per stack
(thread, greenlet or asyncio task), so the issue page shows every stack with
its frames, source lines and (with ``locals=True``) variables. ``sentry-sdk``
is optional: it is imported only here, and only when this is called.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import types
from typing import Any, Dict, List, Optional, Tuple

import tbcollect
from tbcollect._errors import InvalidOptionError, MissingDependencyError

__all__ = ["capture", "event_from_snapshot"]

LEVELS = ("fatal", "error", "warning", "info", "debug")

#: Past this many stacks, identical ones are merged into one entry (and the
#: rest left out): Sentry drops events over its size limit (about 1 MB).
DEFAULT_MAX_STACKS = 500

_TITLES = {"thread": "Thread", "greenlet": "Greenlet", "task": "Task"}

# ModuleType's own `__dict__` getter: reads a module's namespace without
# going through a lazy module's `__getattribute__` (which would import it).
_MODULE_DICT: Any = vars(types.ModuleType)["__dict__"]


def _sentry_sdk() -> Any:
    try:
        import sentry_sdk
    except ImportError:
        raise MissingDependencyError(
            "tbcollect.sentry needs the sentry-sdk package (pip install sentry-sdk)"
        ) from None
    return sentry_sdk


class _Modules:
    """Module names for file paths: from ``sys.modules`` where a module has
    that file, else from the longest ``sys.path`` entry containing it."""

    def __init__(self) -> None:
        self.by_file: Dict[str, str] = {}
        for name, module in list(sys.modules.items()):
            if not issubclass(type(module), types.ModuleType):
                continue
            try:
                namespace = _MODULE_DICT.__get__(module, type(module))
            except Exception:
                continue
            file = namespace.get("__file__") if isinstance(namespace, dict) else None
            if isinstance(file, str) and file.endswith(".py"):
                self.by_file.setdefault(os.path.abspath(file), name)
        roots = {os.path.abspath(p or os.curdir) for p in sys.path if isinstance(p, str)}
        self.roots = sorted(roots, key=len, reverse=True)
        paths = sysconfig.get_paths()
        self.stdlib = tuple(
            os.path.join(os.path.abspath(paths[key]), "")
            for key in ("stdlib", "platstdlib")
            if paths.get(key)
        )

    def root_of(self, path: str) -> Optional[str]:
        for root in self.roots:
            if path.startswith(os.path.join(root, "")):
                return root
        return None

    def module(self, path: str) -> Optional[str]:
        if path in self.by_file:
            return self.by_file[path]
        root = self.root_of(path)
        if root is None or not path.endswith(".py"):
            return None
        parts = os.path.relpath(path, root)[: -len(".py")].split(os.sep)
        if parts[-1] == "__init__":
            parts.pop()
        return ".".join(parts) or None

    def is_library(self, path: str) -> bool:
        if path.startswith("<frozen"):
            return True
        parts = path.replace("\\", "/").split("/")
        if "site-packages" in parts or "dist-packages" in parts:
            return True
        return path.startswith(self.stdlib)


def _in_list(module: Optional[str], items: Any) -> bool:
    if not module or not items:
        return False
    return any(module == item or module.startswith(item + ".") for item in items)


def _frame(frame: Dict[str, Any], modules: _Modules, in_app_include: Any) -> Dict[str, Any]:
    abs_path = frame["filename"]
    is_file = not abs_path.startswith("<")
    path = os.path.abspath(abs_path) if is_file else abs_path
    module = modules.module(path) if is_file else None
    root = modules.root_of(path) if is_file else None
    out: Dict[str, Any] = {
        "filename": os.path.relpath(path, root) if root else abs_path,
        "abs_path": abs_path,
        "function": frame["function"],
    }
    if module:
        out["module"] = module
    if frame["lineno"] is not None:
        out["lineno"] = frame["lineno"]
    if frame.get("source"):
        out["context_line"] = frame["source"]
    if "locals" in frame:
        out["vars"] = dict(frame["locals"])
    # The application's own in_app_include wins; the standard library and
    # installed packages are not in the app; everything else is left for the
    # SDK to decide with its in_app_exclude and project_root options.
    if _in_list(module, in_app_include):
        out["in_app"] = True
    elif modules.is_library(path):
        out["in_app"] = False
    return out


def _entries(stacks: List[Dict[str, Any]], max_stacks: int) -> Tuple[List[Any], int]:
    """[(first stack, how many stacks it stands for)], and how many stacks were left out.

    Up to ``max_stacks`` every stack is its own entry; past it, stacks of one
    kind with the same frames share an entry, and entries past the limit go.
    """
    if len(stacks) <= max_stacks:
        return [(s, 1) for s in stacks], 0
    groups: Dict[Any, List[Any]] = {}
    for stack in stacks:
        key = (
            stack["kind"],
            stack["frames_omitted"],
            tuple((f["filename"], f["lineno"], f["function"]) for f in stack["frames"]),
        )
        groups.setdefault(key, [stack, 0])[1] += 1
    merged = [(first, n) for first, n in groups.values()]
    kept = merged[:max_stacks]
    return kept, sum(n for _, n in merged[max_stacks:])


def event_from_snapshot(
    snapshot: tbcollect.Snapshot,
    *,
    message: str = "tbcollect dump",
    level: str = "info",
    max_stacks: int = DEFAULT_MAX_STACKS,
    in_app_include: Any = None,
) -> Dict[str, Any]:
    """The Sentry event ``capture()`` sends: a message plus the ``threads`` interface."""
    if level not in LEVELS:
        raise InvalidOptionError(
            f"invalid option level: {level!r} is not one of {', '.join(LEVELS)}"
        )
    if max_stacks < 1:
        raise InvalidOptionError(f"invalid option max_stacks: must be at least 1, got {max_stacks}")
    data = snapshot.to_dict()
    modules = _Modules()
    entries, omitted = _entries(data["stacks"], max_stacks)
    threads = []
    for stack, count in entries:
        name = f'{_TITLES[stack["kind"]]} "{stack["name"]}"'
        if count > 1:
            name += f" and {count - 1} more with this stack"
        entry: Dict[str, Any] = {
            "id": stack["id"],
            "name": name,
            "crashed": False,
            "current": bool(stack.get("current")),
            "main": stack["kind"] == "thread" and stack["name"] == "MainThread",
            "state": stack["state"],
        }
        if stack["frames"]:  # Sentry wants no empty stacktrace (a task not started yet)
            entry["stacktrace"] = {
                "frames": [_frame(f, modules, in_app_include) for f in stack["frames"]]
            }
        threads.append(entry)
    counts = {kind: 0 for kind in _TITLES}
    for stack in data["stacks"]:
        counts[stack["kind"]] += 1
    return {
        "message": message,
        "level": level,
        "logger": "tbcollect",
        "threads": {"values": threads},
        "extra": {
            "tbcollect": {
                "summary": snapshot.summary(),
                "schema": data["schema"],
                "pid": data["pid"],
                "created": data["created"],
                "counts": counts,
                "errors": data["errors"],
                "stacks_left_out": omitted,
            }
        },
    }


def capture(
    snapshot: Optional[tbcollect.Snapshot] = None,
    *,
    message: str = "tbcollect dump",
    level: str = "info",
    client: Any = None,
    hub: Any = None,
    max_stacks: int = DEFAULT_MAX_STACKS,
    **collect_options: Any,
) -> Optional[str]:
    """Send one event with every stack to Sentry; returns its event id.

    ``snapshot`` defaults to ``tbcollect.collect(**collect_options)`` taken
    now (``locals=True`` adds each frame's variables as Sentry ``vars``).
    The event goes through the current sentry-sdk scope and client, or the
    given ``client`` (sentry-sdk 2) or ``hub`` (sentry-sdk 1). Returns None
    when the SDK did not send it (no DSN configured, sampled out, dropped by
    ``before_send``).
    """
    sentry_sdk = _sentry_sdk()
    if client is not None and hub is not None:
        raise InvalidOptionError("invalid option client: give a client or a hub, not both")
    if snapshot is None:
        snapshot = tbcollect.collect(**collect_options)
    elif collect_options:
        raise InvalidOptionError(
            f"invalid option {next(iter(collect_options))}: collect options need snapshot=None"
        )
    options = getattr(client, "options", None)
    if options is None:
        current = client or _current_client(sentry_sdk, hub)
        options = getattr(current, "options", None) or {}
    event = event_from_snapshot(
        snapshot,
        message=message,
        level=level,
        max_stacks=max_stacks,
        in_app_include=options.get("in_app_include") if isinstance(options, dict) else None,
    )
    if hub is not None:
        return hub.capture_event(event)  # type: ignore[no-any-return]
    if client is not None:
        if hasattr(sentry_sdk, "new_scope"):
            with sentry_sdk.new_scope() as scope:
                scope.set_client(client)
                return scope.capture_event(event)  # type: ignore[no-any-return]
        return sentry_sdk.Hub(client).capture_event(event)  # type: ignore[no-any-return]
    return sentry_sdk.capture_event(event)  # type: ignore[no-any-return]


def _current_client(sentry_sdk: Any, hub: Any) -> Any:
    if hub is not None:
        return getattr(hub, "client", None)
    if hasattr(sentry_sdk, "get_client"):  # sentry-sdk 2
        return sentry_sdk.get_client()
    return sentry_sdk.Hub.current.client

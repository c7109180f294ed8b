"""The ``tbcollect`` command line (also ``python -m tbcollect``).

- ``tbcollect dump PID``: ask a running process for a dump and print it;
- ``tbcollect run [options] [--] program args...``: run a program with the
  dump handler installed (``script.py``, ``-m module`` or ``python ...``);
- ``tbcollect render DUMP.json``: re-render a saved JSON dump.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import List, Optional, Set, Tuple

import tbcollect
from tbcollect import _dumpdir, _procinfo, _request
from tbcollect._live import DEFAULT_RAW_TIMEOUT, DEFAULT_SIGNAL, parse_signal
from tbcollect._tbcollect import write_dump

# Exit codes of `tbcollect dump` (argparse uses 2 for usage errors).
EXIT_ERROR = 1
EXIT_NO_PROCESS = 3
EXIT_NOT_PERMITTED = 4
EXIT_NO_HANDLER = 5
EXIT_DIRECTORY = 6
EXIT_TIMEOUT = 7
EXIT_REMOTE = 8

INSTALL_HINT = (
    "install the handler with tbcollect.install() in the program, "
    "or start it with TBCOLLECT=1 in its environment or with `python -m tbcollect run`"
)


class CliError(Exception):
    """One line for the user, and the exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------
# render


def _load(path: str) -> tbcollect.Snapshot:
    """A saved dump; errors name the file, so `diff A B` says which one is bad."""
    try:
        return tbcollect.load(path)
    except tbcollect.InvalidDumpError as e:
        if path in str(e):
            raise
        raise tbcollect.InvalidDumpError(f"{path}: {e}") from None


def _has_locals(*snapshots: tbcollect.Snapshot) -> bool:
    return any(f.locals is not None for snap in snapshots for s in snap.stacks for f in s.frames)


def _emit(text: str, output: Optional[str], private: bool = False) -> None:
    if not text.endswith("\n"):
        text += "\n"
    if output is None or output == "-":
        sys.stdout.write(text)
    else:
        write_dump(text, path=output, private=private)


def _render(args: argparse.Namespace) -> int:
    snapshot = _load(args.dump)
    text = snapshot.render(args.format, group=not args.no_group, indent=args.indent)
    _emit(text, args.output, private=_has_locals(snapshot))
    return 0


def _diff(args: argparse.Namespace) -> int:
    a, b = _load(args.a), _load(args.b)
    text = tbcollect.diff(a, b).render(args.format, indent=args.indent)
    _emit(text, args.output, private=_has_locals(a, b))
    return 0


# ---------------------------------------------------------------------------
# dump


def _wait_for_dump(
    target: _procinfo.Process, directory: Path, before: Set[Path], timeout: float
) -> Optional[Path]:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            new = [p for p in _dumpdir.list_dumps(directory, target.own_pid) if p not in before]
        except FileNotFoundError:
            new = []
        except OSError as e:
            raise CliError(
                f"cannot read dump directory {directory}: {e.strerror or e}", EXIT_DIRECTORY
            ) from None
        if new:
            return new[0]
        if not target.alive():
            raise CliError(f"process {target.pid} exited before writing a dump", EXIT_NO_PROCESS)
        if time.monotonic() >= deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _write_out(text: str, fmt: str) -> None:
    """Prints what a target sent, its control characters escaped."""
    text = _request.printable(text, fmt)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def _print_dump(path: Path, owner: int, timeout: float) -> None:
    try:
        data = _request.read_dump_file(str(path), owner, timeout)
    except OSError as e:
        raise CliError(f"refusing to read the dump: {e.strerror or e}", EXIT_DIRECTORY) from None
    _write_out(data.decode("utf-8", "replace"), "json" if path.suffix == ".json" else "text")


def _check_may_signal(pid: int, uid: int, sig: int = 0) -> None:
    """Sends ``sig`` (0: only checks that we may)."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise CliError(f"no such process: {pid}", EXIT_NO_PROCESS) from None
    except PermissionError:
        raise CliError(
            f"not permitted to signal process {pid} (uid {uid}): run as its user or as root",
            EXIT_NOT_PERMITTED,
        ) from None


def _status(target: _procinfo.Process) -> _procinfo.Status:
    if not Path("/proc/self/status").exists():
        raise CliError("tbcollect dump reads /proc, which this system does not have (Linux only)")
    try:
        status = target.status()
    except PermissionError:
        raise CliError(
            f"not permitted to inspect process {target.pid}", EXIT_NOT_PERMITTED
        ) from None
    if status is None:
        raise CliError(f"no such process: {target.pid}", EXIT_NO_PROCESS)
    return status


def _not_permitted(pid: int, uid: int) -> CliError:
    if uid == os.geteuid():
        # The kernel's ptrace access check guards /proc/PID/fd and exe: a
        # process with capabilities we lack (root without CAP_SYS_PTRACE, as
        # in a container) or one not dumpable.
        return CliError(
            f"not permitted to read /proc/{pid}/fd although process {pid} runs as this user: "
            "it has capabilities this command lacks (give it CAP_SYS_PTRACE: "
            "docker run --cap-add SYS_PTRACE), it is not dumpable (prctl PR_SET_DUMPABLE) "
            "or ptrace is restricted; run as root with CAP_SYS_PTRACE",
            EXIT_NOT_PERMITTED,
        )
    return CliError(
        f"not permitted to ask process {pid} (uid {uid}) for a dump: run as its user or as root",
        EXIT_NOT_PERMITTED,
    )


def _ask(
    pid: int, args: argparse.Namespace, fmt: Optional[str], remote: bool = True
) -> Tuple[str, str, bool]:
    """One process's dump as (text, format, raw): through its channel, else
    (3.14+, ``remote``) through ``sys.remote_exec``."""
    target = _procinfo.Process(pid)
    status = _status(target)
    if status.uid != os.geteuid() and os.geteuid() != 0:
        raise _not_permitted(pid, status.uid)
    try:
        name = _request.find_channel(pid, target.own_pid)
    except PermissionError:
        raise _not_permitted(pid, status.uid) from None
    except FileNotFoundError:
        raise CliError(f"no such process: {pid}", EXIT_NO_PROCESS) from None
    if name is not None:
        try:
            answer = _request.request_dump(pid, name, fmt, args.timeout)
        except _request.RequestError as e:
            code = {
                "denied": EXIT_NOT_PERMITTED,
                "timeout": EXIT_TIMEOUT,
                "gone": EXIT_NO_PROCESS if not target.alive() else EXIT_ERROR,
            }.get(e.kind, EXIT_ERROR)
            raise CliError(f"process {pid}: {e}", code) from None
        except OSError as e:
            if not target.alive():
                raise CliError(f"process {pid} exited", EXIT_NO_PROCESS) from None
            raise CliError(f"process {pid}: the channel failed: {e}") from None
        return answer.data.decode("utf-8", "replace"), answer.format, answer.raw

    beacons = target.beacons() or []
    from tbcollect import _remote

    version = _remote.target_version(pid)
    if version is not None and version >= (3, 14) and remote and not args.no_remote:
        try:
            text = _remote.remote_dump(target, status.uid, fmt or "text", args.timeout)
        except _remote.RemoteError as e:
            # A child forked from C still runs Python, so sys.remote_exec
            # can dump it; when it cannot, say first why there was no channel.
            inherited = _inherited_handler(pid, beacons, status.parent)
            if inherited is not None:
                raise CliError(
                    f"{inherited}. sys.remote_exec was tried instead: {e}. {INHERITED_FIX}",
                    e.code,
                ) from None
            raise CliError(f"process {pid}: {e}", e.code) from None
        return text, fmt or "text", False
    _refuse_inherited_handler(pid, beacons, status.parent)
    if beacons:
        sig = beacons[-1].signal
        raise CliError(
            f"process {pid} has a tbcollect handler on {sig} but no request channel (an older "
            f"tbcollect?); nothing was sent. To signal it anyway: tbcollect dump {pid} "
            f"--signal {sig}",
            EXIT_NO_HANDLER,
        )
    where = (
        f" (it runs Python {version[0]}.{version[1]}: on 3.14+ tbcollect dumps it without "
        "preparation)"
        if version is not None and version < (3, 14)
        else ""
    )
    if version is not None and version >= (3, 14):
        where = " (--no-remote: not dumped through sys.remote_exec)"
    raise CliError(
        f"process {pid} has no tbcollect channel{where}; nothing was sent. To fix: " + INSTALL_HINT,
        EXIT_NO_HANDLER,
    )


INHERITED_FIX = (
    "To fix: run uWSGI with --py-call-osafterfork, or install in a @postfork function "
    "(docs/integrations.md, uWSGI)"
)


def _inherited_handler(pid: int, beacons: List[_procinfo.Beacon], parent: int) -> Optional[str]:
    """Why a process has a tbcollect handler but no channel, when that
    handler is its parent's very one (the same beacon memfd): a child that
    ran Python's at-fork hooks, or installed since, advertises one of its own."""
    if not beacons or parent <= 1:
        return None
    theirs = {b.inode for b in _procinfo.Process(parent).beacons() or []}
    inherited = next((b for b in beacons if b.inode in theirs), None)
    if inherited is None:
        return None
    return (
        f"process {pid} inherited its parent's ({parent}) tbcollect handler on "
        f"{inherited.signal} through a fork from C that skipped Python's at-fork hooks (a "
        "uWSGI worker without --py-call-osafterfork), and has not called tbcollect since: "
        "it has no request channel and no dumper, so neither a request nor the signal "
        "would dump it"
    )


def _refuse_inherited_handler(pid: int, beacons: List[_procinfo.Beacon], parent: int) -> None:
    inherited = _inherited_handler(pid, beacons, parent)
    if inherited is not None:
        raise CliError(f"{inherited}; nothing was sent. {INHERITED_FIX}", EXIT_NO_HANDLER)


def _label(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"pid {pid}"
    command = " ".join(os.fsdecode(a) for a in raw.split(b"\0") if a)
    return f"pid {pid}: {_request.printable(command[:200])}"


def _dump(args: argparse.Namespace) -> int:
    if not 0 < args.timeout <= 3600:
        raise CliError(f"--timeout must be between 0 and 3600 seconds, got {args.timeout}", 2)
    if args.signal is not None:
        if args.children or args.no_remote or args.format is not None:
            raise CliError(
                "--signal sends a signal and prints the file the process writes, as it writes "
                "it: it cannot be combined with --format, --children or --no-remote, which ask "
                "through the channel",
                2,
            )
        return _dump_by_signal(args)
    if args.directory is not None:
        raise CliError("--directory only goes with --signal (the channel writes no file)", 2)
    fmt = args.format
    if args.children and fmt == "svg":
        raise CliError(
            "--children makes one output of many processes: svg draws one (dump "
            "each process on its own for its flamegraph)",
            2,
        )
    if not args.children:
        text, got, raw = _ask(args.pid, args, fmt)
        _write_out(text, got)
        if raw:
            print(
                f"tbcollect: raw dump of process {args.pid}: a thread holds the GIL, so only "
                "faulthandler's stacks could be read",
                file=sys.stderr,
            )
        return 0

    # The root first: its errors (no such process, not permitted) are the command's.
    pids = [args.pid, *_procinfo.descendants(args.pid)]
    failures = 0
    for i, pid in enumerate(pids):
        try:
            # Descendants are dumped only through their channels: a helper
            # process is not sent a script it did not ask for.
            text, got, raw = _ask(pid, args, fmt, remote=i == 0)
        except CliError as e:
            if i == 0:
                raise
            if e.code in (EXIT_NO_HANDLER, EXIT_NO_PROCESS):
                # Only descendants with a channel are dumped (a shell, a
                # helper process that exited meanwhile).
                continue
            failures += 1
            print(f"tbcollect: error: {e}", file=sys.stderr)
            continue
        # Text sections get a header line; JSON dumps are one line each
        # (JSON Lines), labelled by their own "pid".
        if got != "json" or raw:
            sys.stdout.write(f"==> {_label(pid)} <==\n")
        _write_out(text, got)
        if raw:
            print(f"tbcollect: raw dump of process {pid}: a thread holds the GIL", file=sys.stderr)
    return EXIT_ERROR if failures else 0


def _dump_by_signal(args: argparse.Namespace) -> int:
    """The old way, for a process whose tbcollect has no channel: signal it
    and read the file it writes. Refused unless the process advertises a
    tbcollect handler on that very signal."""
    asked = parse_signal(args.signal)
    target = _procinfo.Process(args.pid)
    status = _status(target)
    _check_may_signal(args.pid, status.uid)
    beacons = target.beacons()
    if beacons is None:
        raise _not_permitted(args.pid, status.uid)
    if not beacons:
        raise CliError(
            f"process {args.pid} advertises no tbcollect handler on {asked.name}; nothing was "
            "sent (its handler may have been replaced). To fix: " + INSTALL_HINT,
            EXIT_NO_HANDLER,
        )
    _refuse_inherited_handler(args.pid, beacons, status.parent)
    beacon = beacons[-1]
    sig = parse_signal(beacon.signal)
    if asked != sig:
        raise CliError(
            f"process {args.pid} dumps on {sig.name}, not {asked.name}; nothing was sent",
            EXIT_NO_HANDLER,
        )
    if not status.catches(sig):
        raise CliError(
            f"process {args.pid} does not catch {sig.name}; nothing was sent", EXIT_NO_HANDLER
        )
    directory, seen = target.dump_directory(None, beacon.directory)
    if args.directory is not None:
        given = Path(os.path.abspath(args.directory))
        if given not in (directory, seen):
            raise CliError(
                f"process {args.pid} writes its dumps to {_request.printable(str(directory))}, "
                f"not {given}; nothing was sent (drop --directory)",
                EXIT_DIRECTORY,
            )
    try:
        before = set(_dumpdir.list_dumps(seen, target.own_pid))
    except FileNotFoundError:
        before = set()
    except OSError as e:
        raise CliError(
            f"cannot read dump directory {seen}: {e.strerror or e} "
            f"(run as the user of process {args.pid}, uid {status.uid}, or as root)",
            EXIT_DIRECTORY,
        ) from None
    if seen.exists():
        try:
            tbcollect._tbcollect.check_dump_directory(str(seen), owner=status.uid)
        except tbcollect.DumpDirectoryError as e:
            raise CliError(str(e), EXIT_DIRECTORY) from None
    _check_may_signal(args.pid, status.uid, sig)
    started = time.monotonic()
    path = _wait_for_dump(target, seen, before, args.timeout)
    if path is None:
        raise CliError(
            f"no dump from process {args.pid} in {directory} within {args.timeout:g} s "
            f"after {sig.name}: its handler did not answer (is the process stopped?)",
            EXIT_TIMEOUT,
        )
    left = max(0.5, args.timeout - (time.monotonic() - started))
    _print_dump(path, status.uid, left)
    note = " (raw dump: the process holds the GIL)" if _dumpdir.is_raw_dump(path) else ""
    print(f"tbcollect: dump of process {args.pid} saved in {path}{note}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------
# run

# `run -- python app.py` (py-spy's convention) names the interpreter: ours,
# since the program runs in this process.
_PYTHON_NAME = re.compile(r"python(?:(\d)(?:\.(\d+))?)?")


def _program(args: argparse.Namespace) -> Tuple[Optional[str], Optional[str], List[str]]:
    """(script, module, the program's arguments) from ``run``'s command line."""
    if args.module:
        return None, args.module[0], list(args.module[1:])
    words = list(args.program)
    if words[:1] == ["--"]:
        words = words[1:]
    python = _PYTHON_NAME.fullmatch(os.path.basename(words[0])) if words else None
    if python is not None:
        major, minor = python.groups()
        if (major and int(major) != sys.version_info[0]) or (
            minor and int(minor) != sys.version_info[1]
        ):
            args.parser.error(
                f"argument program: {words[0]} is not this interpreter "
                f"(Python {sys.version_info[0]}.{sys.version_info[1]}); "
                f"run tbcollect with {words[0]} instead"
            )
        words = words[1:]
        if words[:1] == ["-m"]:
            if len(words) < 2:
                args.parser.error("argument -m: expected one argument")
            return None, words[1], words[2:]
        if words and words[0].startswith("-"):
            args.parser.error(
                f"argument program: the python option {words[0]} is not supported "
                "(give a script or -m module)"
            )
    if not words:
        args.parser.error("give a program to run: script.py, -m module or python script.py")
    return words[0], None, words[1:]


def _run(args: argparse.Namespace) -> int:
    """Runs the program as ``python script.py args`` or ``python -m module
    args`` would, in this process, with the handler installed."""
    script, module, rest = _program(args)

    import runpy

    if script is not None and not os.path.isfile(script):
        raise CliError(f"cannot run {script}: no such file", 2)
    if module is not None:
        import importlib.util

        sys.path[0] = os.getcwd()  # as `python -m` does
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError) as e:
            found, why = None, str(e)
        else:
            why = f"no module named {module!r}"
        if found is None:
            raise CliError(f"cannot run -m {module}: {why}")

    tbcollect.install(
        args.signal,
        directory=args.directory,
        format=args.format,
        raw_timeout=None if args.raw_timeout == 0 else args.raw_timeout,
    )
    if module is not None:
        sys.argv = [module, *rest]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        assert script is not None
        sys.argv = [script, *rest]
        # As `python script.py`: the script's directory comes first on the path
        # (in place of ours: the current directory, or the console script's).
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        runpy.run_path(script, run_name="__main__")
    return 0


def _signal_arg(value: str) -> str:
    """argparse type of --signal: a catchable signal's name or number."""
    try:
        return parse_signal(value).name
    except tbcollect.InvalidOptionError as e:
        raise argparse.ArgumentTypeError(str(e).replace("invalid option signum: ", "")) from None


def _raw_timeout_arg(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 <= seconds < 86400:
        raise argparse.ArgumentTypeError("must be 0 (no raw dumps) or up to 86400 seconds")
    return seconds


def _timeout_arg(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {value}")
    return seconds


def _add_install_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--signal",
        default=DEFAULT_SIGNAL,
        type=_signal_arg,
        help="signal to dump on (default SIGQUIT)",
    )
    parser.add_argument(
        "--format", default="text", choices=["text", "json"], help="dump format (default: text)"
    )
    parser.add_argument(
        "--directory", default=None, help="dump directory (default: see docs/operations.md)"
    )
    parser.add_argument(
        "--raw-timeout",
        type=_raw_timeout_arg,
        default=DEFAULT_RAW_TIMEOUT,
        help="seconds to wait for the GIL before a raw dump (0: never; "
        f"default {DEFAULT_RAW_TIMEOUT:g})",
    )


# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tbcollect",
        description="What is every thread, greenlet and asyncio task doing right now?",
    )
    parser.add_argument("--version", action="version", version=f"tbcollect {tbcollect.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    dump = commands.add_parser(
        "dump",
        help="print a dump of a running process, in any format",
        description="Ask a running process for a dump of every thread, greenlet and task, "
        "and print it. A process with tbcollect installed (install(), TBCOLLECT=1 or "
        "`tbcollect run`) answers through its own request channel: no signal is sent, so "
        "nothing else in the process can take the request for something else. A process "
        "on CPython 3.14+ without tbcollect is dumped through sys.remote_exec. "
        "Exit codes: 1 error, 2 usage, 3 no such process, 4 not permitted, "
        "5 no tbcollect channel, 6 dump directory, 7 no answer in time, 8 remote dump failed.",
    )
    dump.add_argument("pid", type=int, help="process id")
    dump.add_argument(
        "--format",
        default=None,
        choices=tbcollect.FORMATS,
        help="text, json, collapsed or svg (default: the format of its dump files)",
    )
    dump.add_argument(
        "--timeout", type=_timeout_arg, default=10.0, help="seconds to wait (default 10)"
    )
    dump.add_argument(
        "--children",
        "--tree",
        action="store_true",
        help="also dump every descendant process that has tbcollect (a server's workers), "
        "one section per process",
    )
    dump.add_argument(
        "--no-remote",
        action="store_true",
        help="never use sys.remote_exec (3.14+) for a process without tbcollect",
    )
    dump.add_argument(
        "--signal",
        default=None,
        type=_signal_arg,
        help="the old way, for a process whose tbcollect has no channel: send this signal "
        "(it must be the one its handler advertises) and print the file it writes",
    )
    dump.add_argument(
        "--directory",
        default=None,
        help="with --signal: the dump directory the process advertises (checked, not trusted)",
    )
    dump.set_defaults(run=_dump)

    run = commands.add_parser(
        "run",
        help="run a program with the dump handler installed",
        usage="tbcollect run [options] [--] (script.py | -m module | python ...) [args ...]",
        description="Run a Python program in this process, as python would, with the dump "
        "handler installed (then `tbcollect dump PID` or `kill -QUIT PID` dumps it).",
    )
    _add_install_options(run)
    run.add_argument(
        "-m",
        dest="module",
        nargs=argparse.REMAINDER,
        metavar="module",
        help="run a module as python -m does; what follows is its arguments",
    )
    run.add_argument(
        "program",
        nargs=argparse.REMAINDER,
        help="script.py and its arguments, or python script.py / python -m module ...",
    )
    run.set_defaults(run=_run, parser=run)

    render = commands.add_parser("render", help="re-render a saved JSON dump")
    render.add_argument("dump", help="path of a tbcollect/1 JSON dump")
    render.add_argument(
        "--format",
        default="text",
        choices=tbcollect.FORMATS,
        help="output format (default: text; svg draws a flamegraph)",
    )
    render.add_argument("--indent", type=int, default=None, help="JSON indent")
    render.add_argument("--no-group", action="store_true", help="one block per stack")
    render.add_argument(
        "-o", "--output", default=None, help="write here (atomically) instead of stdout"
    )
    render.set_defaults(run=_render)

    diff = commands.add_parser(
        "diff",
        help="compare two JSON dumps: unchanged (stuck?), moved, appeared, disappeared",
    )
    diff.add_argument("a", help="the earlier dump (tbcollect/1 JSON)")
    diff.add_argument("b", help="the later dump (tbcollect/1 JSON)")
    diff.add_argument("--format", default="text", choices=["text", "json"])
    diff.add_argument("--indent", type=int, default=None, help="JSON indent")
    diff.add_argument(
        "-o", "--output", default=None, help="write here (atomically) instead of stdout"
    )
    diff.set_defaults(run=_diff)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        return int(args.run(args))
    except CliError as e:
        print(f"tbcollect: error: {e}", file=sys.stderr)
        return e.code
    except tbcollect.TbcollectError as e:
        print(f"tbcollect: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

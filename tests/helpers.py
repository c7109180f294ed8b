"""The one module of shared test helpers, imported as ``from tests.helpers import ...``.

Schema validation of every JSON dump; target programs in subprocesses and the
CLI; real event loops in real threads. Synchronization is by events, lines and
loop turns; every timeout here is a hang guard that stops a hung test, never a
judgement of speed.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, Coroutine, Dict, List, Optional, Sequence, TypeVar

import jsonschema
import pytest
import tbcollect
from tbcollect import _dumpdir

# Generous: it only stops a hung test, it never judges speed.
HANG_GUARD = 60.0

T = TypeVar("T")


# JSON dumps and snapshots

SCHEMA_PATH = Path(tbcollect.__file__).with_name("schema.json")
SCHEMA = json.loads(SCHEMA_PATH.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
ROOT = Path(__file__).resolve().parent.parent


def validate_json(text: str) -> Dict[str, Any]:
    """Parses a JSON dump and validates it against the published schema."""
    data = json.loads(text)
    errors = sorted(VALIDATOR.iter_errors(data), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    return data


def check_snapshot(snapshot: tbcollect.Snapshot) -> Dict[str, Any]:
    """Validates a snapshot's JSON and checks it agrees with to_dict()."""
    data = validate_json(snapshot.to_json())
    assert data == snapshot.to_dict()
    ids = [s["id"] for s in data["stacks"]]
    assert len(ids) == len(set(ids)), "stack ids must be unique within a snapshot"
    return data


def stacks_of(snapshot: tbcollect.Snapshot, kind: str) -> List[tbcollect.Stack]:
    return [s for s in snapshot.stacks if s.kind == kind]


def functions(stack: tbcollect.Stack) -> List[str]:
    return [f.function for f in stack.frames]


def run_python(
    code_or_path: str, *args: str, timeout: float = 60, env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess:
    """Runs a target program with this interpreter; returns the finished process."""
    cmd = [sys.executable]
    cmd += [code_or_path] if code_or_path.endswith(".py") else ["-c", code_or_path]
    full_env = dict(os.environ, PYTHONFAULTHANDLER="1")
    full_env.update(env or {})
    return subprocess.run(
        cmd + list(args), capture_output=True, text=True, timeout=timeout, env=full_env
    )


# Live processes and the CLI


def wait_until(check: Callable[[], Optional[T]], what: str, timeout: float = HANG_GUARD) -> T:
    """Polls ``check`` until it returns something truthy; fails the test
    (hang guard) when that never happens."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"hang guard: gave up waiting for {what}")
        time.sleep(0.02)


def base_env(directory: Optional[Path] = None, **extra: str) -> Dict[str, str]:
    # TBCOLLECT_FASTPATHS stays: `make test-nofast` runs the targets without them too.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TBCOLLECT") or k == "TBCOLLECT_FASTPATHS"
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"
    if directory is not None:
        env["TBCOLLECT_DIR"] = str(directory)
    env.update(extra)
    return env


class Target:
    """A Python program in a subprocess that talks line by line on stdin and
    stdout. Killed at the end of the ``with`` block if still running."""

    def __init__(
        self,
        code: str,
        *,
        args: Sequence[str] = (),
        env: Optional[Dict[str, str]] = None,
        argv: Optional[List[str]] = None,
        pass_fds: Sequence[int] = (),
        cwd: Optional[Path] = None,
        preexec_fn: Optional[Callable[[], None]] = None,
    ) -> None:
        cmd = argv if argv is not None else [sys.executable, "-c", textwrap.dedent(code), *args]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env if env is not None else base_env(),
            pass_fds=tuple(pass_fds),
            cwd=cwd,
            preexec_fn=preexec_fn,
        )
        self.pid = self.proc.pid
        self._buffer = b""
        self.lines: List[str] = []

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(HANG_GUARD)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def readline(self, timeout: float = HANG_GUARD) -> str:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"hang guard: no line from the target; stderr: {self.stderr_now()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    pytest.fail(
                        f"the target exited (rc={self.proc.wait(HANG_GUARD)}) "
                        f"before a line; stderr: {self.stderr_now()}"
                    )
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        text = line.decode()
        self.lines.append(text)
        return text

    def expect(self, prefix: str) -> str:
        """The next line starting with ``prefix`` (other lines are skipped)."""
        while True:
            line = self.readline()
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]

    def ask(self, line: str, answer_prefix: str) -> str:
        self.send(line)
        return self.expect(answer_prefix)

    def stderr_now(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace")  # type: ignore[union-attr]

    def finish(self, timeout: float = HANG_GUARD) -> tuple[int, str, str]:
        """Closes stdin and waits for the exit: (returncode, rest of stdout, stderr)."""
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, (self._buffer + out).decode(), err.decode()


def dumps_of(directory: Path, pid: int) -> List[Path]:
    if not directory.exists():
        return []
    return _dumpdir.list_dumps(directory, pid)


def temporaries(directory: Path) -> List[str]:
    return [n for n in os.listdir(directory) if n.startswith(".")]


def wait_for_dumps(directory: Path, pid: int, count: int = 1) -> List[Path]:
    return wait_until(
        lambda: (lambda found: found if len(found) >= count else None)(dumps_of(directory, pid)),
        f"{count} dump file(s) of pid {pid} in {directory}",
    )


def cli(*args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """``python -m tbcollect ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "tbcollect", *args],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD * 2,
        env=env if env is not None else base_env(),
    )


def console_script() -> Optional[str]:
    """The installed ``tbcollect`` console script of this interpreter's environment."""
    candidate = Path(sys.executable).with_name("tbcollect")
    return str(candidate) if candidate.exists() else shutil.which("tbcollect")


def inherited_disposition(sig: int) -> signal.Handlers:
    """What a child process of this one starts with for ``sig``: an ignored
    signal stays ignored across exec (a background job of a shell without job
    control, as CI often runs, starts with SIGINT and SIGQUIT ignored); any
    other is the default."""
    return signal.SIG_IGN if signal.getsignal(sig) == signal.SIG_IGN else signal.SIG_DFL


def send_signal(pid: int, sig: int = signal.SIGQUIT) -> None:
    os.kill(pid, sig)


# A target that installs the handler, runs a worker thread and an event loop
# with a task, and answers "ping" with "pong" from the loop (proof that the
# process and its loop keep running after dumps).
LOOP_TARGET = """
import asyncio, os, sys, threading, time
import tbcollect

tbcollect.install(format=sys.argv[1])

def worker_loop():
    while True:
        time.sleep(0.05)

threading.Thread(target=worker_loop, name="worker", daemon=True).start()

async def heartbeat():
    while True:
        await asyncio.sleep(0.05)

async def serve():
    loop = asyncio.get_running_loop()
    beat = asyncio.ensure_future(heartbeat())
    queue = asyncio.Queue()
    loop.add_reader(sys.stdin.fileno(), lambda: queue.put_nowait(sys.stdin.readline()))
    print("ready", os.getpid(), flush=True)
    while True:
        line = (await queue.get()).strip()
        if line == "ping":
            print("pong", flush=True)
        elif line in ("", "quit"):
            beat.cancel()
            return

asyncio.run(serve())
print("bye", flush=True)
"""


# Event loops in threads (asyncio tests)


async def settle(turns: int = 20) -> None:
    """Lets every ready task run until it suspends: `turns` loop iterations."""
    for _ in range(turns):
        await asyncio.sleep(0)


class LoopThread:
    """An event loop running forever in a thread of its own."""

    def __init__(
        self,
        factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
        name: str = "loop-thread",
    ) -> None:
        self.loop = factory()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()
        assert self._ready.wait(HANG_GUARD), "the loop thread did not start"
        assert self.thread.ident is not None
        self.ident: int = self.thread.ident

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs `coro` on the loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(HANG_GUARD)

    def call(self, fn: Callable[[], T]) -> T:
        """Calls `fn` in the loop's thread (outside any task) and returns its result."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def close(self) -> None:
        async def cancel_all() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        if self.loop.is_running():
            self.run(cancel_all())
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(HANG_GUARD)
        assert not self.thread.is_alive(), "the loop thread did not stop"
        if hasattr(self.loop, "shutdown_default_executor"):
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()

    def __enter__(self) -> LoopThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def task_stacks(snapshot: tbcollect.Snapshot) -> Dict[str, tbcollect.Stack]:
    """Task stacks by name (the scenarios name every task they care about)."""
    return {s.name: s for s in snapshot.stacks if s.kind == "task"}


def task_id(task: asyncio.Task[Any]) -> str:
    return f"task:{id(task):#x}"


def loop_id(loop: asyncio.AbstractEventLoop) -> str:
    return f"loop:{id(loop):#x}"


def short(stack: tbcollect.Stack) -> List[str]:
    """Function names without qualification (3.9/3.10 frames have no qualname)."""
    return [f.function.rsplit(".", 1)[-1] for f in stack.frames]


def frame_name(qualname: str) -> str:
    """A function as frames name it: code objects carry `co_qualname` from
    3.11 on; before, frames only know the bare `co_name`."""
    return qualname if sys.version_info >= (3, 11) else qualname.rsplit(".", 1)[-1]


async def forever() -> None:
    await asyncio.sleep(3600)


# Servers (gunicorn, uvicorn, celery) in subprocesses, on loopback

APPS = ROOT / "tests" / "integrations" / "apps"


def free_port() -> int:
    """A loopback port free right now (the server binds it a moment later)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server in a subprocess, in a process group of its own, its output in
    ``log``; the whole group is stopped (TERM, then KILL) after the ``with``
    block. HOME is ``home``, so nothing lands in the real home directory
    (gunicorn 25+ puts a control socket there)."""

    def __init__(
        self, argv: Sequence[str], *, log: Path, home: Path, env: Dict[str, str], cwd: Path = APPS
    ) -> None:
        self.log = log
        home.mkdir(parents=True, exist_ok=True)
        env = dict(env, HOME=str(home))
        env.pop("XDG_RUNTIME_DIR", None)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        self.pid = self.proc.pid

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(10)
                # Workers may outlive the master for a moment.
                os.killpg(self.pid, signal.SIGKILL)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                continue
            return

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, what: str, count: int = 1) -> List[str]:
        """The first group (or whole match) of the first ``count`` matches of
        ``pattern`` in the output, once there are that many."""
        import re

        regex = re.compile(pattern)

        def found() -> Optional[List[str]]:
            if self.proc.poll() is not None and len(regex.findall(self.output())) < count:
                pytest.fail(f"the server exited ({self.proc.returncode}):\n{self.output()[-3000:]}")
            matches = [
                m.group(1) if m.groups() else m.group(0) for m in regex.finditer(self.output())
            ]
            return matches[:count] if len(matches) >= count else None

        return wait_until(found, what)

    def gunicorn_workers(self, count: int = 1) -> List[int]:
        return [int(p) for p in self.wait_for(r"Booting worker with pid: (\d+)", "workers", count)]


def http_get(
    port: int, path: str, headers: Optional[Dict[str, str]] = None, timeout: float = HANG_GUARD
) -> tuple[int, Dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of a GET on loopback."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        conn.close()


def wait_http(port: int, path: str = "/ping") -> None:
    """Waits until the server answers ``path``."""

    def answers() -> bool:
        try:
            return http_get(port, path, timeout=5)[0] == 200
        except OSError:
            return False

    wait_until(answers, f"an answer on port {port}")


def open_requests(port: int, path: str, count: int) -> List[Any]:
    """Sends ``count`` GET requests without reading the answers; the sockets
    stay open (in flight) until closed."""
    import socket

    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        socks.append(s)
    return socks


def need(*modules: str) -> None:
    """Skips the test when a module is not installed, without importing it
    into the test process (gevent there would add greenlets to every later
    dump of the test process)."""
    import importlib.util

    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed", allow_module_level=True)


# Containers without an engine: PID and mount namespaces


def namespaces_permitted() -> bool:
    """Whether this process may make PID and mount namespaces (``unshare``)
    and enter them (``nsenter``)."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"],
        capture_output=True,
        timeout=HANG_GUARD,
        stdin=subprocess.DEVNULL,
    )
    return probe.returncode == 0


def as_pid_1(*argv: str) -> List[str]:
    """``argv`` run as PID 1 of a new PID namespace with its own ``/proc``,
    as a container runs its entry point."""
    return ["unshare", "--pid", "--fork", "--mount-proc", "--", *argv]


def children(pid: int) -> List[int]:
    """The pids of the children of ``pid`` (all its threads')."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def in_namespace(
    host_pid: int, *argv: str, env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess:
    """``argv`` run inside the PID and mount namespaces of ``host_pid``:
    where ``kubectl exec`` and ``docker exec`` put a command."""
    return subprocess.run(
        ["nsenter", "-t", str(host_pid), "-p", "-m", "--", *argv],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD * 2,
        env=env if env is not None else base_env(),
        stdin=subprocess.DEVNULL,
    )

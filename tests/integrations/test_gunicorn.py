"""tbcollect.gunicorn against a real gunicorn: every worker class dumps on
its signal without restarting, and a worker the arbiter aborts for its
--timeout leaves a dump naming what it was doing, also with the GIL held in C."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from tbcollect import _dumpdir

from tests.helpers import (
    Server,
    base_env,
    dumps_of,
    free_port,
    http_get,
    need,
    open_requests,
    validate_json,
    wait_http,
    wait_until,
)

need("gunicorn")

# worker class -> (the -k argument and its options, the app)
WORKERS = {
    "sync": (["-k", "sync"], "wsgiapp:app"),
    "gthread": (["-k", "gthread", "--threads", "4"], "wsgiapp:app"),
    "gevent": (["-k", "gevent"], "wsgiapp:app"),
    "uvicorn": (["-k", "uvicorn.workers.UvicornWorker"], "asgiapp:app"),
}


def gunicorn(tmp_path: Path, worker: str, *options: str, **env: str) -> Server:
    if worker == "gevent":
        need("gevent")
    if worker == "uvicorn":
        need("uvicorn")
    klass, app = WORKERS[worker]
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:tbcollect.gunicorn"]
    argv += ["-b", f"127.0.0.1:{port}", "-w", "1", *klass, *options, app]
    server = Server(
        argv,
        log=tmp_path / "gunicorn.log",
        home=tmp_path / "home",
        env=base_env(tmp_path / "dumps", **env),
    )
    server.port = port  # type: ignore[attr-defined]
    return server


def running(data: Dict[str, Any], function: str) -> List[Dict[str, Any]]:
    """The stacks of a JSON dump that are in ``function``."""
    return [s for s in data["stacks"] if any(f["function"] == function for f in s["frames"])]


def dump_until(directory: Path, pid: int, function: str, count: int) -> Dict[str, Any]:
    """Asks worker ``pid`` for JSON dumps (SIGURG) until one has ``count``
    stacks in ``function``; returns that dump."""

    def dumped() -> Optional[Dict[str, Any]]:
        before = set(dumps_of(directory, pid))
        os.kill(pid, signal.SIGURG)
        new = wait_until(lambda: set(dumps_of(directory, pid)) - before, f"a dump of {pid}")
        data = validate_json(max(new).read_text())
        return data if len(running(data, function)) >= count else None

    return wait_until(dumped, f"{count} stacks in {function} in a dump of {pid}")


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_every_worker_class_dumps_on_its_signal_and_keeps_serving(tmp_path, worker):
    dumps = tmp_path / "dumps"
    with gunicorn(tmp_path, worker, TBCOLLECT_FORMAT="json") as server:
        (pid,) = server.gunicorn_workers()
        server.wait_for(rf"tbcollect: worker {pid} dumps to {dumps} on SIGURG", "the log line")
        wait_http(server.port)
        in_flight = 1 if worker == "sync" else 3
        socks = open_requests(server.port, "/slow?60", in_flight)
        try:
            data = dump_until(dumps, pid, "slow_request", in_flight)
        finally:
            for s in socks:
                s.close()
        assert data["reason"] == "signal SIGURG"
        assert data["pid"] == pid
        # tbcollect's own threads are named and marked own in every worker
        # class, gevent's monkey-patched one included.
        threads = [s for s in data["stacks"] if s["kind"] == "thread"]
        own = sorted(s["name"] for s in threads if s.get("own"))
        assert "tbcollect-dumper" in own, own
        assert not [s["name"] for s in threads if s["name"].startswith("Dummy-")], threads
        assert not [s["name"] for s in threads if "not known to threading" in s["name"]]
        # The worker was neither stopped nor restarted: SIGQUIT, USR1, ... are
        # still gunicorn's, and the dump signal is not one of them.
        os.kill(pid, 0)
        output = server.output()
        assert output.count("Booting worker") == 1, output
        assert "Handling signal" not in output, output
        if worker != "sync":  # the sync worker is still busy with its request
            assert http_get(server.port, "/ping")[0] == 200


@pytest.mark.parametrize("worker", ["sync", "gevent"])
def test_worker_timed_out_holding_the_gil_in_c_leaves_a_raw_dump(tmp_path, worker):
    dumps = tmp_path / "dumps"
    with gunicorn(tmp_path, worker, "--timeout", "3") as server:
        (pid,) = server.gunicorn_workers()
        wait_http(server.port)
        socks = open_requests(server.port, "/hang", 1)
        try:
            (path,) = server.wait_for(
                rf"tbcollect: SIGABRT: raw dump of process {pid} written to (\S+)",
                "the raw dump's log line",
            )
        finally:
            for s in socks:
                s.close()
        output = server.output()
    assert f"WORKER TIMEOUT (pid:{pid})" in output
    assert Path(path).parent == dumps
    assert _dumpdir.is_raw_dump(path)
    text = Path(path).read_text()
    assert f"reason: SIGABRT sent by process {server.pid}" in text
    # The thread that holds the GIL is the one the signal interrupted.
    current = text[text.index("\nCurrent thread 0x") + 1 :]
    assert "in hang_in_c" in current.split("\n\n")[0], text
    assert text.rstrip().endswith("end of raw dump")


@pytest.mark.parametrize(
    "worker, path, function",
    [("sync", "/slow?60", "slow_request"), ("uvicorn", "/block?60", "blocking_call")],
)
def test_worker_timed_out_with_the_gil_free_gets_a_full_dump(tmp_path, worker, path, function):
    dumps = tmp_path / "dumps"
    with gunicorn(tmp_path, worker, "--timeout", "3") as server:
        (pid,) = server.gunicorn_workers()
        wait_http(server.port)
        socks = open_requests(server.port, path, 1)
        try:
            (full,) = server.wait_for(
                rf"tbcollect: stacks of timed-out worker {pid}: (\S+)", "worker_abort's dump"
            )
        finally:
            for s in socks:
                s.close()
        # gunicorn's own abort handling went on: the worker exited and was replaced.
        server.gunicorn_workers(2)
    text = Path(full).read_text()
    assert _dumpdir.reason_of(text).startswith(
        f"gunicorn worker_abort: the arbiter aborts worker {pid}"
    )
    assert f"in {function}" in text
    assert not _dumpdir.is_raw_dump(full)
    # The watchdog, set below the timeout, reported the hang first.
    reports = [p.read_text() for p in dumps_of(dumps, pid)]
    assert any("watchdog" in (_dumpdir.reason_of(r) or "") and function in r for r in reports), [
        _dumpdir.reason_of(r) for r in reports
    ]
    # ... and told gunicorn's log in a few lines where, not the whole dump.
    log = server.output().splitlines()
    (at,) = [i for i, line in enumerate(log) if "tbcollect watchdog: thread heartbeat:" in line]
    assert log[at + 1].startswith("  stuck in ") and function in log[at + 1], log[at : at + 3]
    assert log[at + 2].startswith(f"(dump written to {dumps}/tbcollect-{pid}-"), log[at : at + 3]
    assert "Diagnosis" not in server.output()

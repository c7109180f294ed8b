"""TBCOLLECT=1 uvicorn: every worker of a --workers N server, on the asyncio
loop and on uvloop, dumps its requests in flight through `tbcollect dump`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import (
    Server,
    base_env,
    cli,
    frame_name,
    free_port,
    http_get,
    need,
    open_requests,
    wait_http,
    wait_until,
)

need("uvicorn")
IN_FLIGHT = 20


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_tbcollect_1_uvicorn_workers_dump_their_requests(tmp_path: Path, loop: str):
    if loop == "uvloop":
        need("uvloop")
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "asgiapp:app", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", "2", "--loop", loop]
    env = base_env(tmp_path / "dumps", TBCOLLECT="1")
    with Server(argv, log=tmp_path / "uvicorn.log", home=tmp_path / "home", env=env) as server:
        workers = [
            int(p) for p in server.wait_for(r"Started server process \[(\d+)\]", "workers", 2)
        ]
        wait_http(port)
        socks = open_requests(port, "/slow?120", IN_FLIGHT)
        try:

            def dumps():
                texts = []
                for pid in workers:
                    done = cli("dump", str(pid), env=base_env(tmp_path / "dumps"))
                    assert done.returncode == 0, done.stderr
                    texts.append(done.stdout)
                return texts if _tasks_in_slow(texts) >= IN_FLIGHT else None

            texts = wait_until(dumps, f"{IN_FLIGHT} requests in the workers' dumps")
        finally:
            for s in socks:
                s.close()
        for pid, text in zip(workers, texts):
            assert text.startswith(f"tbcollect: pid {pid} ")
        # The kernel spreads connections unevenly: some worker has them.
        run_asgi = frame_name("RequestResponseCycle.run_asgi")
        assert any(f"in {run_asgi}" in text for text in texts)
        # Dumping never stopped or restarted a worker.
        assert http_get(port, "/ping")[0] == 200
        assert len(server.wait_for(r"Started server process \[(\d+)\]", "workers", 2)) == 2
        assert "Shutting down" not in server.output()


def _tasks_in_slow(texts):
    # Identical stacks are grouped: "N tasks with this same stack".
    import re

    total = 0
    for text in texts:
        for block in text.split("\n\n"):
            if "in slow_request" in block:
                m = re.search(r"^(\d+) tasks with this same stack", block, re.M)
                total += int(m.group(1)) if m else block.count("Task ")
    return total

"""``tbcollect dump --children``: a gunicorn master started with
``TBCOLLECT=1`` and its workers, dumped through their channels while they
serve, and nothing is stopped or restarted."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Dict

import pytest
from tbcollect import _request

from tests.helpers import (
    Server,
    base_env,
    cli,
    dumps_of,
    free_port,
    http_get,
    open_requests,
    wait_http,
    wait_until,
)

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the channel is Linux only"),
]
pytest.importorskip("gunicorn")

SECTION = re.compile(r"^==> pid (\d+): (.*) <==$", re.M)


def sections(text: str) -> Dict[int, str]:
    heads = list(SECTION.finditer(text))
    out = {}
    for head, after in zip(heads, heads[1:] + [None]):
        end = after.start() if after is not None else len(text)
        out[int(head[1])] = text[head.end() : end]
    return out


@pytest.mark.parametrize("worker", ["sync", "gevent"])
def test_children_dumps_a_gunicorn_master_and_its_workers_without_harm(tmp_path, worker):
    if worker == "gevent":
        pytest.importorskip("gevent")
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "2"]
    argv += ["-k", worker, "--graceful-timeout", "5", "wsgiapp:app"]
    dumps = tmp_path / "dumps"
    env = base_env(dumps, TBCOLLECT="1")
    with Server(argv, log=tmp_path / "gunicorn.log", home=tmp_path / "home", env=env) as server:
        master = server.pid
        # At once, as the master starts: the moment a signal used to stop it.
        wait_until(lambda: _request.find_channel(master, master), "the master's channel")
        early = cli("dump", str(master))
        assert early.returncode == 0, early.stderr
        assert early.stdout.startswith(f"tbcollect: pid {master} at ")

        workers = server.gunicorn_workers(2)
        wait_http(port)
        busy = open_requests(port, "/slow?60", 1)
        try:
            for pid in workers:
                wait_until(lambda pid=pid: _request.find_channel(pid, pid), "a worker's channel")
            result = cli("dump", str(master), "--children", "--timeout", "30")
            assert result.returncode == 0, result.stderr
            found = sections(result.stdout)
            assert set(found) == {master, *workers}, result.stdout[:2000]
            for pid, text in found.items():
                assert text.lstrip("\n").startswith(f"tbcollect: pid {pid} at "), text[:300]
            assert "Arbiter.run" in found[master] or "arbiter.py" in found[master]
            assert any("slow_request" in found[pid] for pid in workers)

            as_json = cli("dump", str(master), "--children", "--format", "json")
            assert as_json.returncode == 0, as_json.stderr
            docs = [json.loads(line) for line in as_json.stdout.splitlines()]
            assert {d["pid"] for d in docs} == {master, *workers}
        finally:
            for s in busy:
                s.close()
        # The master keeps serving; no worker was stopped or restarted.
        assert http_get(port, "/ping")[0] == 200
        for pid in workers:
            os.kill(pid, 0)
        output = server.output()
        assert output.count("Booting worker") == 2, output
        assert "Handling signal" not in output, output
        assert "Worker exiting" not in output, output
    # Nothing was written to the dump directory: the channel answers in place.
    assert all(dumps_of(dumps, pid) == [] for pid in [master, *workers])


def test_children_with_svg_is_a_usage_error():
    result = cli("dump", str(os.getpid()), "--children", "--format", "svg")
    assert result.returncode == 2
    assert "svg draws one" in result.stderr

"""The uWSGI recipe (docs/integrations.md) against a real uWSGI: a master
and two workers on loopback, tbcollect installed in a ``@postfork`` function;
``tbcollect dump WORKER`` asks each worker over tbcollect's channel (no
signal reaches uWSGI's own handlers) and finds the request it serves."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import List

import pytest

from tests.helpers import Server, base_env, cli, free_port, open_requests, wait_http, wait_until

need_binary = shutil.which("uwsgi", path=str(Path(sys.executable).parent))
if need_binary is None:
    pytest.skip(
        "uWSGI is not installed (pip install uwsgi builds it from source: it needs a C "
        "compiler, the Python headers and a shared libpython; the Makefile tries it)",
        allow_module_level=True,
    )
UWSGI = need_binary


def uwsgi(tmp_path: Path, module: str, *options: str, **env: str) -> Server:
    port = free_port()
    argv = [UWSGI, "--master", "--processes", "2", "--enable-threads", "--die-on-term"]
    argv += ["--http-socket", f"127.0.0.1:{port}", "--module", module]
    # The venv of this interpreter (where tbcollect is): uWSGI embeds the
    # base Python and finds packages only through its home.
    argv += ["--virtualenv", sys.prefix, *options]
    server = Server(
        argv,
        log=tmp_path / "uwsgi.log",
        home=tmp_path / "home",
        env=base_env(None, TMPDIR=str(tmp_path), **env),
    )
    server.port = port  # type: ignore[attr-defined]
    return server


def workers(server: Server) -> List[int]:
    return [int(p) for p in server.wait_for(r"spawned uWSGI worker \d+ \(pid: (\d+)", "workers", 2)]


RECIPE = "uwsgi_app:app"  # the postfork recipe
PLAIN = "wsgiapp:app"  # no tbcollect in the code

# How the app is loaded, and what the master did first:
SETUPS = {
    # the master imports the app, and forks the workers (uWSGI's default)
    "preload": (RECIPE, [], {}),
    # each worker imports the app after the fork: @postfork would be too late
    "lazy-apps": (RECIPE, ["--lazy-apps"], {}),
    # the master has tbcollect installed already (TBCOLLECT=1): uWSGI forks
    # from C, so Python's at-fork hooks never run in the workers, which hold
    # the master's installation when the recipe installs again
    "master-installed": (RECIPE, [], {"TBCOLLECT": "1", "TBCOLLECT_SIGNAL": "URG"}),
    # no code at all: uWSGI runs Python's at-fork hooks when told to, and
    # each worker then gets an installation of its own
    "osafterfork": (
        PLAIN,
        ["--py-call-osafterfork"],
        {"TBCOLLECT": "1", "TBCOLLECT_SIGNAL": "URG"},
    ),
}


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_each_worker_dumps_the_request_it_serves(tmp_path, setup):
    module, options, env = SETUPS[setup]
    with uwsgi(tmp_path, module, *options, **env) as server:
        pids = workers(server)
        wait_http(server.port)
        # Each worker has one core: a worker busy with a slow request takes
        # no other, so two requests in flight keep both workers busy.
        socks = open_requests(server.port, "/slow?60", 2)
        try:
            for pid in pids:

                def serving(pid: int = pid) -> str:
                    result = cli("dump", str(pid))
                    # 5 (no channel): the postfork function has not run yet.
                    assert result.returncode in (0, 5), (result.stderr, server.output()[-3000:])
                    return result.stdout if "in slow_request" in result.stdout else ""

                text = wait_until(serving, f"worker {pid} serving /slow")
                assert text.startswith(f"tbcollect: pid {pid} at ")
                assert "reason: request from tbcollect dump" in text
                if setup == "master-installed":
                    # The master's thread states, left out unread (no crash).
                    assert "thread states of threads this process does not have" in text, text
        finally:
            for s in socks:
                s.close()
        output = server.output()
        # No signal reached uWSGI: no worker was reloaded or respawned.
        assert output.count("spawned uWSGI worker") == 2, output
        assert "respawn" not in output and "reload" not in output.lower(), output
        for pid in pids:
            os.kill(pid, 0)
    assert "Traceback" not in output and "panicked" not in output, output


def test_workers_without_the_flag_or_the_recipe_are_refused_with_the_reason(tmp_path):
    """``TBCOLLECT=1`` in the master, no ``--py-call-osafterfork`` and no
    code: the workers inherit the master's handler but none of its threads.
    ``tbcollect dump WORKER`` sends nothing, says why and what to change,
    and the master itself is dumped as usual."""
    env = {"TBCOLLECT": "1", "TBCOLLECT_SIGNAL": "URG"}
    with uwsgi(tmp_path, PLAIN, **env) as server:
        pids = workers(server)
        wait_http(server.port)
        for pid in pids:
            result = cli("dump", str(pid))
            assert result.returncode == 5, result.stderr
            assert "inherited its parent's" in result.stderr, result.stderr
            assert "--py-call-osafterfork" in result.stderr and "@postfork" in result.stderr
            os.kill(pid, 0)
        master = server.pid
        result = cli("dump", str(master))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"tbcollect: pid {master} at ")
        output = server.output()
    assert output.count("spawned uWSGI worker") == 2, output

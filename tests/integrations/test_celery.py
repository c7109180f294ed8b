"""tbcollect.celery against a real Celery worker on the filesystem transport:
the process running a task dumps it on SIGURG whatever the pool, and a task
past its soft time limit leaves a dump showing where it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tbcollect import _dumpdir

from tests.helpers import (
    APPS,
    HANG_GUARD,
    Server,
    base_env,
    dumps_of,
    need,
    wait_until,
)

need("celery")


def env_for(tmp_path: Path) -> dict:
    for sub in ("queue", "processed"):
        (tmp_path / "celery" / sub).mkdir(parents=True, exist_ok=True)
    return base_env(tmp_path / "dumps", CELERY_DATA=str(tmp_path / "celery"))


def worker(tmp_path: Path, pool: str) -> Server:
    argv = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-P", pool]
    argv += ["-c", "1", "--loglevel", "INFO", "--without-mingle", "--without-gossip"]
    log, home = tmp_path / "worker.log", tmp_path / "home"
    return Server(argv, log=log, home=home, env=env_for(tmp_path))


def send(tmp_path: Path, task: str, *args: object) -> None:
    code = f"from celery_app import {task}; {task}.delay(*{args!r})"
    subprocess.run(
        [sys.executable, "-c", code],
        cwd=APPS,
        env=env_for(tmp_path),
        check=True,
        timeout=HANG_GUARD,
    )


@pytest.mark.parametrize("pool", ["prefork", "threads", "gevent", "solo"])
def test_the_process_running_a_task_dumps_it(tmp_path, pool):
    if pool == "gevent":
        need("gevent")
    dumps = tmp_path / "dumps"
    with worker(tmp_path, pool) as w:
        w.wait_for(r"ready\.", "the worker")
        send(tmp_path, "slow_task", 120)
        (pid,) = [int(p) for p in w.wait_for(r"slow_task running in (\d+)", "the task")]
        if pool == "prefork":
            assert pid != w.pid
        w.wait_for(rf"tbcollect: process {pid} dumps to {dumps} on SIGURG", "the install")
        os.kill(pid, signal.SIGURG)
        (path,) = wait_until(lambda: dumps_of(dumps, pid), f"a dump of {pid}")
        text = path.read_text()
        assert _dumpdir.reason_of(text) == "signal SIGURG"
        assert "in slow_task" in text
        # The worker goes on: Celery's own signals were not touched.
        os.kill(pid, 0)
        assert "Warm shutdown" not in w.output() and "Cold shutdown" not in w.output()


def test_a_task_past_its_soft_time_limit_leaves_a_dump(tmp_path):
    # Celery enforces soft time limits in the prefork pool only.
    with worker(tmp_path, "prefork") as w:
        w.wait_for(r"ready\.", "the worker")
        send(tmp_path, "soft_limited", 60)
        (pid,) = [int(p) for p in w.wait_for(r"soft_limited running in (\d+)", "the task")]
        (path,) = w.wait_for(r"exceeded its soft time limit[^;]*; stacks in (\S+)", "the dump")
        w.wait_for(r"SoftTimeLimitExceeded", "the task's failure")
    text = Path(path).read_text()
    reason = _dumpdir.reason_of(text)
    assert reason.startswith("celery soft time limit: task celery_app.soft_limited["), reason
    assert Path(path).name.startswith(f"tbcollect-{pid}-")
    # Made when the limit hit: the task is still in its sleep (tbcollect's
    # own handler frames on top are left out of the dump).
    stack = text[text.index('Thread "MainThread"') :].split("\n\n")[0]
    assert stack.rstrip().endswith("time.sleep(seconds)"), stack
    assert "in soft_limited" in stack

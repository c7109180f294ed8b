"""Audit hooks during capture.

Capture reads what Python code would read, and the interpreter raises audit
events for two of those reads: `sys._current_frames` and, on 3.11+,
`object.__getattr__` for a coroutine's `cr_frame` when its frame object does
not exist yet (tbcollect reads existing frame objects from the struct). The
events are left visible to audit tooling on purpose; what matters is that a
hook that refuses them cannot break the host: nothing escapes `collect()`,
and what could not be read is reported in `errors`.

Audit hooks cannot be removed, so each case runs in its own interpreter.
"""

from __future__ import annotations

import json

from tests.helpers import run_python

TARGET = r"""
import asyncio, json, sys, tbcollect

seen = []
refuse = sys.argv[1] == "refuse"
armed = False

def hook(event, args):
    if not armed or event not in ("sys._current_frames", "object.__getattr__"):
        return
    seen.append(event)
    if refuse:
        raise RuntimeError("audit: refused " + event)

sys.addaudithook(hook)

async def sleeper():
    await asyncio.sleep(100)

async def main():
    global armed
    tasks = [asyncio.create_task(sleeper(), name=f"sleeper-{i}") for i in range(3)]
    await asyncio.sleep(0)
    armed = True
    try:
        snap = tbcollect.collect()
    finally:
        armed = False
    names = sorted(s.name for s in snap.stacks if s.kind == "task")
    print(json.dumps({"errors": snap.errors, "tasks": names, "seen": sorted(set(seen)),
                      "text": "sleeper" in snap.to_text()}))
    for t in tasks:
        t.cancel()

asyncio.run(main())
"""


def run(mode: str) -> dict:
    proc = run_python(TARGET, mode)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_hooks_see_the_reads_capture_makes() -> None:
    result = run("watch")
    assert "sys._current_frames" in result["seen"]
    assert result["errors"] == []
    assert result["tasks"] == ["Task-1", "sleeper-0", "sleeper-1", "sleeper-2"]


def test_a_refusing_hook_costs_stacks_not_the_host() -> None:
    result = run("refuse")
    # The refusal is contained and reported; the tasks are still listed.
    assert any("_current_frames" in e for e in result["errors"]), result["errors"]
    assert result["tasks"] == ["Task-1", "sleeper-0", "sleeper-1", "sleeper-2"]
    assert result["text"] is True

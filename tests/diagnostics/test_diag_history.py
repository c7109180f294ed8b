"""keep_history(): stacks unchanged since an earlier dump say since when."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest
import tbcollect

from tests.helpers import LOOP_TARGET, Target, base_env, check_snapshot, cli, wait_for_dumps


def _parked(name: str, release: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=release.wait, name=name, daemon=True)
    thread.start()
    return thread


def test_unchanged_since_the_first_dump_it_was_seen_in():
    release = threading.Event()
    thread = _parked("parked", release)
    was = tbcollect.keep_history(True)
    try:
        first = tbcollect.collect()
        second = tbcollect.collect()
        third = tbcollect.collect()
    finally:
        tbcollect.keep_history(was)
        release.set()
        thread.join()
    ident = f"thread:{thread.ident}"
    if not was:
        # History may already be on from an install() in this process; if
        # not, the first sighting is unmarked.
        assert {s.id: s for s in first.stacks}[ident].unchanged_since is None
    by_id = {s.id: s for s in third.stacks}
    assert by_id[ident].unchanged_since is not None
    assert by_id[ident].unchanged_since <= second.created
    data = check_snapshot(third)
    finding = [f for f in data["diagnosis"]["findings"] if f["kind"] == "unchanged"]
    assert finding and ident in finding[0]["stacks"]
    assert "unchanged since an earlier dump" in third.to_text()


def test_without_history_nothing_is_marked():
    was = tbcollect.keep_history(False)
    try:
        snap = tbcollect.collect()
        snap = tbcollect.collect()
    finally:
        tbcollect.keep_history(was)
    assert all(s.unchanged_since is None for s in snap.stacks)
    assert not [f for f in snap.diagnosis["findings"] if f["kind"] == "unchanged"]


def test_keep_history_says_whether_it_was_on():
    was = tbcollect.keep_history(True)
    try:
        assert tbcollect.keep_history(True) is True
        assert tbcollect.keep_history(False) is True
        assert tbcollect.keep_history(False) is False
    finally:
        tbcollect.keep_history(was)


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_unchanged_since_across_three_signal_dumps_and_their_diff(tmp_path):
    with Target(LOOP_TARGET, args=["json"], env=base_env(tmp_path)) as target:
        pid = int(target.expect("ready"))
        paths = []
        for n in range(1, 4):
            os.kill(pid, signal.SIGQUIT)
            paths = wait_for_dumps(tmp_path, pid, n)
            assert target.ask("ping", "pong") == ""
        target.send("quit")
        assert target.finish()[0] == 0
    dumps = [tbcollect.load(p) for p in paths]
    for snap in dumps:
        check_snapshot(snap)
    workers = [{s.name: s for s in snap.stacks}["worker"] for snap in dumps]
    # install() keeps history: the parked worker is unchanged since the first dump.
    assert workers[0].unchanged_since is None
    assert workers[1].unchanged_since == dumps[0].created
    assert workers[2].unchanged_since == dumps[0].created
    assert 'Thread "worker"' in dumps[2].to_text()
    assert "unchanged for " in dumps[2].to_text()
    own = [s for s in dumps[2].stacks if s.own]
    assert [s.name for s in own] == ["tbcollect-dumper"]

    # `tbcollect diff` of the first and last: the worker stuck since the
    # first, the dumper set apart from every list and count.
    proc = cli("diff", str(paths[0]), str(paths[2]), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    unchanged = {e["name"]: e for e in data["unchanged"]}
    assert unchanged["worker"]["unchanged_since"] == dumps[0].created
    assert "tbcollect-dumper" not in unchanged
    assert [e["name"] for e in data["own"]] == ["tbcollect-dumper"]
    text = cli("diff", str(paths[0]), str(paths[2])).stdout
    assert "tbcollect-dumper" not in text
    assert "(and 1 of tbcollect's own)" in text.splitlines()[0]
    worker_line = [line for line in text.splitlines() if line.startswith('  Thread "worker"')]
    assert len(worker_line) == 1 and "unchanged for " in worker_line[0], text

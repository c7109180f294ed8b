"""keep_history(): stacks unchanged since an earlier dump say since when."""

from __future__ import annotations

import threading

import tbcollect

from tests.helpers import check_snapshot


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

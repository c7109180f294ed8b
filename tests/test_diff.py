"""tbcollect.diff() and `tbcollect diff` on two real dumps of this process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest
import tbcollect


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tbcollect", *args], capture_output=True, text=True, timeout=60
    )


def stuck(forever: threading.Event) -> None:
    forever.wait()


def step_one(go: threading.Event) -> None:
    go.wait()


def step_two(go: threading.Event) -> None:
    go.wait()


def mover(first: threading.Event, second: threading.Event, arrived: threading.Event) -> None:
    step_one(first)
    arrived.set()
    step_two(second)


def leaves(done: threading.Event) -> None:
    done.wait()


@pytest.fixture
def two_dumps() -> Iterator[Tuple[tbcollect.Snapshot, tbcollect.Snapshot, Dict[str, str]]]:
    """Dump A, then: one thread moves, one ends, one starts; dump B."""
    forever, first, second, arrived, done = (threading.Event() for _ in range(5))
    threads = {
        "stuck": threading.Thread(target=stuck, args=(forever,), name="stuck", daemon=True),
        "mover": threading.Thread(
            target=mover, args=(first, second, arrived), name="mover", daemon=True
        ),
        "leaver": threading.Thread(target=leaves, args=(done,), name="leaver", daemon=True),
        "newcomer": threading.Thread(target=stuck, args=(forever,), name="newcomer", daemon=True),
    }
    for name in ("stuck", "mover", "leaver"):
        threads[name].start()
    ids = {}
    while True:  # until the three are parked at their waits
        a = tbcollect.collect()
        funcs = {s.name: [f.function for f in s.frames] for s in a.stacks}
        if all(
            any(f.endswith("wait") for f in funcs.get(n, [])) for n in ("stuck", "mover", "leaver")
        ):
            break
    first.set()
    assert arrived.wait(30)
    done.set()
    threads["leaver"].join(30)
    threads["newcomer"].start()
    while True:
        b = tbcollect.collect()
        funcs = {s.name: [f.function for f in s.frames] for s in b.stacks}
        if any(f.endswith("wait") for f in funcs.get("newcomer", [])) and "step_two" in funcs.get(
            "mover", []
        ):
            if any(f.endswith("wait") for f in funcs["mover"]):
                break
    for name, t in threads.items():
        ids[name] = f"thread:{t.ident}"
    try:
        yield a, b, ids
    finally:
        forever.set()
        second.set()
        for t in threads.values():
            t.join(30)


def test_diff_sorts_real_stacks_into_four_groups(two_dumps) -> None:
    a, b, ids = two_dumps
    d = tbcollect.diff(a, b)
    assert ids["stuck"] in [s.id for s in d.unchanged]
    (moved,) = [(x, y) for x, y in d.moved if x.name == "mover"]
    assert "step_one" in [f.function for f in moved[0].frames]
    assert "step_two" in [f.function for f in moved[1].frames]
    assert [s.id for s in d.appeared] == [ids["newcomer"]]
    assert [s.id for s in d.disappeared] == [ids["leaver"]]
    assert d.same_process is True
    assert d.seconds is not None and d.seconds >= 0
    # A stack is the same one when id and name match: thread idents are
    # reused (the newcomer often gets the leaver's), which counts as one
    # disappeared and one appeared.
    total = len(d.unchanged) + len(d.moved) + len(d.appeared) + len(d.disappeared)
    assert total == len({(s.id, s.name) for s in a.stacks} | {(s.id, s.name) for s in b.stacks})
    assert d.summary() == (
        f"{len(d.unchanged)} unchanged, {len(d.moved)} moved, 1 appeared, 1 disappeared"
    )

    text = d.to_text()
    assert text.startswith(f"tbcollect diff: {d.summary()}\n")
    order = [
        text.index("\nUnchanged:"),
        text.index("\nMoved:"),
        text.index("\nAppeared:"),
        text.index("\nDisappeared:"),
    ]
    assert order == sorted(order)
    # The moved thread is shown where it moved: step_one's line → step_two's line.
    moved_part = text[order[1] : order[2]]
    assert 'Thread "mover"' in moved_part
    assert "in step_one (" in moved_part and "→ in step_two (" in moved_part

    data = d.to_dict()
    assert data == json.loads(d.to_json())
    assert data["schema"] == "tbcollect-diff/1"
    (entry,) = [m for m in data["moved"] if m["name"] == "mover"]
    assert (entry["before"]["function"], entry["after"]["function"]) == ("step_one", "step_two")
    assert data["counts"]["appeared"] == 1 and data["disappeared"][0]["name"] == "leaver"


def test_diff_cli_text_and_json(two_dumps, tmp_path: Path) -> None:
    a, b, _ = two_dumps
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(a.to_json())
    pb.write_text(b.to_json())
    proc = cli("diff", str(pa), str(pb))
    assert proc.returncode == 0, proc.stderr
    expected = tbcollect.diff(tbcollect.load(pa), tbcollect.load(pb))
    assert proc.stdout == expected.to_text()
    proc = cli("diff", str(pa), str(pb), "--format", "json", "--indent", "2")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == expected.to_dict()
    out = tmp_path / "diff.txt"
    assert cli("diff", str(pa), str(pb), "-o", str(out)).returncode == 0
    assert out.read_text() == expected.to_text()


def test_diff_of_a_dump_with_itself_is_all_unchanged() -> None:
    snapshot = tbcollect.collect()
    d = tbcollect.diff(snapshot, snapshot)
    assert len(d.unchanged) == len(snapshot.stacks)
    assert (d.moved, d.appeared, d.disappeared) == ([], [], [])
    assert d.seconds == 0.0
    with pytest.raises(tbcollect.InvalidOptionError, match="text or json"):
        d.render("svg")


def test_diff_cli_names_the_bad_dump(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(tbcollect.collect().to_json())
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "tbcollect/1", "pid": ')
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "somethingelse/2"}))
    for bad, reason in [
        (broken, f"tbcollect: error: {broken}: not a tbcollect/1 dump: "),
        (other, f"tbcollect: error: {other}: not a tbcollect/1 dump: "),
        (tmp_path / "missing.json", f"tbcollect: error: cannot read dump {tmp_path}/missing.json"),
    ]:
        proc = cli("diff", str(good), str(bad))
        assert proc.returncode == 1
        assert proc.stderr.startswith(reason), proc.stderr
        assert proc.stdout == ""

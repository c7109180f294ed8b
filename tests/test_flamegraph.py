"""format="collapsed" and format="svg" on real captures, and the render CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict

import tbcollect


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tbcollect", *args], capture_output=True, text=True, timeout=60
    )


SVG = "{http://www.w3.org/2000/svg}"


def wait_in_pool(release: threading.Event) -> None:
    release.wait()


def wait_for_lock(release: threading.Event) -> None:
    release.wait()


def capture_with_workers() -> tbcollect.Snapshot:
    release = threading.Event()
    workers = [
        threading.Thread(target=wait_in_pool, args=(release,), name=f"pool-{i}", daemon=True)
        for i in range(6)
    ] + [
        threading.Thread(target=wait_for_lock, args=(release,), name=f"lock-{i}", daemon=True)
        for i in range(2)
    ]
    for w in workers:
        w.start()
    try:
        return tbcollect.collect()
    finally:
        release.set()
        for w in workers:
            w.join(30)


def folded_counts(text: str) -> Dict[str, int]:
    out = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        out[stack] = int(count)
    return out


def test_collapsed_counts_each_stack_once() -> None:
    snapshot = capture_with_workers()
    text = snapshot.render("collapsed")
    counts = folded_counts(text)
    assert sum(counts.values()) == len(snapshot.stacks)
    pool = [s for s, n in counts.items() if "wait_in_pool (test_flamegraph.py:" in s]
    lock = [s for s, n in counts.items() if "wait_for_lock (test_flamegraph.py:" in s]
    # Six identical workers are one line counted 6 (unless a worker had not
    # reached its wait yet, which would only split, never lose, a count).
    assert sum(counts[s] for s in pool) == 6
    assert sum(counts[s] for s in lock) == 2
    for stack in pool:
        frames = stack.split(";")
        # Qualified names from 3.11 (Thread._bootstrap), plain names before.
        assert frames[0].split(" (")[0].endswith("_bootstrap"), "outermost first"
        assert "(threading.py:" in frames[0]
        assert frames[-1].split(" (")[0].endswith("wait"), "innermost last"
    assert text == "".join(sorted(text.splitlines(keepends=True))), "sorted, as tools expect"


def test_svg_is_well_formed_and_names_every_frame() -> None:
    snapshot = capture_with_workers()
    svg = snapshot.render("svg")
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg"
    titles = [t.text or "" for t in root.iter(SVG + "title")]
    assert any(t.startswith("wait_in_pool (test_flamegraph.py:") for t in titles)
    assert any("6 stacks" in t for t in titles if t.startswith("wait_in_pool")), titles
    texts = " ".join(t.text or "" for t in root.iter(SVG + "text"))
    assert f"pid {snapshot.pid}" in texts
    counts = ", ".join(f"{n} {k}{'' if n == 1 else 's'}" for k, n in kinds(snapshot))
    assert counts in texts


def kinds(snapshot: tbcollect.Snapshot):
    for kind in ("thread", "greenlet", "task"):
        yield kind, sum(1 for s in snapshot.stacks if s.kind == kind)


def test_render_cli_writes_svg_and_folded_files(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    tbcollect.dump_all(dump, format="json")
    out = tmp_path / "out.svg"
    proc = cli("render", str(dump), "--format", "svg", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    ET.fromstring(out.read_text())
    folded = tmp_path / "out.folded"
    proc = cli("render", str(dump), "--format", "collapsed", "-o", str(folded))
    assert proc.returncode == 0, proc.stderr
    snapshot = tbcollect.load(dump)
    assert folded.read_text() == snapshot.render("collapsed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump.json", "out.folded", "out.svg"]


def test_render_cli_refuses_unknown_formats_and_bad_outputs(tmp_path: Path) -> None:
    dump = tmp_path / "dump.json"
    dump.write_text(tbcollect.collect().to_json())
    proc = cli("render", str(dump), "--format", "png")
    assert proc.returncode == 2 and "invalid choice: 'png'" in proc.stderr
    target = tmp_path / "missing-dir" / "out.svg"
    proc = cli("render", str(dump), "--format", "svg", "-o", str(target))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"tbcollect: error: cannot write dump to {target}")


def test_ten_thousand_tasks_at_one_line_are_one_bar(tmp_path: Path) -> None:
    # A saved dump of a task-heavy process (the shape a task backend writes).
    base = json.loads(tbcollect.collect(tasks=False, greenlets=False).to_json())
    waiting = [
        {"filename": "/srv/app.py", "lineno": 30, "function": "main", "source": None},
        {"filename": "/srv/app.py", "lineno": 12, "function": "fetch", "source": None},
    ]
    base["stacks"] += [
        {
            "kind": "task",
            "id": f"task:{0x1000 + i:#x}",
            "name": f"Task-{i}",
            "thread": None,
            "state": "pending",
            "loop": "loop:0x1",
            "awaiting": None,
            "awaited_by": [],
            "frames_omitted": 0,
            "frames": waiting,
        }
        for i in range(10_000)
    ]
    snapshot = tbcollect.Snapshot.from_json(json.dumps(base))
    counts = folded_counts(snapshot.render("collapsed"))
    assert counts["main (app.py:30);fetch (app.py:12)"] == 10_000
    root = ET.fromstring(snapshot.render("svg"))
    titles = [t.text or "" for t in root.iter(SVG + "title")]
    assert any(t.startswith("fetch (app.py:12) (10,000 stacks") for t in titles), titles[:5]

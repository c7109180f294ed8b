"""Probes: operator scripts whose results go into dumps, loaded afresh each
time, refused (before any code runs) when someone else could change them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tbcollect

from tests.helpers import ROOT, check_snapshot, validate_json

GOOD = "def probe():\n    return {'queue': [1, 2], 'ok': True}\n"


@pytest.fixture
def probes(tmp_path: Path) -> Path:
    directory = tmp_path / "probes"
    directory.mkdir(mode=0o700)
    return directory


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(textwrap.dedent(text))
    path.chmod(mode)
    return path


def marker_probe(directory: Path, marker: Path, name: str = "marker") -> Path:
    """A probe whose mere loading leaves a file behind: proof that code ran."""
    return write(
        directory / f"{name}.py",
        f"open({str(marker)!r}, 'w').close()\ndef probe():\n    return 1\n",
    )


def test_results_and_errors_of_every_kind(probes):
    write(probes / "good.py", GOOD)
    write(probes / "raises.py", "def probe():\n    return 1 / 0\n")
    write(probes / "not_json.py", "def probe():\n    return {'s': {1, 2}}\n")
    write(probes / "nan.py", "def probe():\n    return float('nan')\n")
    write(probes / "no_function.py", "x = 1\n")
    write(probes / "syntax.py", "def probe(:\n")
    write(probes / "exits.py", "import sys\ndef probe():\n    sys.exit(3)\n")
    write(probes / "none.py", "def probe():\n    return None\n")
    write(probes / "notes.txt", "not a probe")
    write(probes / ".hidden.py", "raise SystemExit('editor temp file')")
    results = {r["name"]: r for r in tbcollect.run_probes(probes)}
    assert list(results) == sorted(results), "sorted by name"
    assert set(results) == {
        "good",
        "raises",
        "not_json",
        "nan",
        "no_function",
        "syntax",
        "exits",
        "none",
    }
    assert results["good"] == {
        "name": "good",
        "result": {"queue": [1, 2], "ok": True},
        "error": None,
    }
    assert results["none"] == {"name": "none", "result": None, "error": None}
    err = results["raises"]["error"]
    assert results["raises"]["result"] is None
    assert err.startswith("Traceback (most recent call last):")
    assert f'File "{probes / "raises.py"}", line 2, in probe' in err
    assert err.endswith("ZeroDivisionError: division by zero")
    assert "_probes.py" not in err, "our own frames are left out"
    assert results["not_json"]["error"].startswith("probe() returned data that is not JSON: ")
    assert "set is not JSON serializable" in results["not_json"]["error"]
    assert "Out of range float values" in results["nan"]["error"]
    assert results["no_function"]["error"].endswith("defines no probe() function")
    assert "SyntaxError" in results["syntax"]["error"]
    assert results["exits"]["error"].endswith("SystemExit: 3")


def test_probes_are_loaded_afresh_without_touching_sys_modules(probes):
    path = write(probes / "counter.py", "def probe():\n    return 'one'\n")
    stamp = path.stat().st_mtime_ns
    modules = set(sys.modules)
    first = tbcollect.dump_all(format="json", probes=probes)
    # Same size, same mtime: no cache keyed on either may hide the edit.
    write(path, "def probe():\n    return 'two'\n")
    os.utime(path, ns=(stamp, stamp))
    second = tbcollect.dump_all(format="json", probes=probes)
    assert validate_json(first)["probes"] == [{"name": "counter", "result": "one", "error": None}]
    assert validate_json(second)["probes"] == [{"name": "counter", "result": "two", "error": None}]
    assert set(sys.modules) == modules
    assert not (probes / "__pycache__").exists()


def test_text_dump_has_a_probes_section(probes):
    write(probes / "good.py", GOOD)
    write(probes / "bad.py", "def probe():\n    raise ValueError('no queue')\n")
    text = tbcollect.dump_all(probes=probes)
    section = text[text.index("\nProbes (2):\n") :]
    assert section.startswith(
        "\nProbes (2):\n  bad (error):\n    Traceback (most recent call last):\n"
    )
    assert "    ValueError: no queue\n  good:\n    {\n" in section
    assert '      "ok": true,\n' in section


def test_dump_without_probes_has_no_probes_key():
    data = validate_json(tbcollect.dump_all(format="json"))
    assert "probes" not in data
    assert "\nProbes (" not in tbcollect.dump_all()


@pytest.mark.parametrize(
    "make_unsafe, reason",
    [
        (lambda d, f: d.chmod(0o777), "is writable by group or others (mode 777)"),
        (lambda d, f: d.chmod(0o770), "is writable by group or others (mode 770)"),
        (lambda d, f: f.chmod(0o664), "is writable by group or others (mode 664)"),
        (lambda d, f: f.chmod(0o602), "is writable by group or others (mode 602)"),
    ],
    ids=["world-writable dir", "group-writable dir", "group-writable file", "world-writable file"],
)
def test_writable_by_others_is_refused_and_nothing_runs(probes, tmp_path, make_unsafe, reason):
    marker = tmp_path / "ran"
    write(probes / "a_good.py", GOOD)
    path = marker_probe(probes, marker)
    make_unsafe(probes, path)
    with pytest.raises(
        tbcollect.UnsafeProbesError, match="refusing probes: .*" + re.escape(reason)
    ):
        tbcollect.run_probes(probes)
    with pytest.raises(tbcollect.UnsafeProbesError):
        tbcollect.dump_all(tmp_path / "dump.txt", probes=probes)
    assert not marker.exists()
    assert not (tmp_path / "dump.txt").exists(), "nothing half-written"


def test_symlinks_are_refused(probes, tmp_path):
    marker = tmp_path / "ran"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    real = marker_probe(elsewhere, marker)
    (probes / "linked.py").symlink_to(real)
    with pytest.raises(tbcollect.UnsafeProbesError, match=r"linked\.py is a symlink"):
        tbcollect.run_probes(probes)
    linked_dir = tmp_path / "linked_dir"
    linked_dir.symlink_to(elsewhere)
    with pytest.raises(tbcollect.UnsafeProbesError, match="linked_dir is a symlink"):
        tbcollect.run_probes(linked_dir)
    assert not marker.exists()
    # The unsafe error is a PermissionError and a TbcollectError.
    with pytest.raises(PermissionError):
        tbcollect.run_probes(linked_dir)
    with pytest.raises(tbcollect.TbcollectError):
        tbcollect.run_probes(linked_dir)


def test_a_parent_others_can_write_is_refused(tmp_path):
    marker = tmp_path / "ran"
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: anyone could rename probes/ away and plant their own
    directory = shared / "probes"
    directory.mkdir(mode=0o700)
    marker_probe(directory, marker)
    with pytest.raises(
        tbcollect.UnsafeProbesError, match=f"parent {re.escape(str(shared))} is writable"
    ):
        tbcollect.run_probes(directory)
    shared.chmod(0o1777)  # sticky, like /tmp: others cannot replace our entries
    assert tbcollect.run_probes(directory) == [{"name": "marker", "result": 1, "error": None}]
    assert marker.exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown")
def test_files_of_another_user_are_refused(probes, tmp_path):
    marker = tmp_path / "ran"
    path = marker_probe(probes, marker)
    os.chown(path, 12345, 12345)
    with pytest.raises(tbcollect.UnsafeProbesError, match="belongs to uid 12345"):
        tbcollect.run_probes(probes)
    os.chown(path, 0, 0)
    os.chown(probes, 12345, 12345)
    with pytest.raises(tbcollect.UnsafeProbesError, match="belongs to uid 12345"):
        tbcollect.run_probes(probes)
    assert not marker.exists()


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(tbcollect.ProbesError, match="cannot read probes directory .*nope"):
        tbcollect.run_probes(tmp_path / "nope")
    file = write(tmp_path / "file", "x")
    with pytest.raises(tbcollect.ProbesError, match="not a directory"):
        tbcollect.run_probes(file)


def test_with_probes_attaches_results_to_a_new_snapshot():
    snap = tbcollect.collect()
    assert snap.probes == []
    results = [
        {"name": "a", "result": {"x": [1, 2.5, None, "s"]}, "error": None},
        {"name": "b", "result": None, "error": "ValueError: no"},
        {"name": "c", "result": 7},
    ]
    attached = snap.with_probes(results)
    assert snap.probes == [], "the original snapshot is unchanged"
    assert attached.probes == [
        {"name": "a", "result": {"x": [1, 2.5, None, "s"]}, "error": None},
        {"name": "b", "result": None, "error": "ValueError: no"},
        {"name": "c", "result": 7, "error": None},
    ]
    data = check_snapshot(attached)
    assert data["probes"][0]["result"] == {"x": [1, 2.5, None, "s"]}
    assert tbcollect.load(attached.to_json()).probes == attached.probes
    assert "Probes (3):" in attached.to_text()


@pytest.mark.parametrize(
    "bad, message",
    [
        (None, "must be an iterable of dicts"),
        ([1], "each probe result must be a dict"),
        ([{"result": 1}], "needs a str 'name'"),
        ([{"name": "x", "error": 3}], "'error' must be a str"),
        ([{"name": "x", "result": object()}], 'probe "x": result is not JSON'),
        ([{"name": "x", "result": float("inf")}], 'probe "x": result is not JSON'),
    ],
)
def test_with_probes_rejects_bad_input(bad, message):
    with pytest.raises(tbcollect.InvalidOptionError, match=message):
        tbcollect.collect().with_probes(bad)


LIVE_TARGET = """
import json, sys, threading, time
import tbcollect

stop = threading.Event()
worker = threading.Thread(target=stop.wait, name="worker")
worker.start()
# One dump per line on stdin, the way an operator asks again and again.
for line in sys.stdin:
    out = line.strip()
    try:
        tbcollect.dump_all(out, format="json", probes=sys.argv[1])
        print("DUMPED", out, flush=True)
    except tbcollect.TbcollectError as e:
        print("REFUSED", type(e).__name__, e, flush=True)
stop.set()
worker.join()
"""


def test_live_process_reloads_an_edited_probe_between_dumps(probes, tmp_path):
    marker = tmp_path / "ran"
    path = write(probes / "state.py", "def probe():\n    return {'version': 1}\n")
    with subprocess.Popen(
        [sys.executable, "-c", LIVE_TARGET, str(probes)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None

        def ask(name: str) -> str:
            proc.stdin.write(str(tmp_path / name) + "\n")
            proc.stdin.flush()
            return proc.stdout.readline().strip()

        try:
            assert ask("one.json").startswith("DUMPED")
            write(path, "def probe():\n    return {'version': 2, 'edited': True}\n")
            assert ask("two.json").startswith("DUMPED")
            marker_probe(probes, marker)
            probes.chmod(0o777)
            refused = ask("three.json")
            assert refused.startswith("REFUSED UnsafeProbesError refusing probes: directory ")
            assert refused.endswith("is writable by group or others (mode 777)")
            proc.stdin.close()
            assert proc.wait(timeout=60) == 0, proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
    one = validate_json((tmp_path / "one.json").read_text())
    two = validate_json((tmp_path / "two.json").read_text())
    assert one["probes"] == [{"name": "state", "result": {"version": 1}, "error": None}]
    assert two["probes"] == [
        {"name": "state", "result": {"edited": True, "version": 2}, "error": None}
    ]
    assert one["pid"] == two["pid"], "the same live process"
    assert "worker" in [s["name"] for s in two["stacks"]]
    assert not (tmp_path / "three.json").exists()
    assert not marker.exists()


def test_probes_directory_follows_the_environment(monkeypatch, probes):
    from tbcollect._probes import PROBES_ENV, probes_directory

    monkeypatch.delenv(PROBES_ENV, raising=False)
    assert probes_directory() is None
    monkeypatch.setenv(PROBES_ENV, str(probes))
    assert probes_directory() == probes
    assert probes_directory("/elsewhere") == Path("/elsewhere")
    assert json.loads(json.dumps(tbcollect.run_probes(probes_directory()))) == []

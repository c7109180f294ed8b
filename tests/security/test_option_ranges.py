"""Issue 15, finding 3: every numeric option is range-checked where it is
given. Out of range is one InvalidOptionError (a ValueError) naming the
option: never OverflowError, and never an allocation that aborts the
interpreter (run in a subprocess, so the old abort could not take pytest down)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tbcollect

from tests.helpers import run_python

HUGE = [10**9, 10**20, 2**70, -1, -(2**70)]


@pytest.mark.parametrize("indent", HUGE)
def test_huge_or_negative_indent_is_one_clear_error_in_a_subprocess(indent: int) -> None:
    proc = run_python(
        "import tbcollect\n"
        "try:\n"
        f"    tbcollect.collect().to_json(indent={indent})\n"
        "except tbcollect.InvalidOptionError as e:\n"
        "    print('REFUSED', e)\n"
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.startswith("REFUSED invalid option indent: must be an integer from 0 to 64")


@pytest.mark.parametrize(
    "call",
    [
        lambda i: tbcollect.collect().to_json(indent=i),
        lambda i: tbcollect.collect().render("json", indent=i),
        lambda i: tbcollect.dump_all(None, format="json", indent=i),
        lambda i: tbcollect.diff(tbcollect.collect(), tbcollect.collect()).to_json(indent=i),
        lambda i: tbcollect.diff(tbcollect.collect(), tbcollect.collect()).render("json", indent=i),
    ],
)
@pytest.mark.parametrize("indent", [65, -1, 2**70, 1.5, True, "2"])
def test_every_indent_is_checked(call, indent) -> None:
    with pytest.raises(tbcollect.InvalidOptionError, match="invalid option indent") as info:
        call(indent)
    assert isinstance(info.value, ValueError)


def test_indent_within_range_still_works() -> None:
    snap = tbcollect.collect()
    assert snap.to_json(indent=0).startswith("{\n")
    assert snap.to_json(indent=64).startswith("{\n" + " " * 64 + '"')


@pytest.mark.parametrize("depth", [0, -1, 10**20, 2**70, 1.5, True])
def test_max_depth_out_of_range(depth) -> None:
    with pytest.raises(tbcollect.InvalidOptionError, match="invalid option max_depth"):
        tbcollect.collect(max_depth=depth)
    with pytest.raises(tbcollect.InvalidOptionError, match="invalid option max_depth"):
        tbcollect.dump_all(None, max_depth=depth)


def test_max_depth_bounds_themselves_are_accepted() -> None:
    assert tbcollect.collect(max_depth=1).stacks
    assert tbcollect.collect(max_depth=10**9).stacks


@pytest.mark.parametrize("fd", [2**70, 2**31, -1])
def test_dump_all_to_an_impossible_descriptor(fd: int) -> None:
    with pytest.raises(tbcollect.InvalidOptionError, match="invalid option file"):
        tbcollect.dump_all(fd)


def test_cli_render_indent_is_checked(tmp_path: Path) -> None:
    dump = tmp_path / "d.json"
    dump.write_text(tbcollect.collect().to_json())
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tbcollect", "render", str(dump), "--format", "json"]
        + ["--indent", str(10**9), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("tbcollect: error: invalid option indent: "), proc.stderr
    assert not out.exists(), "nothing half-written"


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"raw_timeout": 1e-9}, "raw_timeout"),
        ({"raw_timeout": 10**30}, "raw_timeout"),
        ({"raw_timeout": float("nan")}, "raw_timeout"),
        ({"raw_timeout": "1"}, "raw_timeout"),
        ({"log": 123}, "log"),
    ],
)
def test_install_refuses_options_its_dumps_could_not_use(tmp_path: Path, kwargs, option) -> None:
    with pytest.raises(tbcollect.InvalidOptionError, match=f"invalid option {option}"):
        tbcollect.install(directory=tmp_path, **kwargs)
    assert tbcollect.installed() is None


@pytest.mark.parametrize("value", [0, 1e-9, 10**30, float("inf"), float("nan")])
def test_watchdog_thresholds_are_range_checked(tmp_path: Path, value) -> None:
    with pytest.raises(tbcollect.InvalidOptionError, match="invalid option reminder"):
        tbcollect.watchdog(directory=tmp_path, reminder=value)
    with tbcollect.watchdog(directory=tmp_path) as wd:
        with pytest.raises(tbcollect.InvalidOptionError, match="invalid option threshold"):
            wd.watch_thread(threshold=value)

"""Issue 15, finding 6: ``install()``, ``TBCOLLECT_FORMAT`` and watchdogs
refuse up front a format their dump files cannot be written in (svg and
collapsed are made from a JSON dump by ``tbcollect render``), so no handler
that writes nothing on every signal is ever installed."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Dict

import pytest
import tbcollect

from tests.helpers import run_python

ONLY_TEXT_OR_JSON = "dump files are written as text or json"


def base_env(directory: Path, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TBCOLLECT")}
    env["TBCOLLECT_DIR"] = str(directory)
    env.update(extra)
    return env


@pytest.mark.parametrize("fmt", ["svg", "collapsed"])
def test_install_refuses_a_format_dump_files_cannot_take(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(tbcollect.InvalidOptionError, match=ONLY_TEXT_OR_JSON):
        tbcollect.install(directory=tmp_path, format=fmt)
    assert tbcollect.installed() is None
    assert list(tmp_path.iterdir()) == []


def test_install_refuses_an_unknown_or_non_str_format(tmp_path: Path) -> None:
    with pytest.raises(tbcollect.UnknownFormatError):
        tbcollect.install(directory=tmp_path, format="yaml")
    with pytest.raises(tbcollect.InvalidOptionError, match="invalid option format"):
        tbcollect.install(directory=tmp_path, format=123)  # type: ignore[arg-type]
    assert tbcollect.installed() is None


@pytest.mark.parametrize("fmt", ["svg", "collapsed"])
def test_watchdog_refuses_a_format_dump_files_cannot_take(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(tbcollect.InvalidOptionError, match=ONLY_TEXT_OR_JSON):
        tbcollect.watchdog(directory=tmp_path, format=fmt)


def test_tbcollect_format_svg_installs_nothing_and_says_so(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import tbcollect
        print("INSTALLED", tbcollect.installed())
        """
    )
    env = base_env(tmp_path, TBCOLLECT="1", TBCOLLECT_FORMAT="svg")
    proc = run_python(code, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "INSTALLED None" in proc.stdout
    assert "no dump handler is installed" in proc.stderr
    assert "invalid option TBCOLLECT_FORMAT" in proc.stderr


def test_tbcollect_format_json_still_installs(tmp_path: Path) -> None:
    env = base_env(tmp_path, TBCOLLECT="1", TBCOLLECT_FORMAT="json")
    proc = run_python(
        "import tbcollect; print('INSTALLED', int(tbcollect.installed() or 0))", env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "INSTALLED 3" in proc.stdout, proc.stdout + proc.stderr

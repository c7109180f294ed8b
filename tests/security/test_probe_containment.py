"""Issue 15, finding 5: a probe raising any BaseException (GeneratorExit,
KeyboardInterrupt, SystemExit, or one whose str() raises) fails only its own
entry: the dump is still made and written, and nothing reaches the caller."""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path

import pytest
import tbcollect

from tests.helpers import run_python

RAISERS = {
    "generator_exit": "def probe():\n    raise GeneratorExit\n",
    "keyboard": "def probe():\n    raise KeyboardInterrupt\n",
    "system_exit": "import sys\ndef probe():\n    sys.exit(0)\n",
    "base": "def probe():\n    raise BaseException('base')\n",
    "at_load": "raise KeyboardInterrupt\n",
    "bad_str": textwrap.dedent(
        """
        class Nasty(BaseException):
            def __str__(self):
                raise KeyboardInterrupt
        def probe():
            raise Nasty()
        """
    ),
    "bad_items": textwrap.dedent(
        """
        class Items(dict):
            def items(self):
                raise GeneratorExit
        def probe():
            return Items(a=1)
        """
    ),
    "good": "def probe():\n    return {'ok': True}\n",
}


@pytest.fixture
def probes(tmp_path: Path) -> Path:
    directory = tmp_path / "probes"
    directory.mkdir(mode=0o700)
    for name, source in RAISERS.items():
        path = directory / f"{name}.py"
        path.write_text(source)
        path.chmod(0o600)
    return directory


def test_dump_all_contains_every_base_exception(probes: Path, tmp_path: Path) -> None:
    out = tmp_path / "dump.json"
    tbcollect.dump_all(out, format="json", probes=probes)
    results = {p["name"]: p for p in json.loads(out.read_text())["probes"]}
    assert set(results) == set(RAISERS)
    assert results["good"] == {"name": "good", "result": {"ok": True}, "error": None}
    for name in set(RAISERS) - {"good", "bad_items"}:
        assert results[name]["result"] is None and results[name]["error"], name
    assert "GeneratorExit" in results["generator_exit"]["error"]
    assert "KeyboardInterrupt" in results["keyboard"]["error"]
    assert "Nasty" in results["bad_str"]["error"]


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
def test_a_signal_dump_is_written_when_a_probe_raises_generator_exit(
    probes: Path, tmp_path: Path
) -> None:
    dumps = tmp_path / "dumps"
    code = textwrap.dedent(
        """
        import os, signal, sys, time
        import tbcollect
        directory = tbcollect.install(signal.SIGUSR1, directory=sys.argv[1], probes=sys.argv[2],
                                      format="json")
        os.kill(os.getpid(), signal.SIGUSR1)
        deadline = time.monotonic() + 60  # hang guard
        while not [p for p in os.listdir(directory) if p.startswith("tbcollect-")]:
            if time.monotonic() > deadline:
                sys.exit("no dump file")
            time.sleep(0.02)
        tbcollect.uninstall()
        """
    )
    proc = run_python(code, str(dumps), str(probes))
    assert proc.returncode == 0, proc.stderr
    assert "failed" not in proc.stderr, proc.stderr
    files = [p for p in dumps.iterdir() if p.name.startswith("tbcollect-")]
    assert len(files) == 1
    text = files[0].read_text()
    results = {p["name"]: p for p in json.loads(text[text.index("{") :])["probes"]}
    assert "GeneratorExit" in results["generator_exit"]["error"]
    assert results["good"]["result"] == {"ok": True}

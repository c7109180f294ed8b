"""The .pyi stub matches the native module (mypy's stubtest), so the typed
public API cannot drift from what the extension really exports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_native_module_stub_is_honest():
    pytest.importorskip("mypy")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "--ignore-disjoint-bases",
            # PyO3 fills the native module's __all__ itself; listing it again
            # in the stub would only be a second list to keep in sync.
            "--allowlist",
            str(Path(__file__).with_name("stubtest-allowlist.txt")),
            "tbcollect._tbcollect",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""The .pyi stub matches the native module (mypy's stubtest), so the typed
public API cannot drift from what the extension really exports."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_native_module_stub_is_honest():
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--ignore-disjoint-bases", "tbcollect._tbcollect"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr

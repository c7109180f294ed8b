"""Shared test helpers: schema validation of every JSON dump, and running
small target programs in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import jsonschema
import pytest
import tbcollect

SCHEMA_PATH = Path(tbcollect.__file__).with_name("schema.json")
SCHEMA = json.loads(SCHEMA_PATH.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
ROOT = Path(__file__).resolve().parent.parent


def validate_json(text: str) -> Dict[str, Any]:
    """Parses a JSON dump and validates it against the published schema."""
    data = json.loads(text)
    errors = sorted(VALIDATOR.iter_errors(data), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    return data


def check_snapshot(snapshot: tbcollect.Snapshot) -> Dict[str, Any]:
    """Validates a snapshot's JSON and checks it agrees with to_dict()."""
    data = validate_json(snapshot.to_json())
    assert data == snapshot.to_dict()
    ids = [s["id"] for s in data["stacks"]]
    assert len(ids) == len(set(ids)), "stack ids must be unique within a snapshot"
    return data


def stacks_of(snapshot: tbcollect.Snapshot, kind: str) -> List[tbcollect.Stack]:
    return [s for s in snapshot.stacks if s.kind == kind]


def functions(stack: tbcollect.Stack) -> List[str]:
    return [f.function for f in stack.frames]


def run_python(
    code_or_path: str, *args: str, timeout: float = 60, env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess:
    """Runs a target program with this interpreter; returns the finished process."""
    cmd = [sys.executable]
    cmd += [code_or_path] if code_or_path.endswith(".py") else ["-c", code_or_path]
    full_env = dict(os.environ, PYTHONFAULTHANDLER="1")
    full_env.update(env or {})
    return subprocess.run(
        cmd + list(args), capture_output=True, text=True, timeout=timeout, env=full_env
    )


@pytest.fixture
def json_validator():
    return validate_json

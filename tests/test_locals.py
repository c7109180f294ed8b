"""collect(locals=True|"repr"): real threads whose variables the test knows."""
# ruff: noqa: F841 - the tests read these "unused" variables from the frames

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
import tbcollect

from tests.helpers import check_snapshot, run_python

PY = sys.version_info[:2]


@contextlib.contextmanager
def parked(target: Callable[..., Any], *args: Any, name: str) -> Iterator[threading.Thread]:
    """Runs ``target(ready, release, *args)`` in a thread until the block ends."""
    ready, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=target, args=(ready, release, *args), name=name, daemon=True)
    thread.start()
    assert ready.wait(30), "the worker never got ready"
    try:
        yield thread
    finally:
        release.set()
        thread.join(30)


def frame_locals(snapshot: tbcollect.Snapshot, thread_name: str, function: str) -> Dict[str, str]:
    (stack,) = [s for s in snapshot.stacks if s.name == thread_name]
    frames = [f for f in stack.frames if f.function.split(".")[-1] == function]
    assert frames, f"{function} not in {[f.function for f in stack.frames]}"
    assert frames[-1].locals is not None
    return dict(frames[-1].locals)


class Recorder:
    """Records every attribute lookup and repr on its instances."""

    touched: List[str] = []

    def __init__(self, label: str) -> None:
        object.__setattr__(self, "label", label)

    def __getattribute__(self, name: str) -> Any:
        Recorder.touched.append(f"getattr {name}")
        return object.__getattribute__(self, name)

    def __repr__(self) -> str:
        Recorder.touched.append("repr")
        return f"<Recorder {object.__getattribute__(self, 'label')}>"

    @property
    def __class__(self) -> type:  # type: ignore[override]
        Recorder.touched.append("__class__")
        raise RuntimeError("__class__ must not be read")

    @property
    def boom(self) -> None:
        Recorder.touched.append("property")
        raise RuntimeError("a property must not run")


class LoudMeta(type):
    """A metaclass whose attribute reads are recorded."""

    def __getattribute__(cls, name: str) -> Any:
        Recorder.touched.append(f"meta {name}")
        return super().__getattribute__(name)


class Quiet(metaclass=LoudMeta):
    class Inner:
        pass


def known_values(ready: threading.Event, release: threading.Event, job_id: int) -> None:
    count = 3
    name = "alpha"
    ratio = 2.5
    nothing = None
    flag = True
    raw = b"\x00ab"
    items = [1, "two", (3,), {4}, frozenset(), {"five": 5}]
    nested = [1, [2, [3, [4, [5]]]]]
    many = list(range(1000))
    long_text = "y" * 10_000
    huge = 10**400
    config = {"user": "ada", "Password": "hunter2", "retries": 2}
    password = "s3cr3t-value"
    db_password = "other-secret"
    SESSION = "cookie-value"  # noqa: N806 - the upper-case name is the point
    social_security = "078-05-1120"
    watched = Recorder("w")
    quiet = Quiet()
    inner = Quiet.Inner()
    captured = "by-closure"

    def closure() -> str:
        return captured

    ready.set()
    release.wait()


def cells_and_free_variables(ready: threading.Event, release: threading.Event, kept: str) -> None:
    local_cell = "made here"

    def uses_both() -> Any:
        return kept, local_cell

    def parked_inside() -> None:
        seen = (kept, local_cell)  # both are free variables of this frame
        ready.set()
        release.wait()
        del seen

    parked_inside()
    uses_both()


def test_arguments_cells_and_free_variables_are_read_in_their_slots() -> None:
    # An argument a closure captures, a local one does, and the free
    # variables of the inner frame: each slot kind of every version.
    with parked(cells_and_free_variables, "an argument", name="cells"):
        snapshot = tbcollect.collect(locals=True)
    outer = frame_locals(snapshot, "cells", "cells_and_free_variables")
    assert (outer["kept"], outer["local_cell"]) == ("'an argument'", "'made here'")
    assert outer["uses_both"].startswith("<function cells_and_free_variables.<locals>.uses_both")
    inner = frame_locals(snapshot, "cells", "parked_inside")
    assert (inner["kept"], inner["local_cell"]) == ("'an argument'", "'made here'")
    assert inner["seen"] == "('an argument', 'made here')"


def test_builtin_values_are_rendered_and_others_by_type() -> None:
    with parked(known_values, 42, name="known"):
        Recorder.touched.clear()
        snapshot = tbcollect.collect(locals=True)
        touched = list(Recorder.touched)
    assert touched == [], f"user code ran during capture: {touched}"
    check_snapshot(snapshot)
    v = frame_locals(snapshot, "known", "known_values")
    assert v["job_id"] == "42"
    assert v["count"] == "3"
    assert v["name"] == "'alpha'"
    assert v["ratio"] == "2.5"
    assert v["nothing"] == "None"
    assert v["flag"] == "True"
    assert v["raw"] == r"b'\x00ab'"
    assert v["items"] == "[1, 'two', (3,), {4}, frozenset(), {'five': 5}]"
    assert v["nested"] == "[1, [2, [3, […]]]]"
    assert v["many"].startswith("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, … 990 more")
    assert v["long_text"] == "'" + "y" * 200 + "'… (10000 chars)"
    assert v["huge"] == "<int of more than 308 digits>"
    assert v["config"] == "{'user': 'ada', 'Password': [redacted], 'retries': 2}"
    assert v["captured"] == "'by-closure'", "cell variables are read through their cell"
    assert re.fullmatch(r"<function known_values\.<locals>\.closure at 0x[0-9a-f]+>", v["closure"])
    # Objects of other types: module and qualified name from the type, real address.
    assert re.fullmatch(r"<test_locals\.Recorder object at 0x[0-9a-f]+>", v["watched"])
    assert re.fullmatch(r"<test_locals\.Quiet object at 0x[0-9a-f]+>", v["quiet"])
    assert re.fullmatch(r"<test_locals\.Quiet\.Inner object at 0x[0-9a-f]+>", v["inner"])
    for secret in ("password", "db_password", "SESSION"):
        assert v[secret] == "[redacted]"
    assert v["social_security"] == "'078-05-1120'", "not on the default list"
    text = snapshot.to_text()
    assert "hunter2" not in text and "s3cr3t" not in text and "cookie-value" not in text
    assert "      count = 3\n" in text, "locals are listed under their frame"


def test_addresses_are_the_objects_own() -> None:
    holder: Dict[str, Any] = {}

    def keeps(ready: threading.Event, release: threading.Event) -> None:
        mine = Recorder("addr")
        holder["id"] = id(mine)
        ready.set()
        release.wait()

    with parked(keeps, name="addr"):
        snapshot = tbcollect.collect(locals=True)
    v = frame_locals(snapshot, "addr", "keeps")
    assert v["mine"] == f"<test_locals.Recorder object at {hex(holder['id'])}>"


def test_redaction_is_extendable_per_call_and_per_program() -> None:
    with parked(known_values, 1, name="redact"):
        per_call = tbcollect.collect(locals=True, redact=["SOCIAL"])
        tbcollect.REDACT.append("retries")
        try:
            per_program = tbcollect.collect(locals=True)
        finally:
            tbcollect.REDACT.remove("retries")
        after = tbcollect.collect(locals=True)
    assert frame_locals(per_call, "redact", "known_values")["social_security"] == "[redacted]"
    program = frame_locals(per_program, "redact", "known_values")
    assert program["config"] == "{'user': 'ada', 'Password': [redacted], 'retries': [redacted]}"
    assert program["social_security"] == "'078-05-1120'"
    assert frame_locals(after, "redact", "known_values")["config"].endswith("'retries': 2}")


def repr_targets(ready: threading.Event, release: threading.Event, shared: Any) -> None:
    class Fails:
        def __repr__(self) -> str:
            raise ValueError("no repr for you")

    class Huge:
        def __repr__(self) -> str:
            return "h" * 1_000_000

    failing = Fails()
    huge = Huge()
    pair = [Recorder("a"), Recorder("b")]
    same_again = shared
    secret_thing = Recorder("hidden")
    ready.set()
    release.wait()


def test_repr_mode_calls_repr_after_capture_guarded_and_capped() -> None:
    shared = Recorder("shared")
    with parked(repr_targets, shared, name="reprs"):
        Recorder.touched.clear()
        snapshot = tbcollect.collect(locals="repr")
        touched = list(Recorder.touched)
    check_snapshot(snapshot)
    v = frame_locals(snapshot, "reprs", "repr_targets")
    assert v["failing"] == "<repr failed: ValueError>"
    assert v["huge"] == "h" * 300 + "… (1000000 chars)"
    assert v["pair"] == "[<Recorder a>, <Recorder b>]"
    assert v["shared"] == v["same_again"] == "<Recorder shared>"
    assert v["secret_thing"] == "[redacted]"
    # One repr per object (shared is in two frames), none for redacted names,
    # and nothing else of theirs was touched.
    assert sorted(touched) == ["repr"] * 3, touched


def many_locals(ready: threading.Event, release: threading.Event) -> None:
    scope = {f"v{i:03}": i for i in range(100)}
    exec(  # a frame with 100 real local variables
        "def deep(ready, release):\n"
        + "".join(f"    v{i:03} = {i}\n" for i in range(100))
        + "    ready.set()\n    release.wait()\n",
        scope,
    )
    scope["deep"](ready, release)


def test_a_frame_keeps_at_most_forty_locals() -> None:
    with parked(many_locals, name="many"):
        snapshot = tbcollect.collect(locals=True)
    v = frame_locals(snapshot, "many", "deep")
    assert len(v) == 41
    assert v["v000"] == "0" and v["…"] == "more locals not shown"


def remembers_locals(ready: threading.Event, release: threading.Event, out: Dict[str, Any]) -> None:
    seen = locals()
    late = "assigned after locals()"
    ready.set()
    release.wait()
    out["late"] = late
    out["refreshed"] = "late" in seen


def test_reading_locals_does_not_refresh_an_earlier_locals_dict() -> None:
    out: Dict[str, Any] = {}
    with parked(remembers_locals, out, name="remember"):
        snapshot = tbcollect.collect(locals=True)
    v = frame_locals(snapshot, "remember", "remembers_locals")
    assert v["late"] == "'assigned after locals()'"
    assert out["refreshed"] is False


class Released:
    """Logs its release: held only by a frame's stale ``locals()`` dict."""

    def __init__(self, log: List[str]) -> None:
        self.log = log

    def __del__(self) -> None:
        self.log.append("released")


def holds_stale_locals(ready: threading.Event, release: threading.Event, log: List[str]) -> None:
    value: Optional[Released] = Released(log)
    locals()  # up to 3.12 the frame's locals dict now references it too
    value = None  # and from here only that dict does
    ready.set()
    release.wait()
    log.append(f"value is {value}")


def test_reading_locals_frees_nothing_a_stale_locals_dict_holds() -> None:
    # Refreshing that dict (FastToLocals) would free the object inside the
    # capture, running its __del__ there: user code, and a GIL switch.
    log: List[str] = []
    with parked(holds_stale_locals, log, name="stale"):
        before = list(log)
        snapshot = tbcollect.collect(locals=True)
        during = list(log)
    assert during == before
    assert frame_locals(snapshot, "stale", "holds_stale_locals")["value"] == "None"


MODULE_TARGET = r"""
import json, os, threading
import tbcollect

limit = 5
label = "module-level"
api_token = "module-secret"

def helper():
    return limit

class Thing:
    pass

print(json.dumps(tbcollect.collect(locals=True).to_dict()))
"""


def test_module_frames_show_state_not_definitions() -> None:
    proc = run_python(MODULE_TARGET)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    (main,) = [s for s in data["stacks"] if s["name"] == "MainThread"]
    (module,) = [f for f in main["frames"] if f["function"] == "<module>"]
    assert module["locals"] == {
        "limit": "5",
        "label": "'module-level'",
        "api_token": "[redacted]",
    }


PREPARE_TARGET = r"""
import json, threading
import tbcollect

calls = []
recording = [False]

class Namespace(dict):
    # A class namespace whose every method records: none may run during capture.
    def __setitem__(self, key, value):
        if recording[0]:
            calls.append(("set", key))
        super().__setitem__(key, value)

    def __getitem__(self, key):
        if recording[0]:
            calls.append(("get", key))
        return super().__getitem__(key)

    def keys(self):
        if recording[0]:
            calls.append("keys")
        return super().keys()

    def __iter__(self):
        if recording[0]:
            calls.append("iter")
        return super().__iter__()

class Meta(type):
    @classmethod
    def __prepare__(mcls, name, bases):
        return Namespace()

def dump():
    recording[0] = True
    snap = tbcollect.collect(locals=True)
    recording[0] = False
    return snap

class Body(metaclass=Meta):
    size = 3
    def method(self):
        return __class__  # gives the class body a cell variable
    snapshot = dump()

(main,) = [s for s in Body.snapshot.stacks if s.name == "MainThread"]
body = [f for f in main.frames if f.function == "Body"][0]
print(json.dumps({"calls": calls, "locals": body.locals}))
"""


def test_a_class_body_with_a_custom_namespace_runs_no_user_code() -> None:
    proc = run_python(PREPARE_TARGET)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["calls"] == []
    if (3, 11) <= PY < (3, 13):
        # Reading this namespace there would store the cell through it.
        assert result["locals"] is None
    else:
        assert ["size", "3"] in result["locals"]


def test_locals_are_off_by_default_and_options_are_checked() -> None:
    snapshot = tbcollect.collect()
    assert all(f.locals is None for s in snapshot.stacks for f in s.frames)
    assert '"locals":' not in snapshot.to_json()
    for bad in ("yes", 1, object()):
        with pytest.raises(tbcollect.InvalidOptionError, match="locals"):
            tbcollect.collect(locals=bad)
    for bad_redact in ("password", [""], [3], 7):
        with pytest.raises(tbcollect.InvalidOptionError, match="non-empty strings"):
            tbcollect.collect(locals=True, redact=bad_redact)
    saved = tbcollect.REDACT
    tbcollect.REDACT = "token"  # type: ignore[assignment]
    try:
        with pytest.raises(tbcollect.InvalidOptionError, match="tbcollect.REDACT"):
            tbcollect.collect(locals=True)
    finally:
        tbcollect.REDACT = saved


def test_dump_all_passes_locals_through() -> None:
    def waits(ready: threading.Event, release: threading.Event) -> None:
        answer = 42
        ready.set()
        release.wait()

    with parked(waits, name="dumped"):
        text = tbcollect.dump_all(locals=True, format="json")
    data: Optional[Dict[str, Any]] = json.loads(text)
    assert data is not None
    (stack,) = [s for s in data["stacks"] if s["name"] == "dumped"]
    (frame,) = [f for f in stack["frames"] if f["function"].endswith("waits")]
    assert frame["locals"]["answer"] == "42"


def heavy(ready: threading.Event, release: threading.Event, kind: str) -> None:
    def make() -> Any:
        return ["z" * 300] * 10 if kind == "text" else [Recorder("x") for _ in range(10)]

    scope = {"make": make, "ready": ready, "release": release}
    exec(  # 40 locals, each a list of ten long strings or ten fresh objects
        "def park():\n"
        + "".join(f"    v{i:02} = make()\n" for i in range(40))
        + "    ready.set()\n    release.wait()\n",
        scope,
    )
    scope["park"]()


def test_budgets_cap_a_dump_and_say_so() -> None:
    with contextlib.ExitStack() as stack:
        for i in range(50):
            stack.enter_context(parked(heavy, "text", name=f"heavy-{i}"))
        snapshot = tbcollect.collect(locals=True)
    check_snapshot(snapshot)
    kept = [
        f.locals
        for s in snapshot.stacks
        if s.name.startswith("heavy-")
        for f in s.frames
        if f.function == "park"
    ]
    assert len(kept) == 50
    assert all(len(v.encode()) <= 1001 for locals_ in kept if locals_ for _, v in locals_)
    total = sum(len(n) + len(v) for locals_ in kept if locals_ for n, v in locals_)
    assert total <= 1_000_000 + 1_000
    assert any(locals_ is None for locals_ in kept), "the budget ran out"
    (error,) = [e for e in snapshot.errors if e.startswith("locals: the budget")]
    assert "frames have no locals" in error


def test_repr_calls_are_capped_per_dump() -> None:
    with parked(heavy, "objects", name="objects-1"), parked(heavy, "objects", name="objects-2"):
        Recorder.touched.clear()
        snapshot = tbcollect.collect(locals="repr")
        calls = Recorder.touched.count("repr")
    # 800 Recorders (and the threads' other objects) compete for 500 calls.
    assert 400 <= calls <= 500
    (error,) = [e for e in snapshot.errors if "repr()" in e]
    assert error.startswith("locals: at most 500 objects go through repr(); ")
    values = [
        v for s in snapshot.stacks for f in s.frames if f.function == "park" for _, v in f.locals
    ]
    assert any("<Recorder x>" in v for v in values)
    assert any("<test_locals.Recorder object at 0x" in v for v in values)

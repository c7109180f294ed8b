# ruff: noqa: F841 - the parked function's locals are what the benchmark reads
"""What locals, flamegraphs and diffs cost (issue 6).

    python benches/extras.py

1. Capturing 100 parked threads with and without locals, against the
   standard library's ``traceback.StackSummary.extract(capture_locals=True)``
   over ``sys._current_frames()`` (which calls ``repr()`` on every local).
2. Rendering a dump of 10,000 tasks (at 20 distinct places) as text,
   collapsed stacks and SVG.
3. Diffing two such dumps.
"""

from __future__ import annotations

import json
import sys
import threading
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import measure, table  # noqa: E402, I001

import tbcollect  # noqa: E402


def parked(ready: threading.Barrier, release: threading.Event, n: int) -> None:
    request_id = n
    path = f"/api/orders/{n}"
    headers = {"accept": "application/json", "authorization": "Bearer x", "x-n": str(n)}
    retries = [1, 2, 4, 8]
    timeout = 2.5
    payload = b"\x00" * 512
    owner = object()
    ready.wait()
    release.wait()


def stdlib_locals() -> object:
    return [
        traceback.StackSummary.extract(traceback.walk_stack(frame), capture_locals=True)
        for frame in sys._current_frames().values()
    ]


def task_dump(shift: int) -> tbcollect.Snapshot:
    data = json.loads(tbcollect.collect().to_json())
    for i in range(10_000):
        place = (i + shift) % 20 if i % 10 == 0 else i % 20
        data["stacks"].append(
            {
                "kind": "task",
                "id": f"task:{0x10000 + i:#x}",
                "name": f"Task-{i}",
                "thread": None,
                "state": "pending",
                "loop": "loop:0x1",
                "awaiting": None,
                "awaited_by": [],
                "frames_omitted": 0,
                "frames": [
                    {"filename": "/srv/app.py", "lineno": 10, "function": "main", "source": None},
                    {
                        "filename": "/srv/handlers.py",
                        "lineno": 100 + place,
                        "function": f"handler_{place}",
                        "source": None,
                    },
                ],
            }
        )
    return tbcollect.Snapshot.from_json(json.dumps(data))


def main() -> None:
    n = 100
    ready = threading.Barrier(n + 1)
    release = threading.Event()
    threads = [threading.Thread(target=parked, args=(ready, release, i)) for i in range(n)]
    for t in threads:
        t.start()
    ready.wait()
    try:
        times = measure(
            [
                ("collect()", lambda: tbcollect.collect(source=False)),
                ("collect(locals=True)", lambda: tbcollect.collect(source=False, locals=True)),
                (
                    'collect(locals="repr")',
                    lambda: tbcollect.collect(source=False, locals="repr"),
                ),
                ("stdlib capture_locals", stdlib_locals),
            ]
        )
        print(table(f"{n} threads with 8 locals each", times, "stdlib capture_locals"))
    finally:
        release.set()
        for t in threads:
            t.join()

    a, b = task_dump(0), task_dump(3)
    print()
    times = measure(
        [
            ("text", lambda: a.render("text")),
            ("collapsed", lambda: a.render("collapsed")),
            ("svg", lambda: a.render("svg")),
        ]
    )
    print(table("rendering 10,000 tasks", times, "text"))
    print()
    times = measure([("diff 10,000 + 10,000 stacks", lambda: tbcollect.diff(a, b).to_text())])
    print(table("diff", times, "diff 10,000 + 10,000 stacks"))


if __name__ == "__main__":
    main()

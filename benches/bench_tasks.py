"""10,000 asyncio tasks, each suspended 3 coroutines deep: tbcollect against
the recipe people paste from Stack Overflow.

The recipe (`asyncio.all_tasks()` + `Task.get_stack()` +
`traceback.extract_stack()` + `traceback.format_list()`) shows one frame per
task, the outermost coroutine; tbcollect shows all three coroutines, the
`asyncio.sleep` they are in, what each task awaits, and renders the whole
thing as text with identical stacks grouped.

Run: python benches/bench_tasks.py [N]   (prints a Markdown table)
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tbcollect  # noqa: E402
from common import measure, table  # noqa: E402

TASKS = 10_000


async def level3() -> None:
    await asyncio.sleep(3600)


async def level2() -> None:
    await level3()


async def level1() -> None:
    await level2()


def recipe(loop: asyncio.AbstractEventLoop) -> str:
    out: List[str] = []
    for task in asyncio.all_tasks(loop):
        out.append(f"Task {task.get_name()}\n")
        for frame in task.get_stack():
            out.extend(traceback.format_list(traceback.extract_stack(frame)))
    return "".join(out)


def ours() -> str:
    return tbcollect.collect(threads=False, greenlets=False).to_text()


def main(n: int = TASKS) -> str:
    loop = asyncio.new_event_loop()
    try:

        async def start() -> List[asyncio.Task[None]]:
            tasks = [asyncio.create_task(level1(), name=f"worker-{i}") for i in range(n)]
            for _ in range(5):
                await asyncio.sleep(0)
            return tasks

        # The loop stops with every task suspended; both contenders read the
        # same 10,000 pending tasks from the same (idle) thread.
        tasks = loop.run_until_complete(start())
        check_recipe, check_ours = recipe(loop), ours()
        assert check_recipe.count("in level1") == n, "the recipe sees one frame per task"
        assert check_ours.count("in level3") >= 1 and f"{n} tasks" in check_ours
        times = measure(
            [
                (
                    "recipe: all_tasks + get_stack + extract_stack + format_list",
                    lambda: recipe(loop),
                ),
                ("tbcollect: collect(threads=False, greenlets=False).to_text()", ours),
            ]
        )
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    finally:
        loop.close()
    version = ".".join(map(str, sys.version_info[:3]))
    return table(
        f"{n:,} tasks, each 3 coroutines deep (Python {version})",
        times,
        baseline="recipe: all_tasks + get_stack + extract_stack + format_list",
    )


def run() -> str:
    return main(TASKS)


if __name__ == "__main__":
    print(main(int(sys.argv[1]) if len(sys.argv) > 1 else TASKS))

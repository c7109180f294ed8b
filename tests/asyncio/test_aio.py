"""tbcollect.aio: dumps taken by a task of the loop being dumped."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict

import pytest
import tbcollect
from tbcollect import InvalidOptionError, UnknownFormatError

from tests.helpers import HANG_GUARD, forever, settle, task_id, validate_json


def test_dump_returns_and_writes_text(tmp_path: Path):
    target = tmp_path / "now.txt"

    async def main() -> Dict[str, Any]:
        asyncio.create_task(forever(), name="sleeper")
        await settle()
        text = await tbcollect.aio.dump(target, greenlets=False)
        return {"text": text, "me": asyncio.current_task()}

    result = asyncio.run(main())
    assert target.read_text() == result["text"]
    assert f'Task "Task-1" ({task_id(result["me"])}, running' in result["text"] or (
        f"[{task_id(result['me'])}] (running" in result["text"]
    )
    assert "awaiting sleep (wakes in" in result["text"]
    # Its frames end at the `await tbcollect.aio.dump(...)` line, not inside tbcollect.
    assert "text = await tbcollect.aio.dump(target, greenlets=False)" in result["text"]
    assert "tbcollect/aio.py" not in result["text"]


def test_dump_json_to_a_file_object_and_a_descriptor(tmp_path: Path):
    buffer = io.StringIO()
    path = tmp_path / "fd.json"

    async def main() -> None:
        await tbcollect.aio.dump(buffer, format="json", threads=False)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            await tbcollect.aio.dump(fd, format="json", indent=2, threads=False)
        finally:
            os.close(fd)

    asyncio.run(main())
    data = validate_json(buffer.getvalue())
    assert [s["state"] for s in data["stacks"] if s["kind"] == "task"] == ["running"]
    validate_json(path.read_text())


def test_dump_rejects_bad_arguments_before_capturing():
    async def main(**kwargs: Any) -> None:
        await tbcollect.aio.dump(**kwargs)

    with pytest.raises(UnknownFormatError):
        asyncio.run(main(format="yaml"))
    with pytest.raises(InvalidOptionError, match="file"):
        asyncio.run(main(file=3.5))
    with pytest.raises(InvalidOptionError, match="colour"):
        asyncio.run(main(colour=True))


@pytest.mark.slow
def test_periodic_dump_new_file_per_dump(tmp_path: Path):
    pattern = str(tmp_path / "dump-{n}.json")

    async def main() -> None:
        dumper = asyncio.create_task(
            tbcollect.aio.periodic_dump(0.01, pattern, format="json", threads=False),
            name="dumper",
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG_GUARD
        while not (tmp_path / "dump-3.json").exists():
            assert loop.time() < deadline, "three dumps never appeared"
            await asyncio.sleep(0.01)
        dumper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dumper

    asyncio.run(main())
    for n in (1, 2, 3):
        data = validate_json((tmp_path / f"dump-{n}.json").read_text())
        dumper = [s for s in data["stacks"] if s["name"] == "dumper"]
        assert dumper and dumper[0]["state"] == "running"


@pytest.mark.slow
def test_periodic_dump_replaces_one_file_and_survives_write_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    latest = tmp_path / "latest.txt"
    missing = tmp_path / "no-such-dir" / "dump.txt"

    async def main() -> None:
        good = asyncio.create_task(tbcollect.aio.periodic_dump(0.01, latest, threads=False))
        bad = asyncio.create_task(tbcollect.aio.periodic_dump(0.01, missing, threads=False))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG_GUARD
        while len([r for r in caplog.records if "periodic dump" in r.getMessage()]) < 2:
            assert loop.time() < deadline, "the failing dumper never logged"
            await asyncio.sleep(0.01)
        assert not bad.done()  # the failure was logged, not raised into the loop
        while not latest.exists():
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
        for task in (good, bad):
            task.cancel()
        await asyncio.gather(good, bad, return_exceptions=True)

    with caplog.at_level(logging.WARNING, logger="tbcollect"):
        asyncio.run(main())
    assert latest.read_text().startswith("tbcollect: pid ")
    assert list(tmp_path.iterdir()) == [latest]  # replaced in place, no temporary left
    assert not missing.exists()


@pytest.mark.slow
def test_periodic_dump_to_a_stream_appends(capsys: pytest.CaptureFixture[str]):
    async def main() -> None:
        task = asyncio.create_task(tbcollect.aio.periodic_dump(0.01, format="json", threads=False))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG_GUARD
        while capsys.readouterr().err.count('"schema"') < 1:
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_periodic_dump_checks_its_arguments_at_once():
    async def start(*args: Any, **kwargs: Any) -> None:
        await tbcollect.aio.periodic_dump(*args, **kwargs)

    for interval in (0, -1, float("inf"), True, "1"):
        with pytest.raises(InvalidOptionError, match="interval"):
            asyncio.run(start(interval))
    with pytest.raises(UnknownFormatError):
        asyncio.run(start(1, format="xml"))
    with pytest.raises(InvalidOptionError, match="placeholders"):
        asyncio.run(start(1, "/tmp/{host}.txt"))
    with pytest.raises(InvalidOptionError, match="max_depth"):
        asyncio.run(start(0.001, io.StringIO(), max_depth=0))


def test_aio_is_exported():
    assert "aio" in tbcollect.__all__
    assert tbcollect.aio.dump is not None
    assert json.loads(json.dumps(sorted(tbcollect.aio.__all__))) == ["dump", "periodic_dump"]

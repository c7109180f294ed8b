"""tbcollect._logging.emit: one record per dump, the snapshot in the record."""

from __future__ import annotations

import io
import json
import logging
import threading
from typing import Iterator, List

import pytest
import tbcollect
from tbcollect._logging import emit

from tests.helpers import validate_json


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def keep() -> Iterator[Keep]:
    handler = Keep()
    logger = logging.getLogger("tbcollect")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def test_one_record_with_the_header_and_the_whole_snapshot(keep: Keep) -> None:
    release = threading.Event()
    worker = threading.Thread(target=release.wait, name="logged-worker", daemon=True)
    worker.start()
    try:
        snapshot = tbcollect.collect()
    finally:
        release.set()
        worker.join(30)
    emit(snapshot, reason="event loop blocked for 2.1 s")
    (record,) = keep.records
    assert record.name == "tbcollect"
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f"{snapshot.summary()} (event loop blocked for 2.1 s)"
    assert record.tbcollect == snapshot.to_dict()  # type: ignore[attr-defined]
    assert record.tbcollect_reason == "event loop blocked for 2.1 s"  # type: ignore[attr-defined]
    # What a JSON log formatter would ship is a valid dump.
    data = validate_json(json.dumps(record.tbcollect))  # type: ignore[attr-defined]
    assert "logged-worker" in [s["name"] for s in data["stacks"]]


def test_logger_by_object_or_name_and_level() -> None:
    snapshot = tbcollect.collect(threads=True, greenlets=False, tasks=False)
    stream = io.StringIO()
    logger = logging.getLogger("app.hangs")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        emit(snapshot, logger=logger, level=logging.ERROR)
        emit(snapshot, logger="app.hangs", level=logging.INFO)
        emit(snapshot, logger="app.hangs", level=logging.DEBUG)  # below the logger's level
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == (
        f"ERROR app.hangs {snapshot.summary()}\nINFO app.hangs {snapshot.summary()}\n"
    )


def test_bad_logger_or_level_is_a_clear_error() -> None:
    snapshot = tbcollect.collect()
    with pytest.raises(tbcollect.InvalidOptionError, match="logger"):
        emit(snapshot, logger=42)  # type: ignore[arg-type]
    with pytest.raises(tbcollect.InvalidOptionError, match="level"):
        emit(snapshot, level="WARNING")  # type: ignore[arg-type]

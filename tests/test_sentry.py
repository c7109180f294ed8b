"""tbcollect.sentry end to end: the real sentry-sdk in a child process sends
to a loopback HTTP server run by the test, which decodes the envelope."""

from __future__ import annotations

import gzip
import json
import queue
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import tbcollect
import tbcollect.sentry

from tests.helpers import run_python, stacks_of

pytest.importorskip("sentry_sdk")


def decode_envelope(body: bytes) -> List[Dict[str, Any]]:
    """The items of a Sentry envelope: header line, then (item header, payload) pairs."""
    lines = body.split(b"\n", 1)
    rest = lines[1] if len(lines) > 1 else b""
    items = []
    while rest.strip():
        header_line, rest = rest.split(b"\n", 1)
        header = json.loads(header_line)
        length = header.get("length")
        if length is None:
            payload, _, rest = rest.partition(b"\n")
        else:
            payload, rest = rest[:length], rest[length + 1 :]
        items.append({"header": header, "payload": payload})
    return items


class Collector(BaseHTTPRequestHandler):
    received: queue.Queue[Dict[str, Any]]

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding == "br":
            import brotli  # only sent when the SDK found brotli installed

            body = brotli.decompress(body)
        self.server.received.put(  # type: ignore[attr-defined]
            {"path": self.path, "auth": self.headers.get("X-Sentry-Auth", ""), "body": body}
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sentry_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    server.received = queue.Queue()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def events(server: ThreadingHTTPServer) -> List[Dict[str, Any]]:
    out = []
    while True:
        try:
            request = server.received.get(timeout=0.5)  # type: ignore[attr-defined]
        except queue.Empty:
            return out
        assert request["path"] == "/api/1/envelope/"
        assert "sentry_key=public" in request["auth"]
        for item in decode_envelope(request["body"]):
            if item["header"]["type"] == "event":
                out.append(json.loads(item["payload"]))


TARGET = r"""
import json, sys, threading
import sentry_sdk
import tbcollect, tbcollect.sentry

sentry_sdk.init(dsn=sys.argv[1], default_integrations=False, auto_enabling_integrations=False)

ready = threading.Event()
release = threading.Event()

def fetch_report(report_id):
    attempts = 3
    api_token = "tok-5up3r-s3cret"
    ready.set()
    release.wait()

worker = threading.Thread(target=fetch_report, args=(7,), name="report-7")
worker.start()
ready.wait()
snapshot = tbcollect.collect(locals=True)
event_id = tbcollect.sentry.capture(snapshot, message="reports stuck", level="warning")
release.set()
worker.join()
sentry_sdk.flush(timeout=30)
print(json.dumps({"event_id": event_id, "snapshot": snapshot.to_dict()}))
"""


def test_capture_sends_every_stack_through_the_threads_interface(
    sentry_server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    script = tmp_path / "reports.py"
    script.write_text(TARGET)
    dsn = f"http://public@127.0.0.1:{sentry_server.server_port}/1"
    proc = run_python(str(script), dsn)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    (event,) = events(sentry_server)

    assert event["event_id"] == result["event_id"]
    assert event["message"] == "reports stuck"
    assert event["level"] == "warning"
    assert event["extra"]["tbcollect"]["pid"] == result["snapshot"]["pid"]
    threads = event["threads"]["values"]
    stacks = result["snapshot"]["stacks"]
    # One entry per stack, whatever its kind, in snapshot order.
    assert [t["id"] for t in threads] == [s["id"] for s in stacks]
    for entry, stack in zip(threads, stacks):
        assert entry["crashed"] is False
        assert entry["state"] == stack["state"]
        assert stack["name"] in entry["name"]
        frames = entry.get("stacktrace", {}).get("frames", [])
        assert [f["function"] for f in frames] == [f["function"] for f in stack["frames"]]

    (worker,) = [t for t in threads if t["name"] == 'Thread "report-7"']
    assert worker["current"] is False and worker["main"] is False
    frames = worker["stacktrace"]["frames"]
    # Oldest first: threading's bootstrap, the target, then the wait.
    assert frames[0]["module"] == "threading" and frames[0]["in_app"] is False
    assert frames[-1]["function"].endswith("wait") and frames[-1]["in_app"] is False
    (target,) = [f for f in frames if f["function"] == "fetch_report"]
    assert target["abs_path"] == str(script)
    assert target["filename"] == "reports.py"
    assert target["module"] == "__main__"
    assert target["context_line"] == "release.wait()"
    assert target["lineno"] == TARGET.splitlines().index("    release.wait()") + 1
    assert target.get("in_app") is not False, "application code: the SDK's own rules decide"
    assert target["vars"]["report_id"] == "7"
    assert target["vars"]["attempts"] == "3"
    assert target["vars"]["api_token"] == "[redacted]"
    assert "tok-5up3r" not in json.dumps(event)

    (main,) = [t for t in threads if t["name"] == 'Thread "MainThread"']
    assert main["current"] is True and main["main"] is True


CLIENT_TARGET = r"""
import json, sys
import sentry_sdk
import tbcollect.sentry

# The global SDK stays uninitialised: the event must go through the given client.
client = sentry_sdk.Client(dsn=sys.argv[1], default_integrations=False)
event_id = tbcollect.sentry.capture(client=client, message="via client")
unsent = tbcollect.sentry.capture(message="no DSN configured")
client.flush(timeout=30)
print(json.dumps({"event_id": event_id, "unsent": unsent}))
"""


def test_capture_through_an_explicit_client(
    sentry_server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    script = tmp_path / "client.py"
    script.write_text(CLIENT_TARGET)
    proc = run_python(str(script), f"http://public@127.0.0.1:{sentry_server.server_port}/1")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["unsent"] is None, "no client configured: nothing is sent"
    (event,) = events(sentry_server)
    assert event["event_id"] == result["event_id"]
    assert event["message"] == "via client"
    assert any(t["current"] for t in event["threads"]["values"])


def test_many_identical_stacks_are_merged_past_max_stacks() -> None:
    release = threading.Event()
    workers = [
        threading.Thread(target=release.wait, name=f"idle-{i}", daemon=True) for i in range(12)
    ]
    for w in workers:
        w.start()
    try:
        snapshot = tbcollect.collect()
    finally:
        release.set()
        for w in workers:
            w.join()
    idle = [s for s in stacks_of(snapshot, "thread") if s.name.startswith("idle-")]
    assert len(idle) == 12
    event = tbcollect.sentry.event_from_snapshot(snapshot, max_stacks=3)
    names = [t["name"] for t in event["threads"]["values"]]
    assert len(names) <= 3
    merged = [n for n in names if n.startswith('Thread "idle-')]
    # The twelve waiting workers are one entry (or their group was cut).
    assert merged == [] or merged[0].endswith("and 11 more with this stack")
    left_out = event["extra"]["tbcollect"]["stacks_left_out"]
    assert sum(
        int(n.split(" and ")[1].split()[0]) + 1 if " and " in n else 1 for n in names
    ) + left_out == len(snapshot.stacks)


def test_bad_options_and_missing_sdk_are_clear_errors(tmp_path: Path) -> None:
    snapshot = tbcollect.collect()
    with pytest.raises(tbcollect.InvalidOptionError, match="level"):
        tbcollect.sentry.event_from_snapshot(snapshot, level="loud")
    with pytest.raises(tbcollect.InvalidOptionError, match="snapshot=None"):
        tbcollect.sentry.capture(snapshot, locals=True)
    script = tmp_path / "nosdk.py"
    script.write_text(
        "import sys\n"
        "sys.modules['sentry_sdk'] = None  # as if it were not installed\n"
        "import tbcollect, tbcollect.sentry\n"
        "try:\n"
        "    tbcollect.sentry.capture()\n"
        "except tbcollect.MissingDependencyError as e:\n"
        "    assert isinstance(e, ImportError)\n"
        "    print(e)\n"
    )
    proc = run_python(str(script))
    assert proc.returncode == 0, proc.stderr
    assert "needs the sentry-sdk package" in proc.stdout

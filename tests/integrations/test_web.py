"""tbcollect.web against real servers: the guarded dump endpoint mounted in
Starlette (under uvicorn), Flask and Django (under gunicorn, gevent workers),
with 300 labelled requests in flight and /ping answering between dumps."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import tbcollect
import tbcollect.web

from tests.helpers import (
    Server,
    base_env,
    free_port,
    http_get,
    need,
    open_requests,
    validate_json,
    wait_http,
    wait_until,
)

TOKEN = "integration-test-token-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IN_FLIGHT = 300


def server(tmp_path: Path, name: str) -> Server:
    port = free_port()
    if name == "starlette":
        need("starlette")
        need("uvicorn")
        argv = [sys.executable, "-m", "uvicorn", "starlette_app:app", "--port", str(port)]
        argv += ["--host", "127.0.0.1", "--log-level", "warning"]
    else:
        need(name)
        need("gunicorn")
        need("gevent")
        argv = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1"]
        argv += ["-b", f"127.0.0.1:{port}", f"{name}_app:app"]
    env = base_env(tmp_path / "dumps", TBCOLLECT_WEB_TOKEN=TOKEN)
    s = Server(argv, log=tmp_path / "server.log", home=tmp_path / "home", env=env)
    s.port = port  # type: ignore[attr-defined]
    return s


def slow_stacks(data: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [s for s in data["stacks"] if any(f["function"] == "slow_request" for f in s["frames"])]


@pytest.mark.parametrize("name", ["starlette", "flask", "django"])
def test_endpoint_lists_every_labelled_request_in_flight(tmp_path, name):
    with server(tmp_path, name) as s:
        wait_http(s.port)
        # No token, a wrong one, a right one with another scheme: 401, no body.
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            status, _, body = http_get(s.port, "/debug/stacks", headers)
            assert (status, body) == (401, b""), headers
        socks = open_requests(s.port, "/slow?120", IN_FLIGHT)
        try:

            def all_in_flight() -> Optional[Dict[str, Any]]:
                status, headers, body = http_get(s.port, "/debug/stacks?format=json", AUTH)
                assert status == 200 and headers["content-type"] == "application/json"
                # The server keeps answering between dumps.
                assert http_get(s.port, "/ping")[0] == 200
                data = validate_json(body.decode())
                return data if len(slow_stacks(data)) >= IN_FLIGHT else None

            data = wait_until(all_in_flight, f"{IN_FLIGHT} requests in a dump")
            labels = [stack.get("labels") for stack in slow_stacks(data)]
            assert all(lab == {"request": "'GET /slow'"} for lab in labels), labels
            # The endpoint's own request is told apart.
            own = [
                s
                for s in data["stacks"]
                if s.get("labels", {}).get("request", "").endswith("(this dump)'")
            ]
            assert [s["kind"] for s in own if s["kind"] != "thread"] == [
                "task" if name == "starlette" else "greenlet"
            ], own

            status, headers, body = http_get(s.port, "/debug/stacks", AUTH)
            assert status == 200 and headers["content-type"].startswith("text/plain")
            text = body.decode()
            assert text.startswith(f"tbcollect: pid {data['pid']}")
            assert "request='GET /slow'" in text and "in slow_request" in text

            status, headers, body = http_get(s.port, "/debug/stacks?format=svg", AUTH)
            assert status == 200 and headers["content-type"] == "image/svg+xml"
            assert ET.fromstring(body).tag.endswith("svg")

            status, _, body = http_get(s.port, "/debug/stacks?format=pdf", AUTH)
            assert status == 400 and b"unknown format" in body
        finally:
            for sock in socks:
                sock.close()
        assert http_get(s.port, "/ping")[0] == 200


def test_no_token_refuses_to_start(monkeypatch):
    monkeypatch.delenv("TBCOLLECT_WEB_TOKEN", raising=False)
    for make in (tbcollect.web.asgi, tbcollect.web.wsgi):
        with pytest.raises(tbcollect.InvalidOptionError, match="needs a token"):
            make()
        with pytest.raises(tbcollect.InvalidOptionError, match="at least 16"):
            make(token="short")


def test_wsgi_endpoint_in_process(monkeypatch):
    # The same rules without a server, through the WSGI interface itself.
    monkeypatch.setenv("TBCOLLECT_WEB_TOKEN", TOKEN)
    app = tbcollect.web.mount(lambda env, start: [b"app"], "/debug/stacks", tbcollect.web.wsgi())
    answers: List[Any] = []

    def call(path: str, query: str = "", method: str = "GET", **headers: str) -> bytes:
        environ = {"PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": method, **headers}
        return b"".join(app(environ, lambda status, hdrs: answers.append(status)))

    assert call("/other") == b"app"
    assert call("/debug/stacks") == b"" and answers[-1] == "401 Unauthorized"
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    body = call("/debug/stacks", "format=json", **bearer)
    assert answers[-1] == "200 OK"
    assert any(
        "test_wsgi_endpoint_in_process" in f["function"]
        for s in validate_json(body.decode())["stacks"]
        for f in s["frames"]
    )
    assert call("/debug/stacks", method="POST", **bearer).startswith(b"method not allowed")
    assert answers[-1] == "405 Method Not Allowed"
    with pytest.raises(tbcollect.InvalidOptionError, match="path"):
        tbcollect.web.mount(app, "debug", app)

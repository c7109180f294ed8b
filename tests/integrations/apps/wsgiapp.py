"""A WSGI app for the gunicorn tests: /ping, /slow?SECONDS (a request in
flight), /inflight (how many are), /hang (holds the GIL in C, forever)."""

import itertools
import time

inflight = 0


def hang_in_c():
    # sum() over a C iterator never returns to the eval loop: the GIL is
    # never released and no Python-level signal handler runs.
    return sum(itertools.repeat(1, 10**15))


def slow_request(seconds):
    global inflight
    inflight += 1
    try:
        time.sleep(seconds)
    finally:
        inflight -= 1


def app(environ, start_response):
    path = environ["PATH_INFO"]
    body = b"ok\n"
    if path == "/hang":
        hang_in_c()
    elif path == "/slow":
        slow_request(float(environ.get("QUERY_STRING") or 60))
    elif path == "/inflight":
        body = str(inflight).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]

"""An ASGI app for the uvicorn tests: /ping, /slow?SECONDS (a request in
flight), /inflight (how many are), /hang (holds the GIL in C, forever), /block?SECONDS (blocks the
loop without the GIL)."""

import asyncio
import itertools
import time

inflight = 0


def hang_in_c():
    return sum(itertools.repeat(1, 10**15))


async def slow_request(seconds):
    global inflight
    inflight += 1
    try:
        await asyncio.sleep(seconds)
    finally:
        inflight -= 1


def blocking_call(seconds):
    # A blocking call in async code: the loop stops, the GIL is free.
    time.sleep(seconds)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    body = b"ok\n"
    if path == "/hang":
        hang_in_c()
    elif path == "/slow":
        await slow_request(float(scope["query_string"] or 60))
    elif path == "/block":
        blocking_call(float(scope["query_string"] or 60))
    elif path == "/inflight":
        body = str(inflight).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})

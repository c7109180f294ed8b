"""Starlette under uvicorn: /ping, /slow?SECONDS, and the dump endpoint at
/debug/stacks; every request labelled."""

import asyncio

import tbcollect.web
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def ping(request):
    return PlainTextResponse("ok\n")


async def slow_request(request):
    await asyncio.sleep(float(request.url.query or 60))
    return PlainTextResponse("slow\n")


app = tbcollect.web.label_requests(
    Starlette(
        routes=[
            Route("/ping", ping),
            Route("/slow", slow_request),
            Route("/debug/stacks", tbcollect.web.asgi()),
        ]
    )
)

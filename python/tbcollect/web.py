"""A guarded dump endpoint for web apps, and request labels.

The endpoint, like Spring's ``/actuator/threaddump`` or Go's
``/debug/pprof/goroutine``: GET returns a dump of the serving process,
``?format=text|json|svg|collapsed`` picks the format (default text)::

    # Starlette (ASGI): a Route, not a Mount (which answers /debug/stacks
    # with a redirect to /debug/stacks/)
    Route("/debug/stacks", tbcollect.web.asgi())
    # FastAPI
    app.add_route("/debug/stacks", tbcollect.web.asgi())

    # Flask, Django, any WSGI app
    application = tbcollect.web.mount(application, "/debug/stacks", tbcollect.web.wsgi())

A token is required: ``token=`` or ``$TBCOLLECT_WEB_TOKEN`` (at least 16
characters); without one the endpoint refuses to be created. Requests must
send ``Authorization: Bearer <token>``, compared in constant time; a missing
or wrong token gets 401 with no body. A dump shows file names, function
names and thread names of the process: serve it only where the token is
kept secret (HTTPS, an internal port).

Request labels (opt-in): ``tbcollect.web.label_requests(app)`` wraps an ASGI
or WSGI app so that while a request is served, ``tbcollect.web.REQUEST`` (a
context variable registered with ``tbcollect.label()``) holds
``METHOD /path`` in the request's own context: each task, greenlet or thread
serving one carries the label ``request='GET /slow'`` in a dump, and a dump
of 300 requests in flight says what each one serves. Nothing of the app's
own is renamed. The query string is left out (it often carries secrets).
"""

from __future__ import annotations

import contextvars
import hmac
import inspect
import os
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from tbcollect._errors import InvalidOptionError

__all__ = ["REQUEST", "asgi", "label_requests", "mount", "wsgi"]

#: The environment variable a token is read from when ``token`` is not given.
TOKEN_VARIABLE = "TBCOLLECT_WEB_TOKEN"
MIN_TOKEN_LENGTH = 16
#: The request a task, greenlet or thread is serving (set by ``label_requests``),
#: shown as its ``request`` label.
REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request")
# The endpoint's own request, so a reader can tell it from the others.
_OWN = " (this dump)"
# A label is capped: paths can be long (and are chosen by the client).
_MAX_LABEL = 200

_CONTENT_TYPES = {
    "text": "text/plain; charset=utf-8",
    "json": "application/json",
    "svg": "image/svg+xml",
    "collapsed": "text/plain; charset=utf-8",
}


def _token(token: Optional[str]) -> bytes:
    if token is None:
        token = os.environ.get(TOKEN_VARIABLE) or None
    if token is None:
        raise InvalidOptionError(
            "invalid option token: the dump endpoint needs a token "
            f"(token=... or ${TOKEN_VARIABLE})"
        )
    if not isinstance(token, str) or len(token.strip()) < MIN_TOKEN_LENGTH:
        raise InvalidOptionError(
            f"invalid option token: must be a string of at least {MIN_TOKEN_LENGTH} characters"
        )
    return token.strip().encode()


class _Guard:
    """What both endpoints share: the token check and the dump."""

    def __init__(self, token: Optional[str]) -> None:
        self._expected = b"Bearer " + _token(token)

    def allowed(self, authorization: Optional[bytes]) -> bool:
        # compare_digest takes time independent of where the inputs differ.
        return hmac.compare_digest(authorization or b"", self._expected)

    @staticmethod
    def answer(method: str, query: str) -> Tuple[int, str, bytes]:
        """(status, content type, body) for an authorized request."""
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"method not allowed: use GET\n"
        fmt = "text"
        for part in query.split("&"):
            name, _, value = part.partition("=")
            if name == "format":
                fmt = value
        if fmt not in _CONTENT_TYPES:
            body = f"unknown format; use one of: {', '.join(_CONTENT_TYPES)}\n"
            return 400, "text/plain; charset=utf-8", body.encode()
        import tbcollect

        text = tbcollect.collect().render(fmt)
        return 200, _CONTENT_TYPES[fmt], text.encode("utf-8", "surrogateescape")


class _AsgiEndpoint:
    # A class, not a function: Starlette's Route serves an object that is not
    # a function as an ASGI app, and a function as a request handler.
    def __init__(self, guard: _Guard) -> None:
        self._guard = guard

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            return  # lifespan and websockets: nothing to serve
        authorization = None
        for name, value in scope.get("headers") or ():
            if name.lower() == b"authorization":
                authorization = value
        if not self._guard.allowed(authorization):
            await _asgi_send(send, 401, None, b"")
            return
        method = scope.get("method", "GET")
        query = (scope.get("query_string") or b"").decode("latin-1")
        path = scope.get("root_path", "") + scope.get("path", "")
        reset = REQUEST.set(_label(method, path) + _OWN)
        try:
            status, content_type, body = self._guard.answer(method, query)
        finally:
            REQUEST.reset(reset)
        await _asgi_send(send, status, content_type, b"" if method == "HEAD" else body)

    def __repr__(self) -> str:
        return "<tbcollect dump endpoint (ASGI)>"


def asgi(*, token: Optional[str] = None) -> Callable[..., Any]:
    """An ASGI app that answers GET with a dump of this process (see the
    module's doc). Serve it at a path: ``Route("/debug/stacks", asgi())`` in
    Starlette, ``app.add_route("/debug/stacks", asgi())`` in FastAPI."""
    return _AsgiEndpoint(_Guard(token))


async def _asgi_send(send: Any, status: int, content_type: Optional[str], body: bytes) -> None:
    headers = [(b"cache-control", b"no-store"), (b"content-length", str(len(body)).encode())]
    if content_type:
        headers.append((b"content-type", content_type.encode()))
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
}


def wsgi(*, token: Optional[str] = None) -> Callable[..., Iterable[bytes]]:
    """A WSGI app that answers GET with a dump of this process (see the
    module's doc). Mount it at any path, e.g. with :func:`mount`."""
    guard = _Guard(token)

    def endpoint(environ: Dict[str, Any], start_response: Any) -> Iterable[bytes]:
        authorization = environ.get("HTTP_AUTHORIZATION")
        if not guard.allowed(authorization.encode("latin-1") if authorization else None):
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Length", "0"),
                    ("Cache-Control", "no-store"),
                    ("WWW-Authenticate", "Bearer"),
                ],
            )
            return [b""]
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        reset = REQUEST.set(_label(method, path) + _OWN)
        try:
            status, content_type, body = guard.answer(method, environ.get("QUERY_STRING", ""))
        finally:
            REQUEST.reset(reset)
        if method == "HEAD":
            body = b""
        start_response(
            f"{status} {_REASONS[status]}",
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]

    return endpoint


def mount(
    app: Callable[..., Iterable[bytes]], path: str, endpoint: Callable[..., Iterable[bytes]]
) -> Callable[..., Iterable[bytes]]:
    """A WSGI app that sends requests for ``path`` (and below it) to
    ``endpoint`` and everything else to ``app``."""
    if not path.startswith("/") or path == "/":
        raise InvalidOptionError(f"invalid option path: {path!r} must start with / and name a path")
    prefix = path.rstrip("/")

    def dispatch(environ: Dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path_info = environ.get("PATH_INFO", "")
        if path_info == prefix or path_info.startswith(prefix + "/"):
            environ = dict(environ)
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
            environ["PATH_INFO"] = path_info[len(prefix) :]
            return endpoint(environ, start_response)
        return app(environ, start_response)

    return dispatch


def _label(method: str, path: str) -> str:
    label = f"{method} {path}"
    return label if len(label) <= _MAX_LABEL else label[: _MAX_LABEL - 1] + "…"


def _is_asgi(app: Any) -> bool:
    if inspect.iscoroutinefunction(app):
        return True
    # The class's __call__ (an instance's own attribute is not what calls it).
    call = type(app).__dict__.get("__call__") or next(
        (k.__dict__["__call__"] for k in type(app).__mro__ if "__call__" in k.__dict__), None
    )
    return call is not None and inspect.iscoroutinefunction(call)


def label_requests(app: Any, *, asgi: Optional[bool] = None) -> Any:
    """Wraps an ASGI or WSGI app (``asgi=`` overrides the guess, which looks
    for an ``async`` app or ``__call__``): while a request is served,
    ``tbcollect.web.REQUEST`` holds ``METHOD /path`` in its context, and the
    task, greenlet or thread serving it carries that as its ``request`` label."""
    import tbcollect

    tbcollect.label(REQUEST)
    if asgi if asgi is not None else _is_asgi(app):
        return _label_asgi(app)
    return _label_wsgi(app)


def _label_asgi(app: Any) -> Callable[..., Any]:
    async def labelled(scope: Dict[str, Any], receive: Any, send: Any) -> Any:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            return await app(scope, receive, send)
        method = scope.get("method", "GET") if kind == "http" else "WEBSOCKET"
        reset = REQUEST.set(_label(method, scope.get("root_path", "") + scope.get("path", "")))
        try:
            return await app(scope, receive, send)
        finally:
            REQUEST.reset(reset)

    return labelled


def _label_wsgi(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    def labelled(environ: Dict[str, Any], start_response: Any) -> Iterable[bytes]:
        label = _label(
            environ.get("REQUEST_METHOD", "GET"),
            environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
        )
        reset = REQUEST.set(label)
        try:
            return app(environ, start_response)
        finally:
            REQUEST.reset(reset)

    return labelled

"""The WSGI side of the gate API's server (PEP 3333): the environ of a request read whole,
as aiohttp's server and the connections' front both make it, and the call of the
application (in a thread of the server's pool)."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote

from ._http import RAW_PATH

__all__ = ["Answer", "WSGIApp", "call_app", "environ_of"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Answer = tuple[str, list[tuple[str, str]], bytes]


def environ_of(
    method: str,
    target: str,
    protocol: str,
    sockname: Any,
    remote: str,
    body: bytes,
    content_length: str,
    headers: Iterable[tuple[str, str]],
) -> dict[str, Any]:
    """The WSGI environ of a request read whole: ``target`` as sent (path and query),
    ``sockname`` the listening address, ``content_length`` as the environ gives it ("" for
    none). A header sent more than once is joined with commas, ``Content-Type`` is the
    first one's."""
    path, _, query = target.partition("?")
    host, port = sockname[:2]
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        RAW_PATH: target,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote(path, "latin-1"),
        "QUERY_STRING": query,
        "CONTENT_TYPE": "",
        "CONTENT_LENGTH": content_length,
        "SERVER_NAME": str(host),
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": protocol,
        "REMOTE_ADDR": remote,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    content_type = None
    for name, value in headers:
        if "_" in name:  # HTTP_X_Y must not be forged by "X_Y" beside "X-Y"
            continue
        key = "HTTP_" + name.upper().replace("-", "_")
        if key == "HTTP_CONTENT_TYPE":
            content_type = value if content_type is None else content_type
        elif key != "HTTP_CONTENT_LENGTH":
            environ[key] = f"{environ[key]},{value}" if key in environ else value
    environ["CONTENT_TYPE"] = content_type or ""
    return environ


def call_app(app: WSGIApp, environ: dict[str, Any]) -> Answer:
    """The application's status, headers and body (in a thread of the pool)."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
        started[:] = [status, headers]

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return started[0], started[1], body

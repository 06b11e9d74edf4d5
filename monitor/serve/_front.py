"""The front of each connection: a small protocol that reads its requests, answers on the spot
what the application answers without I/O (``GateAPI.cached``: the reads it keeps half a
second), asks the application in a thread of the server's pool for the rest, and hands the
connection to aiohttp's server for any request it does not read without doubt.

Why: bench/http_api.py measured aiohttp's server at 0.16-0.19 ms of CPU per connection for a
constant answer, and a bare asyncio protocol at 0.07 ms; in a burst of 200 controllers, all
but the first requests about an agent are answered from what is kept, so aiohttp's cost was
most of the server's. The front takes only what it reads without doubt: HTTP/1.1, ``GET``,
``HEAD`` or ``POST``, the head in printable ASCII within :data:`HEAD_LIMIT` bytes (one
``Host``, no folded line, no ``Transfer-Encoding``, ``Expect`` or ``Upgrade``, no second
of a field aiohttp takes once, as ``Content-Length``), a body of at most
:data:`BODY_LIMIT` bytes. Anything else goes to aiohttp with the bytes as they came (it
answers it as before, and keeps the connection). The bounds are the server's: a head due within
``REQUEST_TIMEOUT`` of the connection or of the last answer, a body within it of its head
(else 408), the bodies held counted in ``BODY_BUDGET`` (else 503).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import Executor
from email.utils import formatdate
from typing import Any, Protocol

from . import _limits
from ._wsgi import Answer, WSGIApp, call_app, environ_of

__all__ = ["BODY_LIMIT", "Front"]

HEAD_LIMIT = 8190
"""A head longer than this goes to aiohttp (its line limit: a longer line it refuses)."""
BODY_LIMIT = 16 * 1024
"""A larger body goes to aiohttp (Flagger's payloads are ~1 KB): the front holds at most
this much of a body per connection."""
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_VALUE = re.compile(rb"[\x20-\x7e\t]*\Z")
_TARGET = re.compile(rb"/[\x21-\x7e]*\Z")
# aiohttp refuses a request with two of these (RFC 9110 5.3: a field that is not a list).
_SINGLETONS = {
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "etag",
    "host",
    "max-forwards",
    "server",
    "transfer-encoding",
    "user-agent",
}
_REFUSED = {408: "Request Timeout", 500: "Internal Server Error", 503: "Service Unavailable"}
log = logging.getLogger(__name__)


class _Server(Protocol):
    """What a front shares with its server (``_server.HTTPServer``): the application, the
    pool that calls it, the connection slots, the bodies held, and aiohttp's server to
    hand a connection to."""

    _held: int

    @property
    def _app(self) -> WSGIApp: ...
    @property
    def _cached(self) -> Callable[[dict[str, Any]], Answer | None] | None: ...
    @property
    def _fronts(self) -> set[Front]: ...
    @property
    def _pool(self) -> Executor: ...
    @property
    def _slots(self) -> asyncio.Semaphore: ...
    @property
    def _web(self) -> Callable[[], asyncio.Protocol]: ...


class _Head:
    """A request head the front takes."""

    __slots__ = ("close", "has_length", "headers", "length", "method", "target")

    def __init__(self, method: str, target: str, headers: list[tuple[str, str]]) -> None:
        self.method, self.target, self.headers = method, target, headers
        self.length, self.has_length, self.close = 0, False, False


def _parse(head: bytes) -> _Head | None:
    """The head, if the front takes it without doubt; else None (aiohttp's)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or parts[0] not in (b"GET", b"HEAD", b"POST"):
        return None
    if not _TARGET.match(parts[1]):
        return None
    request = _Head(parts[0].decode(), parts[1].decode(), [])
    seen: set[str] = set()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name) or not _VALUE.match(value):
            return None
        key, text = name.decode().lower(), value.strip(b" \t").decode()
        if key in ("transfer-encoding", "expect", "upgrade") or (
            key in seen and key in _SINGLETONS
        ):
            return None
        seen.add(key)
        if key == "content-length":
            if not text.isdigit():
                return None
            request.length, request.has_length = int(text), True
        elif key == "connection":
            tokens = {token.strip().lower() for token in text.split(",")}
            if "upgrade" in tokens:
                return None
            request.close = request.close or "close" in tokens  # a list: lines combine
        request.headers.append((name.decode(), text))
    if (
        "host" not in seen
        or request.length > BODY_LIMIT
        or (request.length and request.method != "POST")
    ):
        return None
    return request


class Front(asyncio.Protocol):
    """A connection's protocol until it is handed to aiohttp (if ever)."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.head: _Head | None = None
        self.body_at = 0  # where the body of ``head`` starts in the buffer
        self.held = 0  # bytes of that body counted in the server's BODY_BUDGET
        self.reading = True  # False once refused (lingering), closing or handed over
        self.full = False  # the transport's write buffer is full: read nothing more meanwhile

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server._fronts.add(self)
        self._due(self._idle)

    def data_received(self, data: bytes) -> None:
        if not self.reading:
            return  # lingering after a refusal: read and dropped
        self.buffer += data
        self._take()

    def pause_writing(self) -> None:
        """A client that sends requests and does not read the answers is not read either
        until it has taken them (the answers held are bounded by the transport's limit)."""
        self.full = True
        self.transport.pause_reading()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self.full = False
        if self.reading:
            self.transport.resume_reading()  # type: ignore[union-attr]
            self._take()

    def _take(self) -> None:
        while self.reading and not self.full and self._next():
            pass

    def connection_lost(self, exc: Exception | None) -> None:
        self._due(None)
        self._release()
        self.reading = False
        self.server._fronts.discard(self)
        self.server._slots.release()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _next(self) -> bool:
        """Take what the buffer holds; whether to look at it again (a request answered,
        more bytes behind it)."""
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0 or end > HEAD_LIMIT:
                if len(self.buffer) > HEAD_LIMIT:
                    self._hand_over()
                return False
            head = _parse(bytes(self.buffer[:end]))
            if head is None:
                self._hand_over()
                return False
            self.head, self.body_at = head, end + 4
            self._due(self._body_late)  # the body's time runs from its head
        head = self.head
        arrived = min(len(self.buffer) - self.body_at, head.length)
        if arrived > self.held:
            if self.server._held + arrived - self.held > _limits.BODY_BUDGET:
                self._refuse(503, "too many request bodies are being received; retry")
                return False
            self.server._held += arrived - self.held
            self.held = arrived
        if arrived < head.length:
            return False
        end = self.body_at + head.length
        environ = self._environ(head, bytes(self.buffer[self.body_at : end]))
        try:
            answer = self.server._cached(environ)  # type: ignore[misc]
        except Exception:
            log.exception("the HTTP API failed to answer")
            self._refuse(500, "the API failed to answer")
            return False
        if answer is None:  # it needs a read: the application's, in a thread of the pool
            environ["wsgi.input"].seek(0)
            self._due(None)
            self.reading = False
            self.transport.pause_reading()  # type: ignore[union-attr]
            loop = asyncio.get_running_loop()
            called = loop.run_in_executor(self.server._pool, call_app, self.server._app, environ)
            called.add_done_callback(functools.partial(self._called, head, end))
            return False
        return self._answer(answer, head, end)

    def _called(self, head: _Head, end: int, called: asyncio.Future[Any]) -> None:
        """The application's answer from its thread (the connection may be gone)."""
        transport = self.transport
        if transport is None or transport.is_closing() or called.cancelled():
            return
        error = called.exception()
        if error is not None:
            log.error("the HTTP API failed to answer", exc_info=error)
            self._refuse(500, "the API failed to answer")
            return
        self.reading = True
        if not self.full:
            transport.resume_reading()
        if self._answer(called.result(), head, end):
            self._take()

    def _answer(
        self, answer: tuple[str, list[tuple[str, str]], bytes], head: _Head, end: int
    ) -> bool:
        """Send the answer to the request that ends at ``end`` of the buffer; whether more
        bytes are behind it."""
        self._release()
        del self.buffer[:end]
        self.head = None
        self._write(answer, head)
        if head.close:
            self.reading = False
            self._due(None)
            self.transport.close()  # type: ignore[union-attr]
            return False
        self._due(self._idle)
        return bool(self.buffer)

    def _write(self, answer: tuple[str, list[tuple[str, str]], bytes], head: _Head) -> None:
        status, headers, body = answer
        lines = [f"HTTP/1.1 {status}"]
        given = None
        for name, value in headers:
            if name.lower() == "content-length":
                given = value
            else:
                lines.append(f"{name}: {value}")
        # HEAD: the length of the body GET would get (RFC 9110 9.3.2), as the app gives it.
        lines.append(f"Content-Length: {(given or '0') if head.method == 'HEAD' else len(body)}")
        lines.append(f"Date: {_date()}")
        if head.close:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.transport.write(data if head.method == "HEAD" else data + body)  # type: ignore[union-attr]

    def _environ(self, head: _Head, body: bytes) -> dict[str, Any]:
        """The WSGI environ, as the server makes it of aiohttp's request."""
        transport = self.transport
        peer = transport.get_extra_info("peername")  # type: ignore[union-attr]
        return environ_of(
            head.method,
            head.target,
            "HTTP/1.1",
            transport.get_extra_info("sockname"),  # type: ignore[union-attr]
            str(peer[0]) if peer else "",
            body,
            str(head.length) if head.has_length else "",
            head.headers,
        )

    def _hand_over(self) -> None:
        """The connection, and the bytes read so far, to aiohttp's server."""
        self._due(None)
        self._release()
        self.reading = False
        self.server._fronts.discard(self)
        handler = self.server._web()
        transport = self.transport
        assert transport is not None
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self.buffer:
            handler.data_received(bytes(self.buffer))
            self.buffer.clear()

    def _refuse(self, status: int, error: str) -> None:
        """Answer ``status`` and close, reading and dropping what still comes meanwhile
        (for ``LINGER``): closing on unread bytes would reset the connection, and the
        sender would see the reset instead of the answer."""
        body = json.dumps({"error": error}).encode()
        head = _Head("POST", "/", [])
        head.close = True
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        self._write((f"{status} {_REFUSED[status]}", headers, body), head)
        self._release()
        self.reading = False
        self._due(self.close, _limits.LINGER)

    def _idle(self) -> None:
        """No request head within ``REQUEST_TIMEOUT``: closed, nothing said."""
        self.reading = False
        self.close()

    def _body_late(self) -> None:
        self._refuse(408, f"the body did not arrive within {_limits.REQUEST_TIMEOUT:g} s")

    def _due(self, callback: Any, delay: float | None = None) -> None:
        """``callback`` after ``delay`` (``REQUEST_TIMEOUT``), in place of any other."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if callback is not None:
            delay = _limits.REQUEST_TIMEOUT if delay is None else delay
            self.timer = asyncio.get_running_loop().call_later(delay, callback)

    def _release(self) -> None:
        self.server._held -= self.held
        self.held = 0


_dated = [0, ""]


def _date() -> str:
    """The ``Date`` header's value (RFC 9110 6.6.1), made once a second."""
    now = int(time.time())
    if _dated[0] != now:
        _dated[:] = [now, formatdate(now, usegmt=True)]
    return str(_dated[1])

"""The server of the gate API and ``/metrics``: aiohttp's HTTP server on an event loop of
its own thread, answering the WSGI application (:class:`GateAPI`) in a small pool.

Why this shape (bench/README.md, "HTTP API"): aiohttp parses in C (llhttp) and its loop
asks the kernel only about the sockets that are ready, where waitress's one Python I/O
thread asks every open connection at each turn. Side by side it took as much CPU per
request as waitress or less (0.46-0.51 against 0.70-0.76 ms with 300 connections open), and it
bounds what slow clients can hold.

The bounds: a request is read whole on the loop (a slow sender holds no thread, only a
connection); at most :data:`CONNECTION_LIMIT` connections are open, the rest wait in the
kernel's backlog; a connection that does not send a complete request head within
:data:`REQUEST_TIMEOUT` of its connection or of its last answer is closed, and a body that
does not arrive within it gets 408; at most :data:`BODY_BUDGET` bytes of bodies are held
at once; the answering threads are :data:`THREADS`.

An answer the application can give without I/O (its ``cached``: the API's reads are kept
half a second) is given on the loop itself, without the hop to a thread and back: in a
burst of 200 controllers asking about one agent, one request reads Redis and the others
are answered from that read. Such requests are read and answered by the connection's front
(``_front``), without aiohttp's request and response machinery, which cost more than the
rest; the front hands the connection to aiohttp for anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from . import _limits
from ._front import Front
from ._http import DRAIN_LIMIT, MAX_BODY
from ._wsgi import Answer, WSGIApp, call_app, environ_of

__all__ = ["HTTPServer", "serve"]

log = logging.getLogger(__name__)


class HTTPServer:
    """The running server: the port it listens on, and :meth:`close`."""

    def __init__(self, app: WSGIApp, listening: socket.socket) -> None:
        self.port: int = listening.getsockname()[1]
        self._app = app
        # The answer without I/O, on the loop (GateAPI.cached), when the application has it.
        self._cached: Callable[[dict[str, Any]], Answer | None] | None = getattr(
            app, "cached", None
        )
        self._socket = listening
        self._pool = ThreadPoolExecutor(_limits.THREADS, thread_name_prefix="driftgate-api")
        self._loop = asyncio.new_event_loop()
        self._slots = asyncio.Semaphore(_limits.CONNECTION_LIMIT)
        self._web = _ConnectionCounter(
            self._answer,
            self._slots,
            loop=self._loop,
            keepalive_timeout=_limits.REQUEST_TIMEOUT,
            lingering_time=_limits.LINGER,
            read_bufsize=_limits.READ_BUFFER,
            access_log=None,
        )
        self._connecting: set[asyncio.Task[None]] = set()
        self._fronts: set[Front] = set()  # connections not (yet) handed to aiohttp
        self._held = 0  # bytes of request bodies held (_limits.BODY_BUDGET)
        self._accepting = self._loop.create_task(self._accept())
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="driftgate-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop listening, close every connection and stop the threads."""
        if self._loop.is_closed():
            return
        stopping = asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
        stopping.result(_limits.SHUTDOWN_TIMEOUT + 5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    async def _stop(self) -> None:
        self._accepting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._accepting
        self._socket.close()
        for front in list(self._fronts):
            front.close()
        await self._web.shutdown(_limits.SHUTDOWN_TIMEOUT)

    async def _accept(self) -> None:
        """Accept while fewer than ``CONNECTION_LIMIT`` connections are open."""
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                connection, _ = await loop.sock_accept(self._socket)
            except OSError as exc:
                self._slots.release()
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("the HTTP API cannot accept a connection: %s", exc)
                    await asyncio.sleep(_limits.ACCEPT_BACKOFF)
                continue  # else the client gave up before it was accepted
            except BaseException:
                self._slots.release()
                raise
            # Not awaited: the next pending connection is accepted at once, so that a burst
            # is taken from the backlog in one turn rather than one per turn of the loop.
            connecting = loop.create_task(self._connect(connection))
            self._connecting.add(connecting)  # a task only weakly referenced may be dropped
            connecting.add_done_callback(self._connecting.discard)

    async def _connect(self, connection: socket.socket) -> None:
        try:
            protocol = self._web if self._cached is None else functools.partial(Front, self)
            await asyncio.get_running_loop().connect_accepted_socket(protocol, connection)
        except OSError:
            connection.close()
            self._slots.release()

    async def _answer(self, request: web.BaseRequest) -> web.StreamResponse:
        """The request read whole here, answered by the application in the pool."""
        self._web.head_received(request.protocol)
        kept = bytearray()
        try:
            if request.content.is_eof():  # the body arrived with the head, or there is none
                self._keep(kept, request.content.read_nowait())
                length = len(kept)
            else:
                async with asyncio.timeout(_limits.REQUEST_TIMEOUT):
                    length = await self._read_body(request, kept)
            if length > DRAIN_LIMIT:
                return _refusal(413, f"the body is over {DRAIN_LIMIT} bytes")
            environ = environ_of(
                request.method,
                request.raw_path,
                f"HTTP/{request.version.major}.{request.version.minor}",
                request.transport.get_extra_info("sockname"),  # type: ignore[union-attr]
                request.remote or "",
                bytes(kept),
                str(length) if length or request.content_length is not None else "",
                request.headers.items(),
            )
            answer = None if self._cached is None else self._cached(environ)
            if answer is None:  # it needs a read: in a thread of the pool
                environ["wsgi.input"].seek(0)
                loop = asyncio.get_running_loop()
                answer = await loop.run_in_executor(self._pool, call_app, self._app, environ)
            status, headers, payload = answer
        except TimeoutError:
            return _refusal(408, f"the body did not arrive within {_limits.REQUEST_TIMEOUT:g} s")
        except ConnectionError:  # the sender left before its body was in: no one to answer
            return _refusal(400, "the connection closed before the body was in")
        except _OverBudget:
            return _refusal(503, "too many request bodies are being received; retry")
        finally:
            self._held -= len(kept)
        code, _, reason = status.partition(" ")
        response = web.Response(status=int(code), reason=reason or None, body=payload)
        for name, value in headers:
            if name.lower() != "content-length":
                response.headers.add(name, value)
        if request.method == "HEAD":
            # The length of the body GET would get (RFC 9110 9.3.2), which aiohttp keeps
            # and does not send.
            response.headers["Content-Length"] = dict(
                (name.lower(), value) for name, value in headers
            ).get("content-length", "0")
        return response

    async def _read_body(self, request: web.BaseRequest, kept: bytearray) -> int:
        """The body's length, its bytes into ``kept`` up to ``MAX_BODY`` (drained past it);
        reading stops past ``DRAIN_LIMIT``. A body over the limit is drained rather than
        left unread: closing on unread bytes resets the connection, and its sender would
        not see the 413."""
        size = 0
        while size <= DRAIN_LIMIT:
            chunk = await request.content.readany()
            if not chunk:
                break
            size += len(chunk)
            if size <= MAX_BODY:
                self._keep(kept, chunk)
        return max(size, request.content_length or 0)

    def _keep(self, kept: bytearray, chunk: bytes) -> None:
        if self._held + len(chunk) > _limits.BODY_BUDGET:
            raise _OverBudget
        self._held += len(chunk)
        kept += chunk


class _OverBudget(Exception):
    """Keeping a body would pass ``BODY_BUDGET``."""


class _ConnectionCounter(web.Server):
    """aiohttp's low-level server, which gives a connection's slot back when it closes, and
    closes a connection whose first request head is not in within ``REQUEST_TIMEOUT``
    (aiohttp's keep-alive timeout covers the wait after each answer; only its latest
    releases cover the wait before the first request too)."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Any],
        slots: asyncio.Semaphore,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._slots = slots
        self._first_head_due: dict[RequestHandler, asyncio.TimerHandle] = {}

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._first_head_due[handler] = self._loop.call_later(
            _limits.REQUEST_TIMEOUT, handler.force_close
        )

    def head_received(self, handler: RequestHandler) -> None:
        due = self._first_head_due.pop(handler, None)
        if due is not None:
            due.cancel()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        self.head_received(handler)
        super().connection_lost(handler, exc)
        self._slots.release()


def _refusal(status: int, error: str) -> web.Response:
    """An answer of the server itself, before the application; the connection closes."""
    body = json.dumps({"error": error}).encode()
    response = web.Response(status=status, body=body, content_type="application/json")
    response.force_close()
    return response


def serve(app: WSGIApp, host: str, port: int) -> HTTPServer:
    """Serve ``app`` on ``host:port`` from a thread of its own; returns the server.

    ``host`` is what it binds, exactly (``DRIFTGATE_METRICS_HOST``: loopback unless
    configured); an IPv6 address (``::1``, ``::``) gets an IPv6 socket, and ``::`` takes
    IPv4 too.
    """
    ipv6 = ":" in host
    listening = socket.create_server(
        (host, port),
        family=socket.AF_INET6 if ipv6 else socket.AF_INET,
        backlog=_limits.BACKLOG,
        dualstack_ipv6=ipv6 and socket.has_dualstack_ipv6(),
    )
    listening.setblocking(False)
    return HTTPServer(app, listening)

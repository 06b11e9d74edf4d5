"""The front (monitor/serve/_front.py) against aiohttp's server alone: the same request bytes,
sent in one write to a server with the front and to one without it (the same application
without ``cached``: _server.py then gives every connection to aiohttp), get the same
answers, in the same order, and the connection ends the same way.

The requests are generated (hypothesis): methods, targets (``%2F``, UTF-8, queries,
fragments), header sets (Content-Length variants and duplicates, Transfer-Encoding, tokens,
Connection, folded lines, bare LF, non-ASCII, long lines), bodies shorter or longer than
their Content-Length, and pipelines of up to three requests. The front must answer only what
aiohttp would answer the same way: a request it reads while aiohttp refuses it would let the
bytes behind it be answered as a request of their own (smuggling).

No divergence here is allowed as legitimate: where the front reads a request, its answer is
aiohttp's (the front hands over anything it does not read without doubt).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from monitor import Policy
from monitor.serve import GateAPI, HTTPServer, serve
from monitor.serve._front import HEAD_LIMIT, _parse

from .test_http import ReadModel, flagger, snapshot

TOKEN = "s3cret-token-0123456789abcdef"
# Ends every write: the connection then closes once all is answered (or on an error), so
# the answers are read until the server closes, never until a time has passed.
SENTINEL = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


class WithoutCache:
    """The application without ``cached``: its server hands every connection to aiohttp."""

    def __init__(self, app: GateAPI) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[HTTPServer, HTTPServer]]:
    model = ReadModel(snapshot())  # one state for both: its times are made when it is

    def app() -> GateAPI:
        return GateAPI(model, CollectorRegistry(), lambda: None, Policy(), TOKEN)  # type: ignore[arg-type]

    front = serve(app(), "127.0.0.1", 0)
    plain = serve(WithoutCache(app()), "127.0.0.1", 0)  # type: ignore[arg-type]
    assert front._cached is not None and plain._cached is None
    yield front, plain
    front.close()
    plain.close()


def exchange(server: HTTPServer, data: bytes) -> bytes:
    """Everything the server sends for ``data`` (sent in one write) until it closes."""
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    received = b""
    try:
        connection.sendall(data)
        while chunk := connection.recv(65536):
            received += chunk
    except ConnectionResetError:
        received += b"<reset>"
    except TimeoutError:
        received += b"<no end within 10 s>"
    finally:
        connection.close()
    return received


def answers(stream: bytes, methods: list[bytes]) -> list[Any]:
    """The answers in ``stream``: status line and body each (headers but the length are the
    servers' own: Date, Server, their order), then whatever is left. ``methods`` are those
    of the requests as sent, in order: an answer to HEAD has no body."""
    found: list[Any] = []
    while stream.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) and b"\r\n\r\n" in stream:
        head, rest = stream.split(b"\r\n\r\n", 1)
        status, *lines = head.split(b"\r\n")
        length = 0
        for line in lines:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        method = methods[len(found)] if len(found) < len(methods) else b"GET"
        if method == b"HEAD" and b" 400 " not in status:
            length = 0
        body = rest[:length]
        if b" 400 " in status:  # aiohttp's says where in the read it failed: what, not where
            body = body.split(b":")[0]
        # the hours an agent has run are of the moment of the read (the front's is kept 0.5 s)
        found.append((status, re.sub(rb'"hours_running": [0-9.e+-]+', b"_", body)))
        stream = rest[length:]
    found.append(("left", stream))
    return found


METHODS = st.sampled_from([b"GET"] * 4 + [b"HEAD"] + [b"POST"] * 4 + [b"PUT", b"DELETE", b"get"])
TARGETS = st.sampled_from(
    [
        *[b"/healthz", b"/v1/agents/ready", b"/v1/flagger/rollout"] * 3,
        b"/healthz",
        b"/v1/agents/ready",
        b"/v1/agents/failing",
        b"/v1/agents/re%2Fady",
        b"/v1/agents/r%C3%A9ady",
        b"/v1/agents/r\xc3\xa9ady",
        b"/v1/agents/ready?x=1&y=%2F",
        b"/v1/agents/ready#fragment",
        b"/v1/agents/ready?",
        b"/v1/gates",
        b"/v1/nothing",
        b"//v1/gates",
        b"/v1/flagger/rollout",
        b"/v1/flagger/confirm-promotion",
        b"/v1/agents/<ready>",
        b'/v1/agents/"ready"',
        b"/v1/agents/{ready}|^`\\",
        b"*",
        b"http://x/v1/gates",
        b"v1/gates",
        b"/v1/agents/ready%",
        b"/v1/agents/ready\x7f",
    ]
)
CLEAN = [b"/healthz", b"/v1/agents/ready", b"/v1/agents/failing", b"/v1/gates"]
CLEAN += [b"/v1/flagger/rollout", b"/v1/flagger/confirm-promotion", b"/v1/agents/re%2Fady"]
CLEAN += [b"/v1/agents/r%C3%A9ady", b"/v1/agents/ready?x=1&y=%2F", b"/v1/nothing"]
ENDINGS = st.sampled_from([b"\r\n"] * 30 + [b"\n", b"\r"])
VERSIONS = st.sampled_from([b"HTTP/1.1"] * 20 + [b"HTTP/1.0", b"HTTP/1.2", b"http/1.1", b"HTTP/2"])
SEPARATORS = st.sampled_from([b" "] * 20 + [b"  ", b"\t"])

# A header line (the name and value as sent); "LENGTH" is replaced by the body's length plus
# a small error, as the request's draw says.
GOOD = st.sampled_from(
    [
        b"Authorization: Bearer " + TOKEN.encode(),
        b"Authorization: Bearer wrong",
        b"Connection: keep-alive",
        b"Content-Type: application/json",
        b"Accept: */*",
        b"User-Agent: flagger",
    ]
)
ODD = st.sampled_from(
    [
        b"Host: x",
        b"Host: y",
        b"Authorization: Bearer " + TOKEN.encode(),
        b"Authorization: bearer " + TOKEN.encode(),
        b"Authorization: Bearer wrong",
        b"Authorization: Bearer  " + TOKEN.encode() + b" ",
        b"Connection: close",
        b"Connection: keep-alive",
        b"Connection: Keep-Alive, close",
        b"Connection: upgrade",
        b"Upgrade: h2c",
        b"Expect: 100-continue",
        b"Content-Type: application/json",
        b"Content-Type: text/plain",
        b"Content-Length: LENGTH",
        b"Content-Length: LENGTH",
        b"content-length: LENGTH",
        b"Content-Length: 0LENGTH",
        b"Content-Length: +LENGTH",
        b"Content-Length: -LENGTH",
        b"Content-Length:LENGTH",
        b"Content-Length:  LENGTH \t",
        b"Content-Length: LENGTH, LENGTH",
        b"Content-Length : LENGTH",
        b"Content-Length: ",
        b"Content-Length: 0",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: identity",
        b"Transfer-Encoding: chunked, identity",
        b"Transfer-Encoding: gzip, chunked",
        b"Transfer-Encoding:  chunked",
        b"X-Name: caf\xc3\xa9",
        b"X-Name: a\x00b",
        b"X-Name: a\x7fb",
        b"X_Name: underscore",
        b" folded continuation",
        b"\tfolded continuation",
        b"X-Long: " + b"a" * 9000,
        b"No colon here",
        b": empty name",
        b"X-Empty:",
    ]
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """One request's bytes and its method: half of them as Argo and Flagger send them but
    for at most one odd line (what the front reads, or nearly), half anything."""
    plain = draw(st.booleans())
    method = draw(st.sampled_from([b"GET", b"HEAD", b"POST"]) if plain else METHODS)
    target = draw(st.sampled_from(CLEAN) if plain else TARGETS)
    line = method + draw(SEPARATORS) + target + b" " + draw(VERSIONS)
    if plain:
        line = method + b" " + target + b" HTTP/1.1"
    if draw(st.booleans()) if not plain else method == b"POST":
        body = json.dumps(flagger("podinfo", draw(st.sampled_from(["ready", "failing"])))).encode()
        if draw(st.booleans()):
            body = body[:-1] + b', "token": "%s"}' % TOKEN.encode()
    else:
        body = draw(st.sampled_from([b"", b"x", b"{}", b"0\r\n\r\n"]))
        body = b"" if plain and draw(st.integers(0, 3)) else body
    # Host first, as clients send it; a request with many odd lines is refused for the
    # first of them, by both, so at most two (one in the plain ones)
    headers = [b"Host: x"] * draw(st.sampled_from([1, 1, 1, int(not plain)]))
    headers += draw(st.lists(GOOD, max_size=3, unique=True))
    if body and draw(st.integers(0, 4)):
        headers.append(b"Content-Length: LENGTH")
    for odd in draw(st.lists(ODD, max_size=1 if plain else 2)):
        headers.insert(draw(st.integers(0, len(headers))), odd)
    error = draw(st.sampled_from([0] * 6 + [-2, -1, 1, 2, 3]))
    length = str(max(0, len(body) + error)).encode()
    headers = [h.replace(b"LENGTH", length) for h in headers]
    if any(h.lower().startswith(b"transfer-encoding") for h in headers) and draw(st.booleans()):
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    endings = [b"\r\n" if plain else draw(ENDINGS) for _ in headers]
    head = line + b"".join(end + h for end, h in zip(endings, headers, strict=True))
    last = draw(st.sampled_from([b"\r\n\r\n"] * 20 + [b"\n\n", b"\r\n\n"]))
    return head + (b"\r\n\r\n" if plain else last) + body, method


def segmented(server: HTTPServer, data: bytes, ends: list[int], methods: list[bytes]) -> bytes:
    """What the server sends when each message of ``data`` that ends at one of ``ends``
    comes in a read of its own, the next only once it is answered, then the rest."""
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    received = b""
    try:
        for count, (start, end) in enumerate(zip([0, *ends], ends, strict=False), 1):
            connection.sendall(data[start:end])
            while len(answers(received, methods)) <= count:
                chunk = connection.recv(65536)
                if not chunk:
                    return received
                received += chunk
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # it may close
            connection.sendall(data[ends[-1] if ends else 0 :])
        while chunk := connection.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        received += b"<no end within 10 s>"
    finally:
        connection.close()
    return received


def seen(what: str) -> None:
    """Counted in hypothesis' statistics (--hypothesis-show-statistics), when under it."""
    if currently_in_test_context():
        event(what)


def framing(data: bytes) -> list[int]:
    """Where the messages the front reads itself end in ``data``, as it frames them (up to
    the first it would hand over, or one that asks to close)."""
    ends, start = [], 0
    while (end := data.find(b"\r\n\r\n", start)) >= 0 and end - start <= HEAD_LIMIT:
        head = _parse(data[start:end])
        if head is None or end + 4 + head.length > len(data):
            break
        start = end + 4 + head.length
        ends.append(start)
        if head.close:
            break
    return ends


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(requests(), min_size=1, max_size=3))
def test_the_front_answers_as_aiohttp_does(
    servers: tuple[HTTPServer, HTTPServer], pipeline: list[tuple[bytes, bytes]]
) -> None:
    data = b"".join(request for request, _ in pipeline) + SENTINEL
    methods = [method for _, method in pipeline] + [b"GET"]
    check(*servers, data, methods)


def check(front: HTTPServer, plain: HTTPServer, data: bytes, methods: list[bytes]) -> None:
    """The front's answers to ``data`` are aiohttp's (see below for the one exception)."""
    sent_by_front = exchange(front, data)
    by_front = answers(sent_by_front, methods)
    # aiohttp's answers name it (Server:), the front's do not
    seen(f"the front answered {len(by_front) - 1 - sent_by_front.count(b'Server: Python')}")
    by_aiohttp = answers(exchange(plain, data), methods)
    if by_front == by_aiohttp:
        seen("the same answers")
        return
    seen("aiohttp refuses the read")
    # The one legitimate difference: aiohttp refuses a whole read when a message in it is
    # malformed, the requests before it in that read too (its parser raises before it
    # returns the messages it has parsed); had they come in a read of their own, it would
    # have answered them. RFC 9112 9.3.2: a server answers pipelined requests in order,
    # and a malformed one does not unmake the complete ones before it. So the front's
    # answers must be aiohttp's when each request it answered comes in a read of its own.
    # Likewise when a request says "Connection: close" and more bytes follow in its read:
    # aiohttp refuses the read ("Data after `Connection: close`"), where RFC 9112 9.6 says
    # to answer that request, then close and process nothing further.
    assert len(by_aiohttp) == 2 and b" 400 " in by_aiohttp[0][0], (by_front, by_aiohttp)
    count = len(by_front) - 1 - (by_front[-2] == by_aiohttp[0])
    assert count >= 1, (by_front, by_aiohttp)
    # aiohttp is the judge of the front's framing: the messages cut where the front cut them
    assert by_front == answers(segmented(plain, data, framing(data), methods), methods)


@pytest.mark.parametrize(
    "data",
    [
        # each was answered by the front where aiohttp refuses it (400/431) and closes
        pytest.param(
            b"GET /v1/agents/ready HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
            id="long-line",
        ),
        pytest.param(b"GET /healthz HTTP/1.1\r\n\r\n", id="no-host"),
        # the front kept the connection (the last Connection line) and answered the next
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Connection: keep-alive\r\n\r\nGET /v1/gates HTTP/1.1\r\nHost: x\r\n\r\n",
            id="close-then-keep-alive",
        ),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", id="two-hosts"),
    ],
)
def test_found_divergences_stay_fixed(servers: tuple[HTTPServer, HTTPServer], data: bytes) -> None:
    check(*servers, data + SENTINEL, [b"GET"] * 3)

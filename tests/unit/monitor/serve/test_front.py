"""The connections' front (monitor/serve/_front.py): what it reads itself, what it hands to
aiohttp's server, and that a client sees the same answers either way."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from monitor.serve import HTTPServer, serve
from monitor.serve._front import BODY_LIMIT, _parse

from .test_http import flagger
from .test_server import raw_answer, start


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/agents/ready HTTP/1.1\r\nHost: x",
        b"HEAD /v1/gates?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc",
        b"POST /v1/flagger/rollout HTTP/1.1\r\nHost: x\r\nContent-Length: 12",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close",
    ],
)
def test_the_front_reads_plain_http_1_1(head: bytes) -> None:
    assert _parse(head) is not None


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/agents/ready HTTP/1.0\r\nHost: x",
        b"PUT /v1/agents/ready HTTP/1.1\r\nHost: x",
        b"GET  /v1/agents/ready HTTP/1.1\r\nHost: x",
        b"GET v1/agents HTTP/1.1\r\nHost: x",
        b"GET /v1/agents/r\xc3\xa9 HTTP/1.1\r\nHost: x",
        b"POST /v1/flagger/rollout HTTP/1.1\r\nTransfer-Encoding: chunked",
        b"POST /v1/flagger/rollout HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3",
        b"POST /v1/flagger/rollout HTTP/1.1\r\nContent-Length: +3",
        b"POST /v1/flagger/rollout HTTP/1.1\r\nContent-Length: " + str(BODY_LIMIT + 1).encode(),
        b"GET /v1/gates HTTP/1.1\r\nContent-Length: 3",
        b"POST /v1/flagger/rollout HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3",
        b"GET /v1/gates HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket",
        b"GET /v1/gates HTTP/1.1\r\nHost: x\r\n folded",
        b"GET /v1/gates HTTP/1.1\r\nHost : x",
        b"GET /v1/gates HTTP/1.1\r\nX-Name: caf\xc3\xa9",
        b"GET /v1/gates HTTP/1.1\r\nX-Name: a\nb",
        b"GET /v1/gates HTTP/1.1",  # no Host: aiohttp's 400 (RFC 9112 3.2)
        b"GET /v1/gates HTTP/1.1\r\nHost: x\r\nHost: y",
        b"POST /v1/flagger/rollout HTTP/1.1\r\nHost: x\r\nContent-Type: a\r\nContent-Type: b",
    ],
)
def test_anything_else_goes_to_aiohttp(head: bytes) -> None:
    assert _parse(head) is None


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    running = start()
    yield running
    running.close()


def connect(server: HTTPServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def answers(connection: socket.socket, count: int) -> list[tuple[bytes, dict[str, str], bytes]]:
    """``count`` answers read off a kept-alive connection: status line, headers, body."""
    received, found = b"", []
    while len(found) < count:
        while b"\r\n\r\n" not in received:
            chunk = connection.recv(65536)
            assert chunk, f"closed after {len(found)} answers"
            received += chunk
        head, received = received.split(b"\r\n\r\n", 1)
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        length = int(headers["content-length"])
        while len(received) < length:
            received += connection.recv(65536)
        found.append((status.encode(), headers, received[:length]))
        received = received[length:]
    return found


GET = b"GET /v1/agents/ready HTTP/1.1\r\nHost: x\r\n\r\n"


def test_a_kept_connection_is_answered_request_after_request(server: HTTPServer) -> None:
    """The first answer needs a read (a thread), the next ones are kept (the front); two
    requests in one write are answered in order; each answer says its Date."""
    connection = connect(server)
    connection.sendall(GET)
    first = answers(connection, 1)[0]
    connection.sendall(GET + b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    second, missing = answers(connection, 2)
    assert first[0] == second[0] == b"HTTP/1.1 200 OK"
    assert json.loads(first[2]) == json.loads(second[2])
    assert json.loads(first[2])["verdict"] == "PASS"
    assert missing[0] == b"HTTP/1.1 404 Not Found"
    assert all("date" in headers for _, headers, _ in (first, second, missing))
    connection.close()


def test_connection_close_is_honoured(server: HTTPServer) -> None:
    connection = connect(server)
    connection.sendall(GET)
    answers(connection, 1)  # kept from now on
    connection.sendall(b"GET /v1/agents/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = raw_answer(connection)  # until the server closes
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in answer
    connection.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        # chunked: aiohttp's
        b"POST /v1/flagger/rollout HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"%x\r\nBODY\r\n0\r\n\r\n",
        # HTTP/1.0: aiohttp's
        b"POST /v1/flagger/rollout HTTP/1.0\r\nHost: x\r\nContent-Length: %d\r\n\r\nBODY",
        # the front's
        b"POST /v1/flagger/rollout HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nBODY",
    ],
    ids=["chunked", "http-1.0", "plain"],
)
def test_a_hook_gets_the_same_answer_from_the_front_or_from_aiohttp(
    server: HTTPServer, request_bytes: bytes
) -> None:
    body = json.dumps(flagger("podinfo", "failing")).encode()
    sent = request_bytes.replace(b"%x", b"%x" % len(body)).replace(b"%d", b"%d" % len(body))
    for _ in range(2):  # the first needs a read, the second is kept
        connection = connect(server)
        connection.sendall(sent.replace(b"BODY", body))
        status, headers, answer = answers(connection, 1)[0]
        assert status.split(b" ")[1] == b"409"
        assert headers["content-type"] == "application/json"
        assert json.loads(answer)["verdict"] == "FAIL"
        connection.close()


def test_after_handing_over_aiohttp_keeps_the_connection(server: HTTPServer) -> None:
    connection = connect(server)
    connection.sendall(b"GET /v1/agents/ready HTTP/1.1\r\nHost: x\r\nX-Odd: caf\xc3\xa9\r\n\r\n")
    connection.sendall(GET)
    first, second = answers(connection, 2)
    assert first[0] == second[0] == b"HTTP/1.1 200 OK"
    assert json.loads(first[2])["agent"] == json.loads(second[2])["agent"] == "ready"
    connection.close()


def test_closing_the_server_closes_the_front_connections() -> None:
    running = start()
    connection = connect(running)
    connection.sendall(GET)
    answers(connection, 1)
    running.close()
    assert raw_answer(connection) == b""
    connection.close()


class Failing:
    """An application that fails: in ``cached`` on one path, when called on another."""

    def cached(self, environ: dict[str, Any]) -> None:
        if environ["PATH_INFO"] == "/cached":
            raise RuntimeError("cached failed")
        return None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("called failed")


@pytest.mark.parametrize("path", ["/cached", "/called"])
def test_an_application_that_fails_gets_500_and_the_connection_closes(path: str) -> None:
    running = serve(Failing(), "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        connection = connect(running)
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = raw_answer(connection)
        assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
        assert answer.endswith(b'{"error": "the API failed to answer"}')
        connection.close()
    finally:
        running.close()


def test_many_requests_in_one_write_are_answered_in_order(server: HTTPServer) -> None:
    """Pipelined: 2,000 requests sent before any answer is read (the answers, ~1 MB, may
    fill the socket's buffers: the front reads no more of the client meanwhile)."""
    connection = connect(server)
    requests = [
        GET if i % 2 == 0 else b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n" for i in range(2000)
    ]
    connection.sendall(b"".join(requests))
    found = answers(connection, 2000)
    assert [status for status, _, _ in found] == [
        b"HTTP/1.1 200 OK" if i % 2 == 0 else b"HTTP/1.1 404 Not Found" for i in range(2000)
    ]
    connection.close()

"""The HTTP gate API on its real server, over loopback sockets: a burst of controllers,
the token, and the methods a path takes (the read model is the one in memory of
test_http, so that what is tested is the server and the API, not Redis)."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor import Policy
from monitor.serve import GateAPI, HTTPServer, _limits, serve

from .test_http import AGENTS, ReadModel, flagger, snapshot

TOKEN = "s3cret-token-0123456789abcdef"
PARALLEL = 200


def start(token: str | None = None, host: str = "127.0.0.1") -> HTTPServer:
    app = GateAPI(ReadModel(snapshot()), CollectorRegistry(), lambda: None, Policy(), token)  # type: ignore[arg-type]
    return serve(app, host, 0)


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    running = start(TOKEN)
    yield running
    running.close()


def ask(
    server: HTTPServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> tuple[int, http.client.HTTPMessage, Any]:
    """One request over a socket of its own; the answer's status, headers (any case)
    and body."""
    connection = http.client.HTTPConnection(host, server.port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data, headers=headers or {})
        answer = connection.getresponse()
        payload = answer.read()
        shown = (
            json.loads(payload)
            if answer.getheader("Content-Type") == "application/json"
            else payload
        )
        return answer.status, answer.headers, shown
    finally:
        connection.close()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- a burst of controllers -----------------------------------------------------------------


async def hook_in_two_writes(
    port: int, agent: str, connected: asyncio.Barrier
) -> tuple[int, dict[str, Any]]:
    """A Flagger hook with its headers and its body in two writes, as Go's client can;
    sent once every client of the burst is connected, so that all are in flight at once."""
    body = json.dumps(flagger("podinfo", agent)).encode()
    head = (
        f"POST /v1/flagger/rollout HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await connected.wait()
        writer.write(head)
        await writer.drain()
        writer.write(body)
        await writer.drain()
        status_line = await reader.readline()
        headers = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        length = int(headers.split("content-length:", 1)[1].split("\r\n", 1)[0])
        return int(status_line.split()[1]), json.loads(await reader.readexactly(length))
    finally:
        writer.close()


async def burst(port: int) -> list[tuple[int, dict[str, Any]] | BaseException]:
    connected = asyncio.Barrier(PARALLEL)
    agents = list(AGENTS)
    return await asyncio.gather(
        *(hook_in_two_writes(port, agents[i % len(agents)], connected) for i in range(PARALLEL)),
        return_exceptions=True,
    )


def test_200_parallel_controllers_are_all_answered_none_reset() -> None:
    """wsgiref's backlog of 5 reset some of 50 such connections and made others wait for
    the kernel's SYN retries; each of these gets its answer (bench/http_api.py times it)."""
    running = start()
    try:
        answers = asyncio.run(burst(running.port))
    finally:
        running.close()
    failures = [answer for answer in answers if isinstance(answer, BaseException)]
    assert failures == []
    expected = {
        name: 409 if verdict in ("FAIL", "HOLD") else 200
        for name, (_, verdict, *_) in AGENTS.items()
    }
    assert len(answers) == PARALLEL
    for status, document in answers:  # type: ignore[misc]
        assert (document["hook"], status) == ("rollout", expected[document["agent"]])


# --- the token ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/v1/gates", "/v1/gates/canary/ready", "/v1/agents/ready", "/v1/nothing", "/v1"]
)
def test_with_a_token_every_v1_request_needs_it(server: HTTPServer, path: str) -> None:
    """Before anything about the path is told: an unknown path is 401 too, not 404."""
    for headers in (
        {},
        bearer("s3cret-token-0123456789abcdeF"),  # one character off
        bearer(TOKEN + "x"),
        bearer(TOKEN[:-1]),
        {"Authorization": TOKEN},  # no scheme
        {"Authorization": f"Basic {TOKEN}"},
    ):
        status, answer_headers, document = ask(server, "GET", path, headers=headers)
        assert status == 401, headers
        assert answer_headers["WWW-Authenticate"] == 'Bearer realm="driftgate"'
        assert "DRIFTGATE_API_TOKEN" in document["error"] and TOKEN not in json.dumps(document)
    status, _, _ = ask(server, "GET", path, headers=bearer())
    assert status == (
        200 if path in ("/v1/gates", "/v1/gates/canary/ready", "/v1/agents/ready") else 404
    )
    # The scheme is case-insensitive (RFC 7235).
    assert ask(server, "GET", path, headers={"Authorization": f"bearer {TOKEN}"})[0] == status


def test_a_flagger_hook_may_carry_the_token_as_metadata_token(server: HTTPServer) -> None:
    hook = "/v1/flagger/confirm-promotion"
    body = flagger("podinfo", "ready")
    assert ask(server, "POST", hook, body)[0] == 401
    body["metadata"]["token"] = TOKEN
    status, _, document = ask(server, "POST", hook, body)
    assert (status, document["recommendation"]) == (200, "promote")
    assert TOKEN not in json.dumps(document)
    body["metadata"]["token"] = TOKEN[:-1]
    assert ask(server, "POST", hook, body)[0] == 401
    body["metadata"]["token"] = 12345
    assert ask(server, "POST", hook, body)[0] == 401
    # The header is enough without it; a body that is no payload cannot carry one.
    del body["metadata"]["token"]
    assert ask(server, "POST", hook, body, headers=bearer())[0] == 200
    assert ask(server, "POST", hook, ["not", "an", "object"])[0] == 401
    assert ask(server, "POST", hook, ["not", "an", "object"], headers=bearer())[0] == 400
    # The token is not a stand-in for the agent: the hook still needs one.
    assert ask(server, "POST", hook, {"metadata": {"token": TOKEN}})[0] == 400


def test_healthz_and_metrics_stay_open_with_a_token(server: HTTPServer) -> None:
    status, _, document = ask(server, "GET", "/healthz")
    assert (status, document) == (200, {"status": "ok"})
    status, headers, _ = ask(server, "GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")


def test_without_a_token_the_api_is_open() -> None:
    running = start()
    try:
        assert ask(running, "GET", "/v1/agents/ready")[0] == 200
        assert ask(running, "POST", "/v1/flagger/rollout", flagger("podinfo", "ready"))[0] == 200
        # A token sent anyway changes nothing.
        assert ask(running, "GET", "/v1/gates", headers=bearer())[0] == 200
    finally:
        running.close()


# --- methods --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v1/gates", "GET, HEAD"),
        ("PUT", "/v1/agents/ready", "GET, HEAD"),
        ("GET", "/v1/flagger/rollout", "POST"),
        ("DELETE", "/healthz", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
    ],
)
def test_an_unsupported_method_is_405_over_the_wire(
    server: HTTPServer, method: str, path: str, allowed: str
) -> None:
    status, headers, document = ask(server, method, path, body={}, headers=bearer())
    assert (status, headers["Allow"]) == (405, allowed)
    assert document == {"error": f"{path} takes {allowed.replace(', ', ' or ')}"}


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/v1/gates", "/v1/gates/canary/ready"])
def test_head_over_the_wire_is_get_without_the_body(server: HTTPServer, path: str) -> None:
    status, headers, body = ask(server, "GET", path, headers=bearer())
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        token = f"Authorization: Bearer {TOKEN}\r\n"
        connection.sendall(
            f"HEAD {path} HTTP/1.1\r\nHost: x\r\n{token}Connection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert rest == b""  # the head only, though Content-Length counts the body
    lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert int(lines[0].split()[1]) == status == 200
    length = len(json.dumps(body).encode()) if isinstance(body, dict) else len(body)
    assert int(fields["Content-Length"]) == int(headers["Content-Length"]) == length
    assert fields["Content-Type"] == headers["Content-Type"]


# --- addresses ------------------------------------------------------------------------------


def test_ipv6_and_on_the_unspecified_address_ipv4_too() -> None:
    """``::1`` is IPv6's loopback; ``::`` (every address) takes IPv4 as well, as the
    socket before waitress did (waitress's own IPv6 socket is IPv6 only)."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    for host, clients in (("::1", ["::1"]), ("::", ["::1", "127.0.0.1"])):
        running = start(TOKEN, host)
        try:
            for client in clients:
                status, _, document = ask(running, "GET", "/healthz", host=client)
                assert (status, document) == (200, {"status": "ok"}), (host, client)
        finally:
            running.close()


# --- the server's bounds: slow senders, idle connections, threads ---------------------------


def raw_answer(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    return answer


def test_a_slow_sender_holds_no_thread_and_is_let_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hook whose body never comes: the others are answered meanwhile (more of them than
    there are threads), and it gets 408 once REQUEST_TIMEOUT has passed; a connection that
    never completes its head is closed."""
    monkeypatch.setattr(_limits, "REQUEST_TIMEOUT", 0.5)
    monkeypatch.setattr(_limits, "LINGER", 0.5)
    running = start()
    try:
        body_never = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        head_never = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        body_never.sendall(
            b"POST /v1/flagger/rollout HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{"
        )
        head_never.sendall(b"GET /v1/agents/ready HTTP/1.1\r\nHost: x\r\n")
        for _ in range(2 * _limits.THREADS):
            assert ask(running, "GET", "/v1/agents/ready")[0] == 200
        answer = raw_answer(body_never)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b'"the body did not arrive within 0.5 s"' in answer
        assert raw_answer(head_never) == b""  # closed, nothing said: no request was made
        body_never.close()
        head_never.close()
    finally:
        running.close()


def test_beyond_the_connection_limit_a_client_waits_its_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past CONNECTION_LIMIT open connections, a new one waits in the kernel's backlog
    (not reset) and is served once another closes."""
    monkeypatch.setattr(_limits, "CONNECTION_LIMIT", 2)
    running = start()
    try:
        idle = [socket.create_connection(("127.0.0.1", running.port), timeout=10) for _ in "ab"]
        for connection in idle:  # each served, so each holds its slot
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert connection.recv(65536).startswith(b"HTTP/1.1 200 ")
        waiting = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        idle[0].close()
        assert raw_answer(waiting).startswith(b"HTTP/1.1 200 ")
        waiting.close()
        idle[1].close()
    finally:
        running.close()


def test_the_answering_threads_are_bounded() -> None:
    running = start()
    try:
        asyncio.run(burst(running.port))
        answering = [t for t in threading.enumerate() if t.name.startswith("driftgate-api")]
        assert 0 < len(answering) <= _limits.THREADS
    finally:
        running.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("driftgate-")]


def test_the_query_reaches_the_api_over_the_wire() -> None:
    """``?covariate=`` (covariate_drift's verdict of one covariate) as sent."""
    from .test_http import covariate_app

    running = serve(covariate_app(), "127.0.0.1", 0)
    try:
        status, _, document = ask(running, "GET", "/v1/gates/covariate_drift/s?covariate=domain")
        assert (status, document["verdict"]) == (200, "PASS")
        status, _, document = ask(running, "GET", "/v1/gates/covariate_drift/s")
        assert (status, document["evidence"]["covariate"]) == (200, "difficulty")
    finally:
        running.close()


def test_bodies_held_at_once_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past BODY_BUDGET bytes of bodies held over every connection, a request is answered
    503 (and a body within it still answered once the others are done)."""
    monkeypatch.setattr(_limits, "BODY_BUDGET", 1000)
    running = start()
    try:
        holding = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        holding.sendall(
            b"POST /v1/flagger/rollout HTTP/1.1\r\nHost: x\r\nContent-Length: 1200\r\n\r\n"
            + b" " * 900
        )
        deadline = time.monotonic() + 10
        while running._held < 900 and time.monotonic() < deadline:  # until its body is in
            time.sleep(0.01)
        status, _, document = ask(running, "POST", "/v1/flagger/rollout", flagger("p", "ready"))
        assert (status, document) == (
            503,
            {"error": "too many request bodies are being received; retry"},
        )
        holding.close()
        # Held bytes are given back when the holder leaves.
        assert ask(running, "POST", "/v1/flagger/rollout", flagger("p", "ready"))[0] == 200
    finally:
        running.close()

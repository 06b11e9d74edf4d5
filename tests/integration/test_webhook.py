"""The webhook: each decision with an action, POSTed with its idempotency key, retried,
every attempt in the audit log."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from .conftest import Deployment, encode, label

pytestmark = pytest.mark.integration


class Receiver(ThreadingHTTPServer):
    """A webhook receiver that refuses the first request (HTTP 500) and takes the rest."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://user:secret@127.0.0.1:{self.server_address[1]}/hooks/T0/B0/token"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append({"headers": dict(self.headers), "body": json.loads(body)})
        self.send_response(500 if len(self.server.requests) == 1 else 200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_decision_reaches_the_webhook_once_taken_and_every_attempt_is_audited(
    deployment: Deployment, receiver: Receiver
) -> None:
    deployment.start_worker(DRIFTGATE_WEBHOOK_URL=receiver.url)
    biased = [label(f"b-{i}", "hooked", 0.2, 0.9) for i in range(60)]  # FAIL, action alert
    deployment.produce("labels", [encode(biased)])
    deployment.wait_for(lambda: len(receiver.requests) >= 2, 30, "the webhook's retry")
    first, second = receiver.requests[:2]
    decision = second["body"]
    assert first["body"] == decision  # the same decision, retried
    assert (decision["subject"], decision["verdict"], decision["action"]) == (
        "hooked",
        "FAIL",
        "alert",
    )
    assert first["headers"]["Idempotency-Key"] == decision["decision_id"]
    assert second["headers"]["Idempotency-Key"] == decision["decision_id"]

    def attempts() -> list[dict[str, Any]]:
        log = orjson.loads(deployment.cli("log", "--json").stdout)
        return [entry for entry in log if entry.get("kind") == "webhook"]

    deployment.wait_for(lambda: len(attempts()) == 2, 20, "both attempts in the audit log")
    audited = attempts()
    assert [(a["attempt"], a["outcome"], a["delivered"]) for a in audited] == [
        (1, "HTTP 500", False),
        (2, "HTTP 200", True),
    ]
    assert all(a["decision_id"] == decision["decision_id"] for a in audited)
    # Nothing of the URL that may be secret is kept: no credentials, no path.
    assert all(a["url"] == f"http://127.0.0.1:{receiver.server_address[1]}" for a in audited)
    assert "secret" not in deployment.worker_log().decode()
    assert len(receiver.requests) == 2  # a PASS later would have action none: not sent

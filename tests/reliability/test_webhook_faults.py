"""A webhook receiver that times out, fails and answers twice: each decision is one action
(the receiver deduplicates by ``Idempotency-Key``), retried with doubling delays, every
attempt in the audit log, and a stray second answer is never taken for the next one's
(it was, on a reused keep-alive connection: the next decision marked delivered, unseen).
(``tests/integration/test_webhook.py``: a 500 then a 200, and what the audit keeps.)"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from ..integration.conftest import Deployment, encode, label

pytestmark = pytest.mark.integration

WEBHOOK_TIMEOUT = 3.0  # monitor.pipeline._webhook.Webhook's default
FIRST_DELAY = 0.5


class Receiver(ThreadingHTTPServer):
    """Answers the n-th request as ``script[n]`` says: ``late`` (acts, then answers after
    the client gave up), ``fail`` (HTTP 500, no action), ``twice`` (acts, answers 200 and
    then a second 200 on the same keep-alive connection) or ``ok`` (acts, 200). Acts at
    most once per ``Idempotency-Key``, as a receiver should."""

    def __init__(self, script: list[str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.arrivals: list[tuple[float, str]] = []  # (monotonic time, decision_id)
        self.acted: Counter[str] = Counter()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver
    protocol_version = "HTTP/1.1"  # keep-alive, as real receivers answer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = self.headers["Idempotency-Key"]
        assert key == body["decision_id"]
        with self.server.lock:
            self.server.arrivals.append((time.monotonic(), key))
            n = len(self.server.arrivals) - 1
            behaviour = self.server.script[n] if n < len(self.server.script) else "ok"
            if behaviour != "fail" and key not in self.server.acted:
                self.server.acted[key] += 1
        if behaviour == "late":
            time.sleep(WEBHOOK_TIMEOUT + 1.0)
        try:
            self._answer(500 if behaviour == "fail" else 200)
            if behaviour == "twice":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                self.wfile.flush()
        except OSError:
            pass  # the client gave up on a late answer

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    # First decision: late, failed, then taken with a stray second answer; second
    # decision: failed (a client that took the stray answer for this one would stop
    # here, the decision never acted on), then taken.
    server = Receiver(["late", "fail", "twice", "fail", "ok"])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_late_a_failing_and_a_double_answer_give_one_action_each(
    deployment: Deployment, receiver: Receiver
) -> None:
    deployment.start_worker(DRIFTGATE_WEBHOOK_URL=receiver.url)
    biased = [label(f"{s}-{i}", s, 0.2, 0.9) for s in ("first", "second") for i in range(60)]
    deployment.produce("labels", [encode(biased)])  # two FAIL decisions, action alert

    def attempts() -> list[dict[str, Any]]:
        log = orjson.loads(deployment.cli("log", "--json").stdout)
        return [entry for entry in log if entry.get("kind") == "webhook"]

    try:
        deployment.wait_for(lambda: len(receiver.arrivals) >= 5, 60, "five webhook requests")
    except AssertionError as timeout:
        raise AssertionError(f"{timeout}: {receiver.arrivals}, {attempts()}") from None
    time.sleep(2.0)  # a sixth (a decision acted on twice, a lost answer retried) shows now

    keys = list(dict.fromkeys(key for _, key in receiver.arrivals))
    assert len(keys) == 2 and len(receiver.arrivals) == 5, receiver.arrivals
    assert receiver.acted == {keys[0]: 1, keys[1]: 1}  # one action per decision
    first = [t for t, key in receiver.arrivals if key == keys[0]]
    second = [t for t, key in receiver.arrivals if key == keys[1]]
    assert len(first) == 3 and len(second) == 2
    # Backoff: the timeout, then the first delay; the delay doubled; a new decision
    # starts again from the first delay.
    assert first[1] - first[0] >= WEBHOOK_TIMEOUT + FIRST_DELAY * 0.9
    assert first[2] - first[1] >= 2 * FIRST_DELAY * 0.9
    assert second[1] - second[0] >= FIRST_DELAY * 0.9

    deployment.wait_for(lambda: len(attempts()) == 5, 20, "every attempt in the audit log")
    audited = {
        key: [
            (a["attempt"], a["outcome"], a["delivered"])
            for a in attempts()
            if a["decision_id"] == key
        ]
        for key in keys
    }
    (late_attempt, late_outcome, late_delivered), *rest = audited[keys[0]]
    assert (late_attempt, late_delivered) == (1, False) and "Timeout" in late_outcome
    assert rest == [(2, "HTTP 500", False), (3, "HTTP 200", True)]
    assert audited[keys[1]] == [(1, "HTTP 500", False), (2, "HTTP 200", True)]

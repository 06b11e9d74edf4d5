"""The HTTP API of the contract, beside ``/metrics``: deployment controllers ask directly.

One threaded WSGI server (the one prometheus_client uses) serves both, off the worker's
event loop, so a controller's question is answered even while a batch is being applied.
Every answer is JSON and comes from the read model.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote
from wsgiref.simple_server import WSGIRequestHandler, make_server

import redis
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from redis.exceptions import RedisClusterException

from .._config import Policy
from ..store import ReadModel

__all__ = ["GateAPI", "serve"]

log = logging.getLogger(__name__)

# Reading the state can fail as a Redis error or, on a cluster, as a cluster error.
STATE_ERRORS = (redis.RedisError, RedisClusterException)
RAW_PATH = "driftgate.raw_path"
GATE_FIELDS = ("gate", "subject", "verdict", "action", "reason", "decision_id", "ts", "evidence")
FLAGGER_HOOKS = ("rollout", "confirm-promotion", "rollback")
MAX_BODY = 1 << 20
DRAIN_LIMIT = 64 * MAX_BODY
"""A body over ``MAX_BODY`` is read and dropped up to this many bytes, so that its
sender gets the 413 (past it, the connection is closed on the rest and may reset)."""

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
Answer = tuple[int, dict[str, Any]]


class GateAPI:
    """The WSGI application: routes, answers, and the fail-safe for an unreadable state.

    Parameters
    ----------
    read_model
        Where every answer comes from.
    registry
        The Prometheus registry served at ``/metrics``.
    health
        Returns None while the worker consumes, else why not.
    policy
        For each agent's ``canary.state_error_limit``.
    """

    def __init__(
        self,
        read_model: ReadModel,
        registry: CollectorRegistry,
        health: Callable[[], str | None],
        policy: Policy,
    ) -> None:
        self.read_model = read_model
        self.metrics = make_wsgi_app(registry)
        self.health = health
        self.policy = policy
        self._errors: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        # The path as sent, split before decoding: a subject may hold "/" (sent as %2F),
        # and each part is decoded once, as UTF-8 (PATH_INFO is decoded already, as Latin-1).
        raw = environ.get(RAW_PATH) or environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        if raw == "/metrics":
            return self.metrics(environ, start_response)  # type: ignore[no-any-return]
        parts = [unquote(part) for part in raw.strip("/").split("/")]
        try:
            status, document = self._route(method, parts, environ)
        except STATE_ERRORS as exc:
            status, document = 503, {"error": f"the state in Redis cannot be read: {exc}"}
        body = json.dumps(document, default=str).encode()
        start_response(
            f"{status} {_REASONS.get(status, 'Error')}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    def _route(self, method: str, parts: list[str], environ: dict[str, Any]) -> Answer:
        if parts == ["healthz"] and method == "GET":
            return self._healthz()
        if parts[:2] == ["v1", "gates"] and method == "GET":
            if len(parts) == 2:
                return 200, {"gates": [_gate(g) for g in self.read_model.snapshot().gates]}
            if len(parts) == 4:
                found = self.read_model.snapshot().gate(parts[2], parts[3])
                if found is None:
                    return 404, {"error": f"no gate {parts[2]!r} for subject {parts[3]!r}"}
                return 200, _gate(found)
        if parts[:2] == ["v1", "agents"] and len(parts) == 3 and method == "GET":
            return self._agent(parts[2])
        if parts[:2] == ["v1", "flagger"] and len(parts) == 3 and method == "POST":
            return self._flagger(parts[2], environ)
        if parts[:2] == ["v1", "flagger"] and method != "POST":
            return 405, {"error": "Flagger hooks take POST"}
        return 404, {"error": f"no such path: /{'/'.join(parts)}"}

    def _healthz(self) -> Answer:
        reason = self.health()
        if reason is None:
            try:
                self.read_model.client.ping()
            except STATE_ERRORS as exc:
                reason = f"Redis does not answer: {exc}"
        if reason is not None:
            return 503, {"status": "unavailable", "reason": reason}
        return 200, {"status": "ok"}

    def _agent(self, name: str) -> Answer:
        """An agent's verdict; while the state cannot be read, HOLD, then FAIL at the limit
        (the fail-safe: a controller never promotes blind, and does not wait for ever)."""
        try:
            agent = self.read_model.subject("experiment", name).agent(name)
        except STATE_ERRORS as exc:
            with self._lock:
                errors = self._errors[name] = self._errors.get(name, 0) + 1
            limit = self.policy.for_agent(name).canary.state_error_limit
            failed = errors >= limit
            return 200, {
                "agent": name,
                "bundle_id": None,
                "phase": None,
                "canary_percent": None,
                "hours_running": None,
                "verdict": "FAIL" if failed else "HOLD",
                "recommendation": "rollback" if failed else "hold",
                "reason": "state_unavailable",
                "detail": f"{errors} request(s) in a row could not read the state: {exc}",
                "gates": [],
            }
        with self._lock:
            self._errors.pop(name, None)
        if agent is None:
            return 404, {"error": f"unknown agent {name!r}"}
        return 200, {**agent, "gates": [_gate(g) for g in agent["gates"]]}

    def _flagger(self, hook: str, environ: dict[str, Any]) -> Answer:
        """Flagger's webhooks (it takes 200-202 as success, anything else as failure)."""
        if hook not in FLAGGER_HOOKS:
            return 404, {
                "error": f"unknown Flagger hook {hook!r}; known: {', '.join(FLAGGER_HOOKS)}"
            }
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length < 0:
                raise ValueError(f"Content-Length {length} is negative")
            if length > MAX_BODY:
                # Read and dropped, not parsed: closing on unread bytes resets the
                # connection, and the client sees the reset instead of this answer.
                _discard(environ["wsgi.input"], min(length, DRAIN_LIMIT))
                return 413, {"error": f"the body is {length} bytes, over the limit of {MAX_BODY}"}
            payload = json.loads(environ["wsgi.input"].read(length) or b"{}")
        except (ValueError, TypeError) as exc:
            return 400, {"error": f"the body is not Flagger's JSON payload: {exc}"}
        if not isinstance(payload, dict):
            return 400, {"error": "the body must be a JSON object"}
        metadata = payload.get("metadata")
        if not isinstance(metadata, dict):
            metadata = {}
        name = metadata.get("agent") or payload.get("name")
        if not isinstance(name, str) or not name:
            return 400, {"error": "no agent: give metadata.agent or name"}
        status, agent = self._agent(name)
        if status != 200:
            return status, agent
        verdict, recommendation = agent["verdict"], agent["recommendation"]
        bundle, followed = metadata.get("bundle_id"), agent.get("bundle_id")
        # (followed is None when the state cannot be read: the fail-safe answers then.)
        if bundle is not None and followed is not None and bundle != followed:
            # Asked about another bundle than driftgate follows: no verdict of it to give.
            return 409, {
                "agent": name,
                "hook": hook,
                "verdict": "INCONCLUSIVE",
                "recommendation": "monitor",
                "reason": f"driftgate follows bundle {agent.get('bundle_id')!r}, not {bundle!r}",
            }
        allowed = {
            "rollout": verdict not in ("FAIL", "HOLD"),
            "confirm-promotion": recommendation == "promote",
            "rollback": agent["phase"] == "rolled_back" or recommendation == "rollback",
        }[hook]
        answer = {
            "agent": name,
            "hook": hook,
            "verdict": verdict,
            "recommendation": recommendation,
            "reason": agent.get("reason"),
        }
        return (200 if allowed else 409), answer


def _discard(stream: Any, length: int) -> None:
    while length > 0:
        chunk = stream.read(min(length, 1 << 16))
        if not chunk:
            return
        length -= len(chunk)


def _gate(document: dict[str, Any]) -> dict[str, Any]:
    return {name: document.get(name) for name in GATE_FIELDS}


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    503: "Service Unavailable",
}


class _QuietHandler(WSGIRequestHandler):
    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        environ[RAW_PATH] = self.path.split("?", 1)[0]
        return environ

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


class _ThreadingWSGIServerV6(ThreadingWSGIServer):
    address_family = socket.AF_INET6


def serve(app: GateAPI, host: str, port: int) -> ThreadingWSGIServer:
    """Serve ``app`` on ``host:port`` from a daemon thread; returns the server.

    ``host`` is what it binds, exactly (``DRIFTGATE_METRICS_HOST``: loopback unless
    configured); an IPv6 address (``::1``, ``::``) gets an IPv6 socket.
    """
    server_class = _ThreadingWSGIServerV6 if ":" in host else ThreadingWSGIServer
    server = make_server(host, port, app, server_class, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="driftgate-http", daemon=True).start()
    return server

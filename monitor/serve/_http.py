"""The HTTP API of the contract, beside ``/metrics``: deployment controllers ask directly.

One server (``_server``: aiohttp's, on a thread of its own) serves both, off the worker's
event loop, so a controller's question is answered even while a batch is being applied.
Every answer is JSON and comes from the read model, each read shared by the requests
that ask the same at once and kept ``FRESH_FOR`` (0.5 s: ``_fresh``); an answer that needs
no read is given by :meth:`GateAPI.cached` on the server's loop. With a token, every
``/v1/...`` request must carry it (as a bearer token, or a Flagger hook as
``metadata.token``); ``/healthz`` and ``/metrics`` stay open.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec
from msgspec import UNSET, UnsetType
from prometheus_client import CollectorRegistry, make_wsgi_app

from ..config import Policy
from ..events._decisions import GateAnswer, GateDocument
from ..events._views import AgentStatus, AgentUnavailable
from ..slices import REGISTRY, ApiRoute
from ..slices._registry import Document
from ..store import STORE_ERRORS, ReadModel
from ._fresh import FRESH_FOR, Fresh, NotFresh

__all__ = ["GateAPI"]

# Reading the state can fail as a Redis error or, on a cluster, as a cluster error.
STATE_ERRORS = STORE_ERRORS
# The request target as sent (waitress's and uWSGI's name for it), query and all.
RAW_PATH = "REQUEST_URI"
FLAGGER_HOOKS = ("rollout", "confirm-promotion", "rollback")
MAX_BODY = 1 << 20
DRAIN_LIMIT = 64 * MAX_BODY
"""A body over ``MAX_BODY`` is read and dropped up to this many bytes, so that its
sender gets the 413 (past it, the server refuses the request itself)."""

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class ErrorAnswer(msgspec.Struct, frozen=True):
    """Any refusal, and a gate or subject that is not known."""

    error: str


class HealthAnswer(msgspec.Struct, frozen=True):
    """``/healthz``: ``ok``, or ``unavailable`` and why."""

    status: str
    reason: str | UnsetType = UNSET


class GatesAnswer(msgspec.Struct, frozen=True):
    """``/v1/gates``: every gate of every subject."""

    gates: list[GateAnswer]


class HookAnswer(msgspec.Struct, frozen=True):
    """A Flagger hook's answer: the agent's verdict and recommendation, 200 when the
    hook's step may go on, 409 when not."""

    agent: str
    hook: str
    verdict: str
    recommendation: str
    reason: str | None


Answer = tuple[int, Document]
Response = tuple[str, list[tuple[str, str]], bytes]


class _Encoded:
    """A document kept for the requests to come, with its JSON: encoded once. Never
    changed after it is made (every request that asks gets this one)."""

    __slots__ = ("body", "document")

    def __init__(self, document: Document) -> None:
        self.document = document
        self.body = _encode(document)


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
    token
        ``DRIFTGATE_API_TOKEN``: when given, every ``/v1/...`` request must carry it.
    fresh_for
        Seconds a read of the state is kept for the requests after it (0: shared only
        by the requests that ask while it is under way).
    """

    def __init__(
        self,
        read_model: ReadModel,
        registry: CollectorRegistry,
        health: Callable[[], str | None],
        policy: Policy,
        token: str | None = None,
        fresh_for: float = FRESH_FOR,
    ) -> None:
        self.read_model = read_model
        self.metrics = make_wsgi_app(registry)
        self.health = health
        self.policy = policy
        self._token = token.encode() if token else None
        # /v1/COLLECTION/NAME of each subject kind (/v1/agents/NAME among them).
        self.routes: dict[str, ApiRoute] = REGISTRY.api()
        self._errors: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._reads: Fresh[Any] = Fresh(fresh_for)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        return self._respond(environ, start_response, cached_only=False)

    def cached(self, environ: dict[str, Any]) -> Response | None:
        """The answer (status, headers, body) when it needs no I/O: from reads kept, or
        no read at all (401, 404, 405, 400); None when it needs a read (then call the
        application, from a thread, with ``wsgi.input`` read again from its start)."""
        seen: list[Any] = []
        try:
            chunks = self._respond(
                environ, lambda status, headers, *_: seen.extend((status, headers)), True
            )
        except NotFresh:
            return None
        return seen[0], seen[1], b"".join(chunks)

    def _respond(
        self, environ: dict[str, Any], start_response: StartResponse, cached_only: bool
    ) -> Iterable[bytes]:
        # The path as sent, split before decoding: a subject may hold "/" (sent as %2F),
        # and each part is decoded once, as UTF-8 (PATH_INFO is decoded already, as Latin-1).
        raw = (environ.get(RAW_PATH) or environ.get("PATH_INFO", "/")).split("?", 1)[0]
        method = environ.get("REQUEST_METHOD", "GET")
        parts = [unquote(part) for part in raw.strip("/").split("/")]
        # HEAD is GET without the body (RFC 9110 9.3.2): the same status and headers,
        # Content-Length included, wherever GET is answered.
        head = method == "HEAD" and "GET" in (_methods(parts, self.routes) or ())
        if parts == ["metrics"] and method in ("GET", "HEAD"):
            if cached_only:
                raise NotFresh("metrics")
            if head:
                return _without_body(
                    self.metrics, {**environ, "REQUEST_METHOD": "GET"}, start_response
                )
            return self.metrics(environ, start_response)  # type: ignore[no-any-return]
        try:
            status, document = self._route("GET" if head else method, parts, environ, cached_only)
        except STATE_ERRORS as exc:
            status, document = 503, ErrorAnswer(f"the state in Redis cannot be read: {exc}")
        body = document.body if isinstance(document, _Encoded) else _encode(document)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        if status == 401:
            headers.append(("WWW-Authenticate", 'Bearer realm="driftgate"'))
        if status == 405:
            headers.append(("Allow", ", ".join(_methods(parts, self.routes) or ())))
        start_response(f"{status} {_REASONS.get(status, 'Error')}", headers)
        return [] if head else [body]

    def _route(
        self, method: str, parts: list[str], environ: dict[str, Any], cached_only: bool
    ) -> Answer:
        """Who may ask (the token, before anything about the path is told), whether the
        path is one of the API's, whether it takes the method, then the answer."""
        methods = _methods(parts, self.routes)
        authorized = parts[0] != "v1" or self._bearer(environ)
        is_hook = methods == ("POST",) and method == "POST"
        if not authorized and not is_hook:  # a hook may carry the token in its body
            return UNAUTHORIZED
        if methods is None:
            return 404, ErrorAnswer(_unknown(parts))
        if method not in methods:
            return 405, ErrorAnswer(f"/{'/'.join(parts)} takes {' or '.join(methods)}")
        if is_hook:
            return self._flagger(parts[2], environ, authorized, cached_only)
        if parts == ["healthz"]:
            if cached_only:
                raise NotFresh("healthz")
            return self._healthz()
        if parts[1] in self.routes:
            return self._subject(parts[1], parts[2], cached_only)
        if len(parts) == 2:
            return 200, self._reads.get(("gates",), self._gates, cached_only)
        # ?covariate=NAME: one covariate's verdict of covariate_drift (which gives one per
        # covariate); without it, the worst of a gate's verdicts of the subject.
        covariate = parse_qs(environ.get("QUERY_STRING", "")).get("covariate", [None])[-1]
        snapshot = self._reads.get(("snapshot",), self.read_model.snapshot, cached_only)
        found = snapshot.gate(parts[2], parts[3], covariate)
        if found is None:
            of = "" if covariate is None else f" and covariate {covariate!r}"
            return 404, ErrorAnswer(f"no gate {parts[2]!r} for subject {parts[3]!r}{of}")
        return 200, found.answer()

    def _bearer(self, environ: dict[str, Any]) -> bool:
        """Whether the request is let in by its ``Authorization: Bearer`` header (every
        request is, without a token)."""
        if self._token is None:
            return True
        scheme, _, credentials = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        return scheme.lower() == "bearer" and self._matches(credentials.strip())

    def _matches(self, candidate: object) -> bool:
        """Constant-time: how long a comparison takes tells nothing about the token."""
        if self._token is None or not isinstance(candidate, str):
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "replace"), self._token)

    def _healthz(self) -> Answer:
        reason = self.health()
        if reason is None:
            try:
                self.read_model.client.ping()
            except STATE_ERRORS as exc:
                reason = f"Redis does not answer: {exc}"
        if reason is not None:
            return 503, HealthAnswer("unavailable", reason)
        return 200, HealthAnswer("ok")

    def _gates(self) -> _Encoded:
        """``/v1/gates``: every gate of every subject (a read of every subject)."""
        return _Encoded(GatesAnswer([g.answer() for g in self.read_model.snapshot().gates]))

    def _subject(self, collection: str, name: str, cached_only: bool = False) -> Answer:
        """A subject of a kind, by name (one read); while the state cannot be read, the
        kind's fail-safe answer if it has one (the agents': HOLD, then FAIL at the limit).
        Every request that cannot read counts, also those that waited for one read."""
        route, key = self.routes[collection], (collection, name)

        def read() -> _Encoded | None:
            document = route.answer(self.read_model.subject(route.kind, name), name)
            if document is None:
                return None
            if isinstance(document, Mapping) and "gates" in document:
                document = {**document, "gates": [_gate(g) for g in document["gates"]]}
            return _Encoded(document)

        try:
            document = self._reads.get(("subject", *key), read, cached_only)
        except STATE_ERRORS as exc:
            if route.unreadable is None:
                raise
            with self._lock:
                errors = self._errors[collection, name] = self._errors.get(key, 0) + 1
            return 200, route.unreadable(self.policy, name, errors, exc)
        if key in self._errors:
            with self._lock:
                self._errors.pop(key, None)
        if document is None:
            return 404, ErrorAnswer(f"unknown {route.noun} {name!r}")
        return 200, document

    def _flagger(
        self, hook: str, environ: dict[str, Any], authorized: bool, cached_only: bool
    ) -> Answer:
        """Flagger's webhooks (it takes 200-202 as success, anything else as failure).
        Flagger sends no headers of its own: the token may come as ``metadata.token``."""
        payload = _payload(environ)
        if not authorized and not (
            isinstance(payload, dict) and self._matches(_metadata(payload).get("token"))
        ):
            return UNAUTHORIZED
        if not isinstance(payload, dict):
            return payload
        metadata = _metadata(payload)
        name = metadata.get("agent") or payload.get("name")
        if not isinstance(name, str) or not name:
            return 400, ErrorAnswer("no agent: give metadata.agent or name")
        status, agent = self._subject("agents", name, cached_only)
        if status != 200:
            return status, agent
        if isinstance(agent, _Encoded):
            agent = agent.document
        assert isinstance(agent, AgentStatus | AgentUnavailable)  # the experiments' slice's
        verdict, recommendation = agent.verdict, agent.recommendation
        bundle, followed = metadata.get("bundle_id"), agent.bundle_id
        # (followed is None when the state cannot be read: the fail-safe answers then.)
        if bundle is not None and followed is not None and bundle != followed:
            # Asked about another bundle than driftgate follows: no verdict of it to give.
            reason = f"driftgate follows bundle {followed!r}, not {bundle!r}"
            return 409, HookAnswer(name, hook, "INCONCLUSIVE", "monitor", reason)
        allowed = {
            "rollout": verdict not in ("FAIL", "HOLD"),
            "confirm-promotion": recommendation == "promote",
            "rollback": agent.phase == "rolled_back" or recommendation == "rollback",
        }[hook]
        answer = HookAnswer(name, hook, verdict, recommendation, agent.reason)
        return (200 if allowed else 409), answer


def _methods(parts: list[str], routes: Mapping[str, ApiRoute]) -> tuple[str, ...] | None:
    """The methods a path of the API takes; None for a path that is not one."""
    match parts:
        case ["healthz"] | ["metrics"] | ["v1", "gates"] | ["v1", "gates", _, _]:
            return ("GET", "HEAD")
        case ["v1", collection, _] if collection in routes:
            return ("GET", "HEAD")
        case ["v1", "flagger", hook] if hook in FLAGGER_HOOKS:
            return ("POST",)
    return None


def _without_body(
    app: Callable[..., Iterable[bytes]], environ: dict[str, Any], start_response: StartResponse
) -> Iterable[bytes]:
    """``app``'s answer to GET, as the answer to HEAD: its status and headers, with the
    length of the body it would have sent, and no body."""
    seen: list[Any] = []
    body = b"".join(app(environ, lambda status, headers, *_: seen.extend((status, headers))))
    status, headers = seen
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    start_response(status, [*headers, ("Content-Length", str(len(body)))])
    return []


def _unknown(parts: list[str]) -> str:
    if parts[:2] == ["v1", "flagger"] and len(parts) == 3:
        return f"unknown Flagger hook {parts[2]!r}; known: {', '.join(FLAGGER_HOOKS)}"
    return f"no such path: /{'/'.join(parts)}"


def _payload(environ: dict[str, Any]) -> dict[str, Any] | Answer:
    """A hook's body as a JSON object, or the answer to a body that is not one."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length < 0:
            raise ValueError(f"Content-Length {length} is negative")
        if length > MAX_BODY:
            # Read and dropped, not parsed: closing on unread bytes resets the
            # connection, and the client sees the reset instead of this answer.
            _discard(environ["wsgi.input"], min(length, DRAIN_LIMIT))
            return 413, ErrorAnswer(f"the body is {length} bytes, over the limit of {MAX_BODY}")
        payload = json.loads(environ["wsgi.input"].read(length) or b"{}")
    except (ValueError, TypeError) as exc:
        return 400, ErrorAnswer(f"the body is not Flagger's JSON payload: {exc}")
    if not isinstance(payload, dict):
        return 400, ErrorAnswer("the body must be a JSON object")
    return payload


def _metadata(payload: dict[str, Any]) -> dict[str, Any]:
    metadata = payload.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _discard(stream: Any, length: int) -> None:
    while length > 0:
        chunk = stream.read(min(length, 1 << 16))
        if not chunk:
            return
        length -= len(chunk)


def _encode(document: Document) -> bytes:
    return json.dumps(msgspec.to_builtins(document, enc_hook=str), default=str).encode()


def _gate(gate: Any) -> Any:
    """A gate in a kind's document, as ``GATE`` of the contract."""
    return gate.answer() if isinstance(gate, GateDocument) else gate


UNAUTHORIZED: Answer = (
    401,
    ErrorAnswer(
        "this request needs DRIFTGATE_API_TOKEN: send Authorization: Bearer TOKEN "
        "(a Flagger hook may send metadata.token instead)"
    ),
)

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    503: "Service Unavailable",
}

"""The API's reads shared by concurrent requests and kept FRESH_FOR (monitor/serve/_fresh.py),
and what the gate API answers from them: on a clock of the test's own, no sleeping."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from monitor import Policy
from monitor.serve import GateAPI
from monitor.serve._fresh import FRESH_FOR, MAX_KEPT, Fresh, NotFresh
from monitor.serve._http import RAW_PATH
from monitor.serve._wsgi import call_app as _call

from .test_http import ReadModel, flagger, request, snapshot


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_is_kept_fresh_for_seconds_then_read_again() -> None:
    clock, reads = Clock(), []
    fresh: Fresh[int] = Fresh(0.5, clock=clock)

    def read() -> int:
        reads.append(clock.now)
        return len(reads)

    assert fresh.get("a", read) == 1
    clock.now += 0.49
    assert fresh.get("a", read) == 1  # kept
    assert fresh.get("b", read) == 2  # another key, another read
    clock.now += 0.01  # 0.5 s after the start of the first read
    assert fresh.get("a", read) == 3
    assert reads == [100.0, 100.49, 100.5]


def test_cached_only_answers_what_is_kept_and_never_reads() -> None:
    clock = Clock()
    fresh: Fresh[str] = Fresh(0.5, clock=clock)
    with pytest.raises(NotFresh):
        fresh.get("a", lambda: pytest.fail("read"), cached_only=True)
    fresh.get("a", lambda: "answer")
    assert fresh.get("a", lambda: pytest.fail("read"), cached_only=True) == "answer"
    clock.now += 0.5
    with pytest.raises(NotFresh):
        fresh.get("a", lambda: pytest.fail("read"), cached_only=True)


def test_a_failed_read_is_never_kept() -> None:
    fresh: Fresh[str] = Fresh(0.5, clock=Clock())
    error = redis.ConnectionError("refused")

    def fail() -> str:
        raise error

    with pytest.raises(redis.ConnectionError):
        fresh.get("a", fail)
    with pytest.raises(NotFresh):
        fresh.get("a", fail, cached_only=True)
    assert fresh.get("a", lambda: "read again") == "read again"


@pytest.mark.parametrize("fails", [False, True], ids=["answer", "error"])
def test_requests_that_ask_while_a_read_is_under_way_share_it(fails: bool) -> None:
    """Followers arrive while the first read is held; each gets its answer (or its
    error), and the read happened once. Kept 0 s: nothing is kept, only shared."""
    waiting, reading, release, reads = (
        threading.Semaphore(0),
        threading.Event(),
        threading.Event(),
        [],
    )
    fresh: Fresh[str] = Fresh(0.0)
    followers = 8
    original = fresh._flights

    class Watched(dict[Any, Any]):
        """The flights: a follower that found the flight under way is about to wait."""

        def get(self, key: Any, default: Any = None) -> Any:
            found = dict.get(self, key, default)
            if found is not None:
                waiting.release()
            return found

    fresh._flights = Watched(original)

    def read() -> str:
        reads.append(1)
        reading.set()
        release.wait(10)
        if fails:
            raise redis.TimeoutError("slow")
        return "the state"

    results: list[Any] = []

    def ask() -> None:
        try:
            results.append(fresh.get("agent", read))
        except redis.TimeoutError as exc:
            results.append(exc)

    leader = threading.Thread(target=ask)
    leader.start()
    threads = [threading.Thread(target=ask) for _ in range(followers)]
    assert reading.wait(10)  # the leader is in its read before the followers come
    for thread in threads:
        thread.start()
    for _ in range(followers):
        assert waiting.acquire(timeout=10)
    release.set()
    for thread in [leader, *threads]:
        thread.join(10)
    assert len(reads) == 1
    assert len(results) == followers + 1
    if fails:
        assert all(isinstance(result, redis.TimeoutError) for result in results)
    else:
        assert results == ["the state"] * (followers + 1)
    assert not fresh._flights  # nothing left under way


def test_the_answers_kept_are_bounded() -> None:
    clock = Clock()
    fresh: Fresh[int] = Fresh(0.5, clock=clock)
    for i in range(MAX_KEPT - 1):
        fresh.get(i, lambda i=i: i)  # type: ignore[misc]
    clock.now += 0.25
    fresh.get("fresher", lambda: -1)
    assert len(fresh._kept) == MAX_KEPT
    clock.now += 0.25  # the first ones are stale, "fresher" is not: the stale ones go
    fresh.get("past the bound", lambda: -2)
    assert set(fresh._kept) == {"fresher", "past the bound"}
    for i in range(MAX_KEPT - 2):
        fresh.get(i, lambda i=i: i)  # type: ignore[misc]
    fresh.get("all fresh", lambda: -3)  # none stale: all go, the new one is kept
    assert set(fresh._kept) == {"all fresh"}


# --- the gate API ---------------------------------------------------------------------------


class CountingReadModel(ReadModel):
    def __init__(self) -> None:
        super().__init__(snapshot())
        self.reads = 0

    def subject(self, kind: str, name: str) -> Any:
        self.reads += 1
        self.within_subject = True
        try:
            return super().subject(kind, name)
        finally:
            self.within_subject = False

    def snapshot(self, with_history: bool = False) -> Any:
        if not getattr(self, "within_subject", False):
            self.reads += 1
        return super().snapshot(with_history)


@pytest.fixture
def model() -> CountingReadModel:
    return CountingReadModel()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def api(model: CountingReadModel, clock: Clock, token: str | None = None) -> GateAPI:
    app = GateAPI(model, CollectorRegistry(), lambda: None, Policy(), token)  # type: ignore[arg-type]
    app._reads = Fresh(FRESH_FOR, clock=clock)
    return app


def environ(path: str, method: str = "GET", body: bytes = b"", **extra: str) -> dict[str, Any]:
    """What the server hands the application (monitor/serve/_wsgi.py's environ_of)."""
    return {
        "REQUEST_METHOD": method,
        RAW_PATH: path,
        "PATH_INFO": path.split("?")[0],
        "QUERY_STRING": path.partition("?")[2],
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "wsgi.input": io.BytesIO(body),
        **extra,
    }


@pytest.mark.parametrize("path", ["/v1/agents/ready", "/v1/gates", "/v1/gates/canary/ready"])
def test_the_api_reads_once_per_fresh_for_and_answers_the_same(
    model: CountingReadModel, clock: Clock, path: str
) -> None:
    app = api(model, clock)
    first = request(app, path)
    assert first[0] == 200 and model.reads == 1
    assert [request(app, path) for _ in range(5)] == [first] * 5
    assert model.reads == 1
    clock.now += FRESH_FOR
    assert request(app, path)[0] == 200  # (an agent's hours_running has moved on since)
    assert model.reads == 2


def test_the_api_answers_without_io_only_what_it_has_read(
    model: CountingReadModel, clock: Clock
) -> None:
    """``cached``: None while the answer needs a read (the server then asks a thread);
    the same answer as the application's once the read is kept; a hook's body is read
    again by the application after ``cached`` declined."""
    app = api(model, clock)
    assert app.cached(environ("/v1/agents/ready")) is None
    assert app.cached(environ("/healthz")) is None
    assert app.cached(environ("/metrics")) is None
    assert model.reads == 0
    hook = json.dumps(flagger(agent="ready")).encode()
    declined = environ("/v1/flagger/confirm-promotion", "POST", hook)
    assert app.cached(declined) is None
    declined["wsgi.input"].seek(0)
    body = request(app, "/v1/agents/ready")[2]
    answer = app.cached(environ("/v1/agents/ready"))
    assert answer is not None
    assert answer[0] == "200 OK" and answer[2] == body
    assert dict(answer[1])["Content-Length"] == str(len(body))
    head = app.cached(environ("/v1/agents/ready", "HEAD"))
    assert head is not None and head[2] == b"" and dict(head[1]) == dict(answer[1])
    hooked = app.cached(environ("/v1/flagger/confirm-promotion", "POST", hook))
    assert hooked is not None
    assert json.loads(hooked[2])["recommendation"] == "promote"
    assert model.reads == 1
    # No read at all: answered on the loop whatever is kept.
    missing = app.cached(environ("/v1/nothing"))
    assert missing is not None and missing[0] == "404 Not Found"


def test_without_the_token_nothing_kept_is_told(model: CountingReadModel, clock: Clock) -> None:
    token = "t" * 32
    app = api(model, clock, token)
    authorized = environ("/v1/agents/ready", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert app.cached(authorized) is None
    authorized["wsgi.input"].seek(0)
    assert _call(app, authorized)[0] == "200 OK"
    assert app.cached(authorized) is not None
    refused = app.cached(environ("/v1/agents/ready"))
    assert refused is not None and refused[0] == "401 Unauthorized"
    wrong = app.cached(environ("/v1/agents/ready", HTTP_AUTHORIZATION="Bearer " + "u" * 32))
    assert wrong is not None and wrong[0] == "401 Unauthorized"
    hook = json.dumps(flagger(agent="ready")).encode()
    assert app.cached(environ("/v1/flagger/rollout", "POST", hook))[0] == "401 Unauthorized"  # type: ignore[index]

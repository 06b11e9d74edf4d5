"""The HTTP gate API under a burst of parallel controllers: the servers side by side.

    python bench/http_api.py [--clients 200] [--rounds 10] [--servers before,aiohttp]
                             [--before REF] [--out DIR]

Each server runs in a process of its own (as the worker's would, apart from the
controllers), on 127.0.0.1, over the real read model: a redis-server of the bench's own
holds one agent's view, and every answer reads it (one HGETALL). Every round opens
``--clients`` connections at once; each sends a Flagger hook (``POST
/v1/flagger/rollout``) with its headers and its body in two writes, as Go's HTTP client
can, or ``GET /v1/agents/{agent}`` as Argo's web metric does, and waits up to 5 s
(Flagger's webhook timeout) for the answer. Counted: answers, connection resets, other
failures, the latency from connect to the last byte of the answer, and the server
process's CPU time per request (steadier than latency on a shared machine). The servers take
their rounds in turn, so that the machine's noise falls on all of them alike.

The client is kept light, since it shares the two cores with the server: one epoll loop
over non-blocking sockets (no asyncio task, future or stream per connection), the requests'
bytes built before the burst, and its own CPU time per request measured and reported. Each
round's percentiles and the machine's load average after it are in the results.

``before`` is the server of another commit (``--before``, by default the one before the
API's answers were shared and kept): its ``monitor`` and this bench's server side taken
from that commit with ``git archive``, so that both run in the same rounds.

Writes bench/results/http_api.md and .json.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import redis  # noqa: E402
from _harness import machine_summary, markdown_table  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client.exposition import ThreadingWSGIServer  # noqa: E402

from monitor import Policy  # noqa: E402
from monitor.runtime._services import free_port, start_redis  # noqa: E402
from monitor.serve import GateAPI, serve  # noqa: E402
from monitor.serve._http import DRAIN_LIMIT, RAW_PATH  # noqa: E402
from monitor.serve._limits import BACKLOG, REQUEST_TIMEOUT, THREADS  # noqa: E402
from monitor.store import KeyLayout, ReadModel, connect  # noqa: E402
from monitor.store._keys import GATES, VIEW  # noqa: E402

HOST = "127.0.0.1"
AGENT = "inbox_triage"
PREFIX = "driftgate:"
TIMEOUT = 5.0  # Flagger's webhook timeout; it does not retry
# The commit before the API's reads were shared and kept (monitor/serve/_fresh.py).
BEFORE = "67f00d4"
SERVERS = {
    "before": f"aiohttp at {BEFORE}: every request reads Redis, in a thread (before)",
    "old": "wsgiref, backlog 5, a thread per connection (before issue 21)",
    "stdlib": "wsgiref, backlog 1,024, a pool of 8 threads",
    "waitress": "waitress, 4 threads, connection limit 512 (driftgate's serve before)",
    "waitress-tuned": "waitress tuned: 2 threads, connection limit 100, channel timeout 15 s",
    "aiohttp": f"a front of its own, aiohttp for the rest, {THREADS} threads read, answers "
    "kept 0.5 s (driftgate's serve)",
}
DEFAULT_SERVERS = ("before", "aiohttp")
POOL_THREADS = 8
# waitress as driftgate served with it until 2026-12-08 (monitor/serve/_http.py then), and
# tuned: fewer channels for its I/O thread to ask each turn, idle ones closed sooner.
WAITRESS = {
    "waitress": {"threads": 4, "connection_limit": 512},
    "waitress-tuned": {"threads": 2, "connection_limit": 100, "channel_timeout": REQUEST_TIMEOUT},
}


# --- the server side (run as `--serve NAME` in a process of its own) ------------------------


def write_agent(client: redis.Redis, layout: KeyLayout) -> None:
    """One agent, PASS, written where the worker writes its view."""
    view = {
        "agent": AGENT,
        "bundle_id": "v2",
        "phase": "monitoring",
        "canary_percent": 10.0,
        "deployed_at": time.time() - 3600,
        "verdict": "PASS",
        "reason": "promotion_ready",
        "recommendation": "promote",
        "comparison": None,  # as the worker writes them (an earlier worker's row has none)
        "rollback": None,
        "history": [],
    }
    document = {"experiment": {"control": "control", "variants": {}}, "agent": view}
    key = layout.subject("experiment", AGENT).view
    client.hset(key, mapping={VIEW: json.dumps(document), GATES: json.dumps({})})
    client.sadd(layout.registry("experiment"), AGENT)


class QuietHandler(WSGIRequestHandler):
    """The old server's handler: the path as sent, no log line per request."""

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        environ[RAW_PATH] = self.path
        return environ

    def log_message(self, format: str, *args: Any) -> None:
        pass


class PooledWSGIServer(ThreadingWSGIServer):
    """The stdlib candidate: a backlog of 1,024 and a bounded pool instead of a thread
    per connection."""

    request_queue_size = 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool = ThreadPoolExecutor(POOL_THREADS)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.pool.submit(self.process_request_thread, request, client_address)


def run_server(name: str, redis_url: str) -> None:
    """Serve the API on a free loopback port, print the port, stop when stdin closes."""
    read_model = ReadModel(connect(redis_url, cluster=False), KeyLayout(PREFIX))
    app = GateAPI(read_model, CollectorRegistry(), lambda: None, Policy())
    if name == "aiohttp":
        port = serve(app, HOST, 0).port
    elif name in WAITRESS:
        port = serve_waitress(app, WAITRESS[name])
    else:
        server_class = ThreadingWSGIServer if name == "old" else PooledWSGIServer
        server = make_server(HOST, 0, app, server_class, handler_class=QuietHandler)
        port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(port, flush=True)
    sys.stdin.read()


def serve_waitress(app: GateAPI, settings: dict[str, Any]) -> int:
    """waitress on a free loopback port, from a thread; returns the port."""
    import logging

    from waitress.server import create_server

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    server = create_server(
        app,
        host=HOST,
        port=0,
        backlog=BACKLOG,
        asyncore_use_poll=True,
        max_request_body_size=DRAIN_LIMIT,
        **settings,
    )
    threading.Thread(target=server.run, daemon=True).start()
    return int(server.effective_port)  # type: ignore[union-attr]


# --- the client side ------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Tally:
    cpu: float = 0.0
    client_cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)
    resets: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    round_p99: list[float] = field(default_factory=list)
    """Each burst's own p99 (ms): the machine is shared, and a busy neighbour during one
    round moves the pooled tail of every round."""
    rounds: list[dict[str, Any]] = field(default_factory=list)
    """Each burst's figures (ms), the load average after it."""

    def fail(self, what: str) -> None:
        self.failures[what] = self.failures.get(what, 0) + 1


def request_bytes(kind: str) -> tuple[bytes, bytes]:
    """The request's head and body, sent in two writes."""
    if kind == "get":
        head = f"GET /v1/agents/{AGENT} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: bench\r\n\r\n"
        return head.encode(), b""
    body = json.dumps(
        {
            "name": "insights-writer",
            "namespace": "agents",
            "phase": "Progressing",
            "checksum": "x",
            "metadata": {"agent": AGENT, "type": "rollout"},
        }
    ).encode()
    head = (
        f"POST /v1/flagger/rollout HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: Go-http-client/1.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode(), body


class Exchange:
    """One request on a connection of its own, driven by :func:`burst`'s epoll loop."""

    __slots__ = ("body", "end", "head", "received", "sock", "started", "status")

    def __init__(self, head: bytes, body: bytes) -> None:
        self.head, self.body = head, body
        self.received = bytearray()
        self.end = -1  # where the answer ends, once its head is in
        self.status = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.started = 0.0

    def complete(self, data: bytes) -> bool:
        """Whether the answer is in whole, with ``data``; ValueError if it is malformed."""
        self.received += data
        if self.end < 0:
            head_end = self.received.find(b"\r\n\r\n")
            if head_end < 0:
                return False
            lines = bytes(self.received[:head_end]).decode("latin-1").split("\r\n")
            try:
                self.status = int(lines[0].split()[1])
                length = next(
                    int(line.split(":", 1)[1])
                    for line in lines
                    if line.lower().startswith("content-length:")
                )
            except (IndexError, StopIteration) as exc:
                raise ValueError(f"malformed answer: {exc!r}") from exc
            self.end = head_end + 4 + length
        return len(self.received) >= self.end


def stall(port: int) -> socket.socket:
    """A slow sender: the head of a hook, then nothing until it is closed."""
    head, _ = request_bytes("post")
    sock = socket.create_connection((HOST, port))
    sock.sendall(head)
    return sock


def burst(port: int, clients: int, tally: Tally, stallers: int = 0) -> None:
    """``clients`` connections at once, half Flagger hooks, half Argo's GET, while
    ``stallers`` slow senders hold connections open; a request not answered within
    ``TIMEOUT`` of the burst's start counts as a timeout.

    The client is one epoll loop over non-blocking sockets (no asyncio: no task, future or
    transport per connection), so that it takes as little as it can of the cores the
    server shares: each connection is opened, its head sent once it is connected, a hook's
    body 1 ms later (a segment of its own, TCP_NODELAY), the answer read whole, and the
    connection closed. The latency of a request runs from its ``connect`` to the last
    byte of its answer."""
    slow = [stall(port) for _ in range(stallers)]
    if slow:
        time.sleep(0.2)  # the server has taken their heads
    exchanges = [Exchange(*request_bytes("post" if i % 2 == 0 else "get")) for i in range(clients)]
    poll = select.epoll()
    open_: dict[int, Exchange] = {}
    connected: set[int] = set()
    bodies: list[tuple[float, int]] = []  # (due, fd) of the hooks' bodies still to send
    started = time.perf_counter()

    def close(fd: int) -> None:
        poll.unregister(fd)
        open_.pop(fd).sock.close()

    def failed(fd: int, exc: OSError) -> None:
        if isinstance(exc, ConnectionResetError) or exc.errno == errno.ECONNRESET:
            tally.resets += 1
        else:
            tally.fail(errno.errorcode.get(exc.errno or 0, type(exc).__name__))
        close(fd)

    for exchange in exchanges:
        exchange.started = time.perf_counter()
        error = exchange.sock.connect_ex((HOST, port))
        if error not in (0, errno.EINPROGRESS):
            tally.fail(errno.errorcode.get(error, str(error)))
            exchange.sock.close()
            continue
        fd = exchange.sock.fileno()
        open_[fd] = exchange
        poll.register(fd, select.EPOLLOUT)
    try:
        while open_:
            now = time.perf_counter()
            left = started + TIMEOUT - now
            if left <= 0:
                break
            while bodies and bodies[0][0] <= now:
                _, fd = bodies.pop(0)
                if fd in open_:
                    try:
                        open_[fd].sock.send(open_[fd].body)
                    except OSError as exc:
                        failed(fd, exc)
            wait = min(left, bodies[0][0] - now) if bodies else left
            for fd, _ in poll.poll(max(wait, 0.0)):
                exchange = open_[fd]
                if fd not in connected:
                    error = exchange.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    try:
                        if error:
                            raise OSError(error, os.strerror(error))
                        exchange.sock.send(exchange.head)
                    except OSError as exc:
                        failed(fd, exc)
                        continue
                    connected.add(fd)
                    if exchange.body:
                        bodies.append((time.perf_counter() + 0.001, fd))
                    poll.modify(fd, select.EPOLLIN)
                    continue
                try:
                    data = exchange.sock.recv(65536)
                    if not data:
                        tally.fail("closed before the whole answer")
                    elif not exchange.complete(data):
                        continue
                    else:
                        tally.statuses[exchange.status] = tally.statuses.get(exchange.status, 0) + 1
                        if exchange.status == 200:  # the agent is PASS: anything else failed
                            tally.latencies.append(time.perf_counter() - exchange.started)
                        else:
                            tally.fail(f"status {exchange.status}")
                except ValueError:
                    tally.fail("malformed answer")
                except OSError as exc:
                    failed(fd, exc)
                    continue
                close(fd)
    finally:
        for fd in list(open_):
            tally.fail("timeout")
            close(fd)
        poll.close()
        for sock in slow:
            sock.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary_row(name: str, tally: Tally, sent: int) -> list[Any]:
    ms = [1000 * value for value in tally.latencies]
    other = ", ".join(f"{k} {v}" for k, v in sorted(tally.failures.items())) or "0"
    return [
        SERVERS[name],
        sent,
        len(tally.latencies),
        tally.resets,
        other,
        statistics.median(ms) if ms else float("nan"),
        percentile(ms, 0.90),
        percentile(ms, 0.99),
        statistics.median(tally.round_p99) if tally.round_p99 else float("nan"),
        max(ms, default=float("nan")),
        1000 * tally.cpu / sent,
        1000 * tally.client_cpu / sent,
    ]


def round_figures(latencies: list[float], tally: Tally, resets: int) -> dict[str, Any]:
    """One burst's percentiles (ms), its resets, and the load average after it."""
    ms = [1000 * value for value in latencies]
    return {
        "answered": len(ms),
        "resets": tally.resets - resets,
        "p50": statistics.median(ms) if ms else float("nan"),
        "p90": percentile(ms, 0.90),
        "p99": percentile(ms, 0.99),
        "max": max(ms, default=float("nan")),
        "load": os.getloadavg()[0],
    }


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def server_command(name: str, redis_url: str, before: Path | None) -> list[str]:
    """The command of a server process: ``before`` from the tree of the ``--before``
    commit (its bench's server side, its ``monitor``), the others from this one."""
    if name == "before":
        assert before is not None
        script, name = before / "bench" / "http_api.py", "aiohttp"
    else:
        script = Path(__file__)
    return [sys.executable, str(script), "--serve", name, "--redis-url", redis_url]


def checkout(ref: str) -> Path:
    """``monitor`` and ``bench`` of commit ``ref``, in a directory of their own."""
    into = Path(tempfile.mkdtemp(prefix="driftgate-bench-before-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "monitor", "bench"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--stallers", type=int, default=2 * POOL_THREADS)
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS))
    parser.add_argument("--before", default=BEFORE, help="the commit of the 'before' server")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--serve", choices=list(SERVERS), help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve, args.redis_url)
        return
    names = args.servers.split(",")
    if "before" in names:
        SERVERS["before"] = SERVERS["before"].replace(BEFORE, args.before)
    before = checkout(args.before) if "before" in names else None
    redis_server = start_redis(
        free_port(), Path(tempfile.mkdtemp(prefix="driftgate-bench-")), appendonly=False
    )
    with redis.Redis.from_url(redis_server.address) as client:
        write_agent(client, KeyLayout(PREFIX))
    processes = {
        name: subprocess.Popen(
            server_command(name, redis_server.address, before),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for name in names
    }
    try:
        ports = {name: int(p.stdout.readline()) for name, p in processes.items()}  # type: ignore[union-attr]
        uptime_before = uptime()  # the machine is shared: say how busy it was
        tallies = {(name, s): Tally() for name in names for s in (0, args.stallers)}
        for name in names:  # one small warm-up burst each, not counted
            burst(ports[name], 10, Tally())
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else reversed(names):
                for stallers in (0, args.stallers):
                    tally = tallies[name, stallers]
                    before_cpu = cpu_seconds(processes[name].pid)
                    client_cpu = time.process_time()
                    answered, resets = len(tally.latencies), tally.resets
                    burst(ports[name], args.clients, tally, stallers)
                    tally.client_cpu += time.process_time() - client_cpu
                    tally.cpu += cpu_seconds(processes[name].pid) - before_cpu
                    figures = round_figures(tally.latencies[answered:], tally, resets)
                    tally.rounds.append(figures)
                    if figures["answered"]:
                        tally.round_p99.append(figures["p99"])
                    time.sleep(1.0)  # let the kernel's queues empty between bursts
        uptime_after = uptime()
    finally:
        for process in processes.values():
            process.stdin.close()  # type: ignore[union-attr]
            process.wait(10)
        redis_server.stop()
    sent = args.clients * args.rounds
    headers = [
        "server",
        "requests",
        "answered",
        "resets",
        "other failures",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99 ms, median round",
        "max ms",
        "server CPU ms / request",
        "client CPU ms / request",
    ]
    tables = [
        markdown_table(headers, [summary_row(n, tallies[n, s], sent) for n in names])
        for s in (0, args.stallers)
    ]
    round_rows = [
        [i + 1, name, stallers]
        + [tally.rounds[i][k] for k in ("answered", "resets", "p50", "p90", "p99", "max", "load")]
        for i in range(args.rounds)
        for stallers in (0, args.stallers)
        for name in names
        for tally in [tallies[name, stallers]]
    ]
    round_table = markdown_table(
        [
            "round",
            "server",
            "slow senders",
            "answered",
            "resets",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "load average",
        ],
        round_rows,
    )
    loads = [figures["load"] for tally in tallies.values() for figures in tally.rounds]
    text = (
        f"{args.clients} parallel clients on {HOST}, {args.rounds} rounds each, alternating; "
        f"half `POST /v1/flagger/rollout` (headers and body in two writes), half "
        f"`GET /v1/agents/{{agent}}`; timeout {TIMEOUT:.0f} s. {machine_summary()}. Load "
        f"average (1 min) over the rounds {min(loads):.2f}-{max(loads):.2f}; `uptime` before: "
        f"`{uptime_before}`, after: `{uptime_after}`.\n\n"
        f"{tables[0]}\n\nThe same while {args.stallers} slow senders hold connections open "
        f"(a hook's headers sent, its body not, until the burst is over):\n\n{tables[1]}\n\n"
        f"Each round:\n\n{round_table}\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "http_api.md").write_text(text)
    (args.out / "http_api.json").write_text(
        json.dumps(
            {
                f"{name}, {stallers} slow senders": {
                    "server": SERVERS[name],
                    "latencies_ms": [1000 * v for v in tally.latencies],
                    "resets": tally.resets,
                    "failures": tally.failures,
                    "statuses": tally.statuses,
                    "server_cpu_seconds": tally.cpu,
                    "client_cpu_seconds": tally.client_cpu,
                    "round_p99_ms": tally.round_p99,
                    "rounds": tally.rounds,
                }
                for (name, stallers), tally in tallies.items()
            }
        )
    )
    print(text)


if __name__ == "__main__":
    main()

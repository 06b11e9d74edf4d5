"""The HTTP gate API under a burst of parallel controllers: the servers side by side.

    python bench/http_api.py [--clients 200] [--rounds 5] [--out DIR]

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

Writes bench/results/http_api.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
from monitor.serve._server import BACKLOG, CONNECTION_LIMIT, REQUEST_TIMEOUT, THREADS  # noqa: E402
from monitor.store import KeyLayout, ReadModel, connect  # noqa: E402
from monitor.store._keys import GATES, VIEW  # noqa: E402

HOST = "127.0.0.1"
AGENT = "inbox_triage"
PREFIX = "driftgate:"
TIMEOUT = 5.0  # Flagger's webhook timeout; it does not retry
SERVERS = {
    "old": "wsgiref, backlog 5, a thread per connection (before issue 21)",
    "stdlib": "wsgiref, backlog 1,024, a pool of 8 threads",
    "waitress": "waitress, 4 threads, connection limit 512 (driftgate's serve before)",
    "waitress-tuned": "waitress tuned: 2 threads, connection limit 100, channel timeout 15 s",
    "aiohttp": f"aiohttp, {THREADS} threads answer, connection limit {CONNECTION_LIMIT} "
    "(driftgate's serve)",
}
DEFAULT_SERVERS = ("waitress", "waitress-tuned", "aiohttp")
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
    latencies: list[float] = field(default_factory=list)
    resets: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    round_p99: list[float] = field(default_factory=list)
    """Each burst's own p99 (ms): the machine is shared, and a busy neighbour during one
    round moves the pooled tail of every round."""

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


async def one_request(port: int, kind: str, start: asyncio.Event, tally: Tally) -> None:
    head, body = request_bytes(kind)
    await start.wait()
    started = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            writer.write(head)
            await writer.drain()
            if body:
                await asyncio.sleep(0.001)  # the body as a segment of its own
                writer.write(body)
                await writer.drain()
            answer = await reader.readuntil(b"\r\n\r\n")
            lines = answer.decode("latin-1").split("\r\n")
            length = next(
                int(line.split(":", 1)[1])
                for line in lines
                if line.lower().startswith("content-length:")
            )
            await reader.readexactly(length)
        tally.latencies.append(time.perf_counter() - started)
        status = int(lines[0].split()[1])
        tally.statuses[status] = tally.statuses.get(status, 0) + 1
    except ConnectionResetError:
        tally.resets += 1
    except TimeoutError:
        tally.fail("timeout")
    except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration) as exc:
        tally.fail(type(exc).__name__)
    finally:
        if writer is not None:
            writer.close()


async def stall(port: int, done: asyncio.Event) -> None:
    """A slow sender: the head of a hook, then nothing until the burst is over."""
    head, _ = request_bytes("post")
    _, writer = await asyncio.open_connection(HOST, port)
    writer.write(head)
    await writer.drain()
    await done.wait()
    writer.close()


async def burst(port: int, clients: int, tally: Tally, stallers: int = 0) -> None:
    """``clients`` connections at once, half Flagger hooks, half Argo's GET, while
    ``stallers`` slow senders hold connections open."""
    start, done = asyncio.Event(), asyncio.Event()
    slow = [asyncio.create_task(stall(port, done)) for _ in range(stallers)]
    tasks = [
        asyncio.create_task(one_request(port, "post" if i % 2 == 0 else "get", start, tally))
        for i in range(clients)
    ]
    await asyncio.sleep(0.2)  # every task waits on the event; the slow senders are in
    start.set()
    await asyncio.gather(*tasks)
    done.set()
    await asyncio.gather(*slow)


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
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stallers", type=int, default=2 * POOL_THREADS)
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--serve", choices=list(SERVERS), help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_server(args.serve, args.redis_url)
        return
    names = args.servers.split(",")
    redis_server = start_redis(
        free_port(), Path(tempfile.mkdtemp(prefix="driftgate-bench-")), appendonly=False
    )
    with redis.Redis.from_url(redis_server.address) as client:
        write_agent(client, KeyLayout(PREFIX))
    processes = {
        name: subprocess.Popen(
            [sys.executable, __file__, "--serve", name, "--redis-url", redis_server.address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for name in names
    }
    try:
        ports = {name: int(p.stdout.readline()) for name, p in processes.items()}  # type: ignore[union-attr]
        load_before = os.getloadavg()[0]  # the machine is shared: say how busy it was
        tallies = {(name, s): Tally() for name in names for s in (0, args.stallers)}
        for name in names:  # one small warm-up burst each, not counted
            asyncio.run(burst(ports[name], 10, Tally()))
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else reversed(names):
                for stallers in (0, args.stallers):
                    tally = tallies[name, stallers]
                    before = cpu_seconds(processes[name].pid)
                    answered = len(tally.latencies)
                    asyncio.run(burst(ports[name], args.clients, tally, stallers))
                    this_round = [1000 * value for value in tally.latencies[answered:]]
                    if this_round:
                        tally.round_p99.append(percentile(this_round, 0.99))
                    tally.cpu += cpu_seconds(processes[name].pid) - before
                    time.sleep(1.0)  # let the kernel's queues empty between bursts
    finally:
        for process in processes.values():
            process.stdin.close()  # type: ignore[union-attr]
            process.wait(10)
        redis_server.stop()
    load_after = os.getloadavg()[0]
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
    ]
    tables = [
        markdown_table(headers, [summary_row(n, tallies[n, s], sent) for n in names])
        for s in (0, args.stallers)
    ]
    text = (
        f"{args.clients} parallel clients on {HOST}, {args.rounds} rounds each, alternating; "
        f"half `POST /v1/flagger/rollout` (headers and body in two writes), half "
        f"`GET /v1/agents/{{agent}}`; timeout {TIMEOUT:.0f} s. {machine_summary()}; load "
        f"average {load_before:.1f} before, {load_after:.1f} after.\n\n"
        f"{tables[0]}\n\nThe same while {args.stallers} slow senders hold connections open "
        f"(a hook's headers sent, its body not, until the burst is over):\n\n{tables[1]}\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "http_api.md").write_text(text)
    (args.out / "http_api.json").write_text(
        json.dumps(
            {
                f"{name}, {stallers} slow senders": {
                    "latencies_ms": [1000 * v for v in tally.latencies],
                    "resets": tally.resets,
                    "failures": tally.failures,
                    "statuses": tally.statuses,
                    "server_cpu_seconds": tally.cpu,
                    "round_p99_ms": tally.round_p99,
                }
                for (name, stallers), tally in tallies.items()
            }
        )
    )
    print(text)


if __name__ == "__main__":
    main()

"""``driftgate up``: the embedded broker, Redis, a worker and the demo, supervised until a
signal or until one of them exits."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TextIO
from urllib.parse import unquote, urlsplit

from ..config import Settings
from ..events._decisions import GateDocument
from ..presentation._format import number
from ..runtime._demo import reset_demo
from ..runtime._preflight import ServiceUnavailable, check_redis, ensure_topics, topic_names
from ..runtime._services import (
    ServiceProcess,
    die_with_parent,
    log_size,
    start_broker,
    start_redis,
)
from ..runtime._up_services import ServiceChoice, UpServices, choose_services, lock_state_directory
from ..store import STORE_ERRORS, KeyLayout, ReadModel, redact
from ..store._admin import start_new_log_epochs
from ._common import UsageError, load_settings, metrics_url, redis_client, with_kafka

__all__ = ["ChildExited", "StopRequested", "cmd_up"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP reached ``driftgate up``: stop everything it started."""


class ChildExited(RuntimeError):
    """A process that ``driftgate up`` started exited on its own: exit status 1."""

    def __init__(self, child: ServiceProcess) -> None:
        code = child.process.returncode
        how = (
            f"was killed by {signal.Signals(-code).name}"
            if code < 0
            else f"exited with status {code}"
        )
        super().__init__(f"the {child.name} (pid {child.process.pid}) {how}")
        self.child = child


class _StopSignals:
    """Turns SIGINT, SIGTERM and SIGHUP alike into :class:`StopRequested`; inside
    :meth:`deferred`, only once a child just started is on the list to stop."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._deferring = 0

    def __call__(self, signum: int, frame: Any) -> None:
        self.received = signum
        if not self._deferring:
            raise StopRequested(signal.Signals(signum).name)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = {signum: signal.signal(signum, self) for signum in STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
            if self.received is not None and not self._deferring:
                raise StopRequested(signal.Signals(self.received).name)

    @staticmethod
    def ignore() -> None:
        """While everything stops: a second Ctrl-C must not leave a child behind."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


class _Console:
    """What ``driftgate up`` prints: colored verdicts on a terminal only, plain text to a
    file or a pipe; and nothing raised once the terminal is gone (after a SIGHUP)."""

    COLORS: ClassVar[dict[str, str]] = {"FAIL": "31", "WARN": "33", "PASS": "32", "HOLD": "35"}

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.color = (
            stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        )

    def say(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            print(text, file=self.stream, flush=True)

    def verdict(self, verdict: str) -> str:
        code = self.COLORS.get(verdict)
        return f"\x1b[{code}m{verdict}\x1b[0m" if self.color and code else verdict


def _redis_starter(settings: Settings, state_dir: Path, port: int) -> Callable[[], Any]:
    """How to start the Redis ``up`` chose, with the URL's password when it has one."""
    parts = urlsplit(settings.redis_url)
    password = None if parts.password is None else unquote(parts.password)
    return lambda: start_redis(port, state_dir / "redis", password=password, tied=True)


def _start(
    choice: ServiceChoice,
    start: Callable[[], ServiceProcess],
    started: list[ServiceProcess],
    stops: _StopSignals,
) -> str:
    if choice.start:
        with stops.deferred():  # a signal now stops it too: it is on the list first
            started.append(start())
    return choice.how


def _start_worker(env: dict[str, str], log_path: Path) -> ServiceProcess:
    start = log_size(log_path)
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "monitor", "worker", "--loglevel", "warn", "--quiet"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    return ServiceProcess(
        "worker", f"pid {process.pid}", process, log_path, start, stop_signal=signal.SIGINT
    )


_DEMO_TEXT = (
    "on: stream demo:judge drifts after 10 s; agent demo-agent's canary (10%) turns toxic "
    "after 15 s; A/B experiment demo-ab (pre-registered) reaches its decision in about a "
    "minute: driftgate report demo-ab"
)


def _write_demo_policy(state_dir: Path) -> Path:
    import yaml

    from ..runtime._demo import demo_policy

    path = state_dir / "demo-policy.yaml"
    path.write_text(yaml.safe_dump(demo_policy(), sort_keys=False))
    return path


def cmd_up(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if not args.no_worker:
        settings.check_api_token()  # before any service starts: its worker would refuse
    state_dir = Path(args.state_dir or Path.home() / ".driftgate")
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the state directory {state_dir}: {exc}") from exc
    with lock_state_directory(state_dir):
        # Every port is checked before anything is started or written.
        services = choose_services(settings, with_worker=not args.no_worker)
        return _up_with(args, services, state_dir)


def _up_with(args: argparse.Namespace, services: UpServices, state_dir: Path) -> int:
    console = _Console(sys.stdout)
    stops = _StopSignals()
    children: list[ServiceProcess] = []  # in the order started; stopped in reverse
    with stops.installed():
        try:
            return _run_up(args, services, state_dir, console, stops, children)
        except StopRequested as stop:
            console.say(f"\ndriftgate up: {stop}: stopping everything it started")
            return 0
        except ChildExited as exited:
            lines = exited.child.log_tail()
            where = f"; the last lines of {exited.child.log_path}:" if lines else ""
            errors = _Console(sys.stderr)
            errors.say(f"driftgate up: {exited}{where}")
            for line in lines:
                errors.say(f"    {line}")
            errors.say("driftgate up: stopping everything it started")
            return 1
        finally:
            stops.ignore()
            for child in reversed(children):
                child.stop(15.0 if child.name == "worker" else 5.0)


def _run_up(
    args: argparse.Namespace,
    services: UpServices,
    state_dir: Path,
    console: _Console,
    stops: _StopSignals,
    children: list[ServiceProcess],
) -> int:
    settings = services.settings
    kafka_how = _start(
        services.kafka,
        lambda: start_broker(services.kafka.port, state_dir / "broker.log", tied=True),
        children,
        stops,
    )
    redis_how = _start(
        services.redis,
        _redis_starter(settings, state_dir, services.redis.port),
        children,
        stops,
    )
    env = dict(os.environ)
    env.update(
        DRIFTGATE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        DRIFTGATE_REDIS_URL=settings.redis_url,
        DRIFTGATE_METRICS_PORT=str(settings.metrics_port),
        # What is printed below is what the worker binds: nothing else from the shell.
        DRIFTGATE_METRICS_HOST=settings.metrics_host,
        DRIFTGATE_TOPIC_PREFIX=settings.topic_prefix,
    )
    if settings.config_path:
        env["DRIFTGATE_CONFIG"] = settings.config_path
    elif not args.no_demo:  # the demo's A/B experiment is pre-registered in a policy of its own
        env["DRIFTGATE_CONFIG"] = str(_write_demo_policy(state_dir))
    check_redis(settings.redis_url)
    with_kafka(settings, ensure_topics(settings), "creating the topics")
    client = redis_client(settings)
    layout = KeyLayout(settings.redis_prefix)
    if services.kafka.start:
        # A broker started here keeps nothing: its logs begin a new epoch of offsets.
        topics = [settings.topic(name) for name in topic_names()]
        start_new_log_epochs(client, layout, topics, settings.partitions)
    # The demo's subjects are reset in a Redis this `up` started (its own, from its last
    # run) only: in a named one they may be another `up`'s, or anybody's.
    if not args.no_demo and services.redis.start:
        reset_demo(client, layout)
    client.close()
    if args.no_worker:
        worker_line = (
            "none (--no-worker; the broker was started here, so no worker reads it: its "
            "events wait until `driftgate worker` runs)"
            if services.kafka.start
            else "none (--no-worker: the workers already in the group consume)"
        )
        metrics_line = "served by the workers, not here"
    else:
        with stops.deferred():
            children.append(_start_worker(env, state_dir / "worker.log"))
        worker_line, metrics_line = children[-1].address, metrics_url(settings)
    logs = ", ".join(str(child.log_path) for child in children if child.log_path) or "-"
    console.say(
        "driftgate up\n"
        f"  kafka    {settings.kafka_bootstrap} ({kafka_how})\n"
        f"  redis    {redact(settings.redis_url)} ({redis_how})\n"
        f"  worker   {worker_line}\n"
        f"  metrics  {metrics_line}\n"
        f"  topics   {', '.join(settings.topic(t) for t in topic_names())}\n"
        f"  demo     {_DEMO_TEXT if not args.no_demo else 'off'}\n"
        f"  logs     {logs}\n"
        "Ctrl-C stops everything started here."
    )
    asyncio.run(_supervise(settings, children, console, demo=not args.no_demo))
    return 0


async def _supervise(
    settings: Settings, children: list[ServiceProcess], console: _Console, demo: bool
) -> None:
    """Run the demo producer and print verdict changes, until a signal or until a child
    exits (:class:`ChildExited`). The demo stream drifts 10 s after the worker first judged
    it: a worker slow to start (a loaded machine) would otherwise read the calibrated
    phase together with the drift, and never show the calibrated verdict."""
    from aiokafka.errors import KafkaError

    from ..runtime._demo import DEMO_STREAM, run_demo_producer

    stop, watched = asyncio.Event(), asyncio.Event()
    producer = (
        asyncio.create_task(run_demo_producer(settings, stop, watched=watched)) if demo else None
    )
    read_model = ReadModel(redis_client(settings), KeyLayout(settings.redis_prefix))
    shown: dict[str, tuple[str, str]] = {}
    try:
        while True:
            await asyncio.sleep(1.0)
            for child in children:
                if child.process.poll() is not None:
                    raise ChildExited(child)
            with contextlib.suppress(*STORE_ERRORS):
                for record in read_model.snapshot().gates:
                    name = f"{record.gate}|{record.subject}"
                    if _news(shown.get(name), record):
                        console.say(_verdict_line(console, name, record))
                    shown[name] = (record.verdict, str(record.action))
                    if record.subject == DEMO_STREAM:
                        watched.set()  # the worker judges the demo stream
            if producer is not None and producer.done():
                try:
                    producer.result()
                except KafkaError as exc:
                    raise ServiceUnavailable(
                        f"the demo producer lost Kafka at {settings.kafka_bootstrap}: {exc}"
                    ) from exc
    finally:
        stop.set()
        if producer is not None and not producer.done():
            with contextlib.suppress(KafkaError):
                await producer
        read_model.client.close()


def _news(last: tuple[str, str] | None, record: GateDocument) -> bool:
    """Whether ``up`` prints a gate's record: its first, a new verdict, or the same verdict
    asking for more (a decision's rule): a guardrail breach judged before the canary's
    deploy was applied only alerts, and its rollback once the deploy is applied is news."""
    from ..gates import should_publish  # here: the gates' estimators import scipy

    if last is None:
        return True
    verdict, action = last
    return should_publish(verdict, record.verdict, last_action=action, action=str(record.action))


def _verdict_line(console: _Console, name: str, record: GateDocument) -> str:
    evidence = record.evidence
    return (
        f"[{time.strftime('%H:%M:%S')}] {name}: {console.verdict(record.verdict)} "
        f"{record.action} ({record.reason}) "
        f"n={evidence.get('n')} "
        f"estimate={number(evidence.get('estimate'), '.4g')} "
        f"ci=[{number(evidence.get('ci_low'), '.4g')}, "
        f"{number(evidence.get('ci_high'), '.4g')}]"
    )

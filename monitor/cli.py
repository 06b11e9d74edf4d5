"""The ``driftgate`` command line.

Exit status: 0 done; 2 bad usage or bad input; 1 a runtime failure (a service
unreachable and so on). Each message is one line that names the problem, or the service
and where it was looked for; secrets never appear in one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TextIO, TypeVar
from urllib.parse import unquote, urlsplit

import orjson
import redis
from redis.exceptions import RedisClusterException

from . import _args as types
from ._config import ConfigError, Settings, scrub, secrets_of
from ._demo import reset_demo
from ._kafka import MAX_MESSAGE_BYTES, client_options
from ._preflight import TOPIC_NAMES, ServiceUnavailable, check_redis, ensure_topics
from ._replay_command import EXAMPLES as REPLAY_EXAMPLES
from ._replay_command import add_replay
from ._services import (
    ServiceError,
    ServiceProcess,
    die_with_parent,
    log_size,
    start_broker,
    start_redis,
)
from ._status import plural
from ._up_services import ServiceChoice, UpServices, choose_services, lock_state_directory
from .gates import should_publish
from .pipeline import PermanentError
from .store import KeyLayout, ReadModel, SyncClient, connect, redact
from .store._admin import start_new_log_epochs
from .store._calibrators import StateConflictError, read_calibrator

if TYPE_CHECKING:
    from estimators import BudgetPlan, VarianceModel

__all__ = ["main"]

T = TypeVar("T")

# How long a command waits for Kafka to answer before it gives up, naming it.
KAFKA_WAIT_SECONDS = 12.0
# `driftgate produce` holds the whole file (it sends nothing unless every line is good).
MAX_PRODUCE_FILE_BYTES = 256 * 1024 * 1024
# A message's key is its subject's name, cut to this.
MAX_KEY_BYTES = 1024


class UsageError(ValueError):
    """Bad usage: exit status 2."""


def _settings(args: argparse.Namespace) -> Settings:
    """The settings of the variables and the flags, the policy file among them read and
    checked for every command (a missing ``DRIFTGATE_CONFIG`` is exit 2 for ``status`` as
    for the worker, not a setting silently ignored)."""
    settings = Settings.from_env(
        kafka_bootstrap=getattr(args, "kafka_bootstrap", None),
        redis_url=getattr(args, "redis_url", None),
        metrics_port=getattr(args, "metrics_port", None),
        metrics_host=getattr(args, "metrics_host", None),
        config_path=getattr(args, "config", None),
        topic_prefix=getattr(args, "topic_prefix", None),
    )
    settings.policy  # noqa: B018 - reads and checks DRIFTGATE_CONFIG
    return settings


def _redis(settings: Settings) -> SyncClient:
    """A client for the configured Redis (a cluster client for a cluster), checked."""
    return connect(settings.redis_url, check_redis(settings.redis_url))


def _read_model(settings: Settings) -> ReadModel:
    return ReadModel(_redis(settings), KeyLayout(settings.redis_prefix))


def _print_json(document: Any) -> None:
    sys.stdout.write(
        orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode()
        + "\n"
    )


@contextlib.contextmanager
def _quiet_kafka_client() -> Iterator[None]:
    """The Kafka client's log lines off for a while (a command says what failed in one
    line of its own; the worker's log has them back once Faust runs)."""
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        client_log.setLevel(level)


def _kafka_reason(exc: BaseException) -> str:
    """An error named once: aiokafka's messages begin with their class's name
    (``KafkaConnectionError: KafkaConnectionError: ...``)."""
    name = type(exc).__name__
    text = str(exc).removeprefix(f"{name}: ")  # aiokafka's errors start with their name
    if text in ("", name):
        return f"{name} (no broker answered there)"
    return f"{name}: {text}"


def _with_kafka(settings: Settings, work: Awaitable[T], what: str) -> T:
    """Run ``work`` (which talks to Kafka); an answer that does not come within
    :data:`KAFKA_WAIT_SECONDS`, or a refusal, is a failure that names Kafka."""
    from aiokafka.errors import KafkaError

    async def bounded() -> T:
        return await asyncio.wait_for(work, KAFKA_WAIT_SECONDS)

    try:
        return asyncio.run(bounded())
    except TimeoutError:
        raise ServiceUnavailable(
            f"Kafka at {settings.kafka_bootstrap} did not answer within "
            f"{KAFKA_WAIT_SECONDS:.0f} s ({what}; check DRIFTGATE_KAFKA_BOOTSTRAP)"
        ) from None
    except KeyError as exc:  # how aiokafka ends a SCRAM exchange the broker refused
        raise ServiceUnavailable(
            f"Kafka at {settings.kafka_bootstrap} refused the SASL "
            f"{settings.kafka_sasl_mechanism or 'PLAIN'} credentials of user "
            f"{settings.kafka_sasl_username!r} ({what}; check DRIFTGATE_KAFKA_SASL_USERNAME "
            "and DRIFTGATE_KAFKA_SASL_PASSWORD)"
        ) from exc
    except (KafkaError, OSError, ValueError) as exc:
        raise ServiceUnavailable(
            f"Kafka at {settings.kafka_bootstrap} failed ({what}): {_kafka_reason(exc)} "
            "(check DRIFTGATE_KAFKA_BOOTSTRAP and the DRIFTGATE_KAFKA_* security settings)"
        ) from exc


# --- worker -------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    import faust
    from prometheus_client import CollectorRegistry

    from ._app import MonitorApp
    from .serve import GateAPI, StateCollector, serve

    settings = _settings(args)
    settings.check_api_token()
    settings.policy  # noqa: B018 - validates DRIFTGATE_CONFIG before anything starts
    cluster = check_redis(settings.redis_url)
    with _quiet_kafka_client():  # its own line would come before the one-line message
        created = _with_kafka(settings, ensure_topics(settings), "creating the topics")
    if created:
        print(f"driftgate: created topics {', '.join(created)}", file=sys.stderr)
    registry = CollectorRegistry()
    monitor = MonitorApp(settings, cluster, registry)
    read_model = ReadModel(connect(settings.redis_url, cluster), KeyLayout(settings.redis_prefix))
    registry.register(StateCollector(read_model))
    api = GateAPI(read_model, registry, monitor.health, settings.policy, settings.api_token)
    try:
        serve(api, settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        raise ServiceUnavailable(
            f"metrics port {settings.metrics_host}:{settings.metrics_port} unavailable: {exc}"
            " (check DRIFTGATE_METRICS_HOST and DRIFTGATE_METRICS_PORT)"
        ) from exc
    print(
        f"driftgate worker: kafka {settings.kafka_bootstrap}, redis {redact(settings.redis_url)}"
        f"{' (cluster)' if cluster else ''}, metrics {_metrics_url(settings)}",
        file=sys.stderr,
        flush=True,
    )
    worker = faust.Worker(
        monitor.app, loglevel=args.loglevel, redirect_stdouts=False, quiet=args.quiet
    )
    if not sys.stdout.isatty():
        # Faust's start-up spinner writes cursor escapes even to a file: a log stays text.
        worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        if monitor.fatal_error is not None:
            raise ServiceUnavailable(str(monitor.fatal_error)) from None
        return int(exit_.code or 0)
    return 0


def _metrics_url(settings: Settings) -> str:
    host = settings.metrics_host
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{settings.metrics_port}/metrics"


# --- up -----------------------------------------------------------------------------

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
    "after 15 s"
)


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings(args)
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
    check_redis(settings.redis_url)
    _with_kafka(settings, ensure_topics(settings), "creating the topics")
    client = _redis(settings)
    layout = KeyLayout(settings.redis_prefix)
    if services.kafka.start:
        # A broker started here keeps nothing: its logs begin a new epoch of offsets.
        topics = [settings.topic(name) for name in TOPIC_NAMES]
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
        worker_line, metrics_line = children[-1].address, _metrics_url(settings)
    logs = ", ".join(str(child.log_path) for child in children if child.log_path) or "-"
    console.say(
        "driftgate up\n"
        f"  kafka    {settings.kafka_bootstrap} ({kafka_how})\n"
        f"  redis    {redact(settings.redis_url)} ({redis_how})\n"
        f"  worker   {worker_line}\n"
        f"  metrics  {metrics_line}\n"
        f"  topics   {', '.join(settings.topic(t) for t in TOPIC_NAMES)}\n"
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

    from ._demo import DEMO_STREAM, run_demo_producer

    stop, watched = asyncio.Event(), asyncio.Event()
    producer = (
        asyncio.create_task(run_demo_producer(settings, stop, watched=watched)) if demo else None
    )
    read_model = ReadModel(_redis(settings), KeyLayout(settings.redis_prefix))
    shown: dict[str, tuple[str, str]] = {}
    try:
        while True:
            await asyncio.sleep(1.0)
            for child in children:
                if child.process.poll() is not None:
                    raise ChildExited(child)
            with contextlib.suppress(redis.RedisError):
                for record in read_model.snapshot().gates:
                    name = f"{record['gate']}|{record['subject']}"
                    if _news(shown.get(name), record):
                        console.say(_verdict_line(console, name, record))
                    shown[name] = (record["verdict"], record["action"])
                    if record["subject"] == DEMO_STREAM:
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


def _news(last: tuple[str, str] | None, record: dict[str, Any]) -> bool:
    """Whether ``up`` prints a gate's record: its first, a new verdict, or the same verdict
    asking for more (a decision's rule): a guardrail breach judged before the canary's
    deploy was applied only alerts, and its rollback once the deploy is applied is news."""
    if last is None:
        return True
    verdict, action = last
    return should_publish(verdict, record["verdict"], last_action=action, action=record["action"])


def _verdict_line(console: _Console, name: str, record: dict[str, Any]) -> str:
    evidence = record["evidence"]
    return (
        f"[{time.strftime('%H:%M:%S')}] {name}: {console.verdict(record['verdict'])} "
        f"{record['action']} ({record['reason']}) "
        f"n={evidence.get('n')} "
        f"estimate={_number(evidence.get('estimate'), '.4g')} "
        f"ci=[{_number(evidence.get('ci_low'), '.4g')}, "
        f"{_number(evidence.get('ci_high'), '.4g')}]"
    )


# --- status, log ----------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from ._status import print_streams

    settings = _settings(args)
    document = _read_model(settings).snapshot(with_history=True).status_document()
    if args.json:
        _print_json(document)
        return 0
    if not any(document.values()):
        print("nothing monitored yet")
    print_streams(document["streams"])
    _print_experiments(document["experiments"], document["agents"])
    return 0


def _number(value: float | None, form: str = "+.4f") -> str:
    return "-" if value is None else format(value, form)


def _print_experiments(experiments: dict[str, Any], agents: dict[str, Any]) -> None:
    for name, row in experiments.items():
        srm = row["srm_p_value"]
        print(
            f"experiment {name}: guardrails {row['verdict']}, split {row['srm_verdict']}"
            f"{'' if srm is None else f' (SRM p={srm:.3g})'}, control {row['control']}"
        )
        for variant, stats in row["variants"].items():
            guardrails = stats["guardrails"]
            primary = guardrails.get("primary_outcome_mean", {})
            shown = ", ".join(
                f"{g} {_number(r['value'], '.4g')} [{r['status']}]"
                for g, r in guardrails.items()
                if g != "primary_outcome_mean"
            )
            versus = stats.get("vs_control") or {}
            ratio = versus.get("ratio", 1.0)
            against = "control" if ratio == 1.0 else f"{ratio:g} x control"
            difference = (
                f"; vs {against} {_number(versus['estimate'])} "
                f"[{_number(versus['ci_low'])}, {_number(versus['ci_high'])}] ({versus['method']})"
                if versus.get("method")
                else ""
            )
            print(
                f"  {variant:<12} n={stats['n']} staging={stats['staging_n']} primary "
                f"{_number(primary.get('value'), '.4f')} [{_number(primary.get('ci_low'), '.4f')}, "
                f"{_number(primary.get('ci_high'), '.4f')}]{difference}"
                + (f"; {shown}" if shown else "")
            )
    for name, agent in agents.items():
        print(
            f"agent {name}: bundle {agent['bundle_id']} {agent['phase']} at "
            f"{agent['canary_percent']:g}% for {agent['hours_running']:.1f} h: {agent['verdict']} "
            f"({agent['reason']}), recommendation {agent['recommendation']}"
        )


def cmd_log(args: argparse.Namespace) -> int:
    settings = _settings(args)
    # (--hours is at most a century: further back than the epoch means everything.)
    since = None if args.hours is None else max(0, int((time.time() - args.hours * 3600) * 1000))
    entries = [
        record
        for record in _read_model(settings).audit(since)
        if not args.action or record.get("action") == args.action
    ]
    if args.json:
        _print_json(entries)
        return 0
    for record in entries:
        if record.get("kind") == "canary":  # a lifecycle step, from the canary topic
            percent = (
                "" if record["canary_percent"] is None else f" to {record['canary_percent']:g}%"
            )
            by = f" by {record['actor']}" if record.get("actor") else ""
            why = f": {record['rationale']}" if record.get("rationale") else ""
            note = f" ({record['note']})" if record.get("note") else ""
            print(
                f"{record['ts']} {'canary':<14} {record['subject']:<24} "
                f"{record['action']}{percent} bundle={record['bundle_id']}{by}{why}{note}"
            )
        elif record.get("kind") == "webhook":  # an attempt to deliver a decision
            print(
                f"{record['ts']} {'webhook':<14} {record['subject']:<24} "
                f"attempt {record['attempt']} {record['outcome']} to {record['url']} "
                f"action={record['action']} decision={record['decision_id']}"
            )
        else:
            print(
                f"{record['ts']} {record['gate']:<14} {record['subject']:<24} "
                f"{record['verdict']:<12} action={record['action']} reason={record['reason']}"
            )
    if not entries:
        print("no entries")
    return 0


# --- report ---------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    from ._report import ReportError, default_folder, write_report

    settings = _settings(args)
    read_model = _read_model(settings)
    snapshot = read_model.snapshot(with_history=True)
    folder = Path(args.out) if args.out is not None else default_folder(args.subject)
    try:
        written = write_report(snapshot, read_model.audit(), args.subject, folder)
    except ReportError as exc:
        raise UsageError(str(exc)) from exc
    except ImportError as exc:  # matplotlib, for the plots, is in the report extra
        raise UsageError(
            f"the report's plots need matplotlib ({exc}): pip install 'driftgate[report]'"
        ) from exc
    for path in written:
        print(path)
    return 0


# --- baseline -----------------------------------------------------------------------------


def cmd_baseline(args: argparse.Namespace) -> int:
    from ._baseline import read_scores, set_score_baseline
    from ._calibration import InputError

    settings = _settings(args)
    scores = None if args.from_file is None else read_scores(args.from_file)
    source = "recent scores" if args.from_file is None else args.from_file
    minimum = settings.policy.score_drift.min_n
    if scores is not None and scores.size < minimum:  # before any service is asked
        raise InputError(
            f"{args.from_file}: a baseline needs at least {minimum} scores "
            f"(score_drift.min_n), found {scores.size}"
        )
    done = set_score_baseline(
        _redis(settings),
        KeyLayout(settings.redis_prefix),
        settings.policy,
        args.stream,
        scores,
        source,
    )
    print(
        f"stream {done.stream}: score drift baseline set from {done.source} "
        f"({done.n:,} scores, median {done.median:.3g}); it applies from the next batch"
    )
    return 0


# --- rollback, promote, pause, resume ---------------------------------------------------------

# The phases of the agent's current bundle in which each manual action means something
# (the worker's lifecycle, `_step`): a rolled-back bundle is settled and never reopened.
ACTION_PHASES = {
    "promote": ("monitoring", "paused", "promoted"),
    "pause": ("monitoring",),
    "resume": ("paused",),
}


def _current_agent(settings: Settings, name: str) -> dict[str, Any]:
    """The agent's row of ``driftgate status``: its current bundle and phase."""
    agent = _read_model(settings).snapshot().status_document()["agents"].get(name)
    if agent is None:
        raise UsageError(f"unknown agent {name!r}: no canary of it was ever deployed")
    return agent  # type: ignore[no-any-return]


def _canary_action(
    args: argparse.Namespace, action: str, agent: dict[str, Any] | None = None, **fields: Any
) -> int:
    """Publish a canary event for the agent's current bundle: the same path (decision,
    audit log) as the events of any deployment controller. Read from Redis first: an
    action its phase refuses is not sent (exit 2), and a rollback of a rolled-back bundle
    is a no-op, said so."""
    import getpass
    import uuid

    from ._kafka import send_events

    settings = _settings(args)
    agent = agent or _current_agent(settings, args.agent)
    bundle, phase = agent["bundle_id"], agent["phase"]
    if action == "rollback" and phase == "rolled_back":
        print(f"bundle {bundle} of {args.agent} is already rolled back: nothing sent")
        return 0
    if action in ACTION_PHASES and phase not in ACTION_PHASES[action]:
        cure = "deploy a new bundle" if phase == "rolled_back" else "nothing to " + action
        raise UsageError(f"bundle {bundle} of {args.agent} is {phase}: cannot {action} it ({cure})")
    event = {
        "event_id": f"cli-{uuid.uuid4()}",
        "ts": time.time(),
        "agent": args.agent,
        "bundle_id": bundle,
        "action": action,
        "actor": args.actor or getpass.getuser(),
        **{name: value for name, value in fields.items() if value is not None},
    }
    topic = settings.topic("canary")
    _with_kafka(
        settings, send_events(settings, topic, [event], key=args.agent), f"sending to {topic}"
    )
    print(f"{action} of {args.agent} (bundle {bundle}) sent to {topic}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    return _canary_action(args, "rollback", rationale=args.reason)


def cmd_promote(args: argparse.Namespace) -> int:
    settings = _settings(args)
    agent = _current_agent(settings, args.agent)
    percent = args.percent
    if percent is None:
        ladder = settings.policy.for_agent(args.agent).canary.ladder
        percent = next((step for step in ladder if step > agent["canary_percent"]), 100)
    return _canary_action(args, "promote", agent, canary_percent=percent, rationale=args.reason)


def cmd_pause(args: argparse.Namespace) -> int:
    return _canary_action(args, "pause", rationale=args.reason)


def cmd_resume(args: argparse.Namespace) -> int:
    return _canary_action(args, "resume", rationale=args.reason)


# --- calibrate, audit, plan -------------------------------------------------------------


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ._calibration import Progress, RefitRefused, calibrate, read_fit_file

    if args.file is None and not args.pool:
        raise UsageError(
            "give FILE (JSONL with s and y), or --pool to refit on the stored pairs and the "
            "pooled probes"
        )
    settings = _settings(args)
    progress = Progress(sys.stderr)
    pairs = read_fit_file(args.file, args.pool, progress) if args.file else None
    client = _redis(settings)
    try:
        outcome = calibrate(
            client,
            KeyLayout(settings.redis_prefix),
            settings,
            args.stream,
            args.file,
            pool=args.pool,
            progress=progress,
            pairs=pairs,
        )
    except RefitRefused as exc:
        raise UsageError(str(exc)) from exc
    except StateConflictError as exc:
        raise ServiceUnavailable(str(exc)) from exc
    if args.save:
        from .replay import save_calibrator

        # What the stream's state now holds: the very calibrator the worker uses.
        record, version = read_calibrator(client, KeyLayout(settings.redis_prefix), args.stream)
        save_calibrator(args.save, args.stream, bytes(record or b"{}"), int(version or 0))
    if args.json:
        _print_json(outcome.to_dict())
    else:
        print("\n".join(outcome.lines()))
        if args.save:
            print(f"saved to {args.save} (driftgate replay --calibrator {args.save})")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from estimators import residuals_by_decile, transport_audit

    from ._calibration import InputError, Progress, next_step, pool_probe, read_pairs
    from .subjects._labels import ActiveCalibrator

    settings = _settings(args)
    pairs = read_pairs(args.file, Progress(sys.stderr))
    client = _redis(settings)
    layout = KeyLayout(settings.redis_prefix)
    calibrator = ActiveCalibrator.from_fields(*read_calibrator(client, layout, args.stream))
    if calibrator.version == 0:
        raise UsageError(
            f"stream {args.stream!r} has no calibrator to audit: fit one first "
            f"(driftgate calibrate FILE --stream {args.stream})"
        )
    residuals = calibrator.model.residuals(pairs.s, pairs.y)
    try:
        result = transport_audit(
            residuals,
            alpha=args.alpha,
            clusters=pairs.clusters,
            margin=args.margin,
            family_size=args.family_size,
        )
    except ValueError as exc:  # one cluster only
        raise InputError(f"{args.file}: {exc}") from exc
    deciles = residuals_by_decile(pairs.s, residuals)
    pooled = pool_probe(client, layout, args.stream, result, pairs) if args.pool else None
    step = next_step(
        result,
        deciles,
        args.stream,
        args.file,
        calibrator.version,
        pooled=pooled is not None and pooled.pooled,
    )
    document = {
        "stream": args.stream,
        "calibrator": {"kind": calibrator.kind, "version": calibrator.version},
        **result.to_dict(),
        "next_step": step.to_dict(),
        "pool": pooled.to_dict() if pooled else None,
        "deciles": [d.__dict__ for d in deciles],
    }
    if args.json:
        _print_json(document)
        return 0
    print(
        f"Transport: {result.status} | Group: {args.stream} | N={result.n} | "
        f"delta={result.delta:+.4f} [{result.interval.low:+.4f}, {result.interval.high:+.4f}] "
        f"({result.method}, calibrator {calibrator.kind} v{calibrator.version})"
    )
    print(f"Next step: {step.text}")
    if pooled is not None:
        print(pooled.reason[0].upper() + pooled.reason[1:])
    for row in deciles:
        print(
            f"  decile {row.decile:>2}  s in [{row.score_low:.3f}, {row.score_high:.3f}]  "
            f"n={row.n:<4} mean residual {row.mean_residual:+.4f}"
        )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from estimators import VarianceModel, plan_for_budget, plan_for_mde

    from ._calibration import MIN_CALIBRATION_PAIRS

    if (args.pilot is None) == (args.r2 is None):
        raise UsageError("give exactly one of --pilot FILE or --r2 R")
    smallest = args.surrogate_cost + args.oracle_cost
    if args.budget < smallest:
        raise UsageError(
            f"--budget {args.budget:g} does not buy one labeled item "
            f"(--surrogate-cost + --oracle-cost = {smallest:g})"
        )
    if args.pilot is not None:
        from ._calibration import Progress, check_pilot, read_pairs

        pairs = read_pairs(args.pilot, Progress(sys.stderr))
        check_pilot(args.pilot, pairs)
        model = VarianceModel.from_pilot(pairs.s, pairs.y)
    else:
        model = VarianceModel.from_r2(args.r2)
    plans = {"budget": plan_for_budget(args.budget, model, args.surrogate_cost, args.oracle_cost)}
    if plans["budget"].total_cost > args.budget:
        raise UsageError(
            f"no plan within --budget {args.budget:g}: rounded up to whole items it costs "
            f"{plans['budget'].total_cost:g}"
        )
    labels = plans["budget"].m_labeled
    if labels < MIN_CALIBRATION_PAIRS:
        raise UsageError(
            f"--budget {args.budget:g} buys {plural(labels, 'label')}: `driftgate calibrate` "
            f"needs at least {MIN_CALIBRATION_PAIRS} (each costs "
            f"{args.oracle_cost + args.surrogate_cost:g} with its score, so "
            f"{MIN_CALIBRATION_PAIRS * (args.oracle_cost + args.surrogate_cost):g} at least)"
        )
    if args.target_mde is not None:
        plans["target_mde"] = plan_for_mde(
            args.target_mde, model, args.surrogate_cost, args.oracle_cost
        )
    document = _plan_document(args, model, plans)
    if args.json:
        _print_json(document)
        return 0
    print(f"variance model ({model.source}): s2_eval={model.s2_eval:.5g} s2_cal={model.s2_cal:.5g}")
    for name, plan in plans.items():
        title = "for the budget" if name == "budget" else f"for MDE {args.target_mde}"
        print(
            f"plan {title}: score n={plan.n_scored}, label m={plan.m_labeled}, "
            f"cost {plan.total_cost:.2f}, SE {plan.standard_error:.5f}, MDE {plan.mde:.5f}"
        )
    return 0


def _plan_document(
    args: argparse.Namespace, model: VarianceModel, plans: dict[str, BudgetPlan]
) -> dict[str, Any]:
    """``plan --json``: the budget's plan at the top (``n_samples``, ``m_oracle``,
    ``total_cost``, ``mde``, ``sigma2_eval``, ``sigma2_cal``, ...), the target MDE's plan
    (what it would cost) under ``target_mde``."""

    def fields(plan: BudgetPlan) -> dict[str, Any]:
        return {
            "n_samples": plan.n_scored,
            "m_oracle": plan.m_labeled,
            "total_cost": plan.total_cost,
            "standard_error": plan.standard_error,
            "mde": plan.mde,
        }

    budget = plans["budget"]
    document: dict[str, Any] = {
        **fields(budget),
        "budget": args.budget,
        "surrogate_cost": args.surrogate_cost,
        "oracle_cost": args.oracle_cost,
        "alpha": budget.alpha,
        "power": budget.power,
        "sigma2_eval": model.s2_eval,
        "sigma2_cal": model.s2_cal,
        "variance_source": model.source,
    }
    if "target_mde" in plans:
        document["target_mde"] = {"mde_target": args.target_mde, **fields(plans["target_mde"])}
    return document


# --- produce ----------------------------------------------------------------------------


def _input_topic(settings: Settings, name: str) -> tuple[str, str]:
    """The input topic that ``--topic`` names, and its kind (whose events it holds): a
    short name (``labels``), a full one (``driftgate.labels``), or another deployment's
    (``staging.labels``)."""
    from ._schemas import topic_kind
    from .subjects import HANDLERS

    kind = topic_kind(name, settings.topic_prefix)
    if kind is None:
        raise UsageError(
            f"--topic {name!r} is not an input topic: give {', '.join(HANDLERS)}, or a full "
            f"name that ends in one (such as {settings.topic('labels')}); produce sends only "
            "events it can check"
        )
    return (settings.topic(kind) if name == kind else name), kind


def _checked_messages(path: str, topic: str, kind: str) -> list[tuple[bytes | None, bytes]]:
    """Every line of ``path`` as ``(key, value)``, checked as the worker will check it
    (its handler's decoder: the topic's event schema) and against the broker's message
    limit; one bad line raises :class:`InputError` naming it (and how many more there
    are). The key is the line's subject, so that one subject stays on one partition."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    from ._calibration import InputError
    from ._config import Policy
    from .pipeline import RawMessage
    from .subjects import HANDLERS

    try:
        size = Path(path).stat().st_size
        if size > MAX_PRODUCE_FILE_BYTES:
            raise InputError(
                f"{path}: {size} bytes, over produce's limit of {MAX_PRODUCE_FILE_BYTES} "
                "(send larger volumes with a Kafka producer of your own)"
            )
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    problems: dict[int, str] = {}
    candidates: list[RawMessage] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        # As the producer counts a record, with room for the key (a subject name).
        if DefaultRecordBatchBuilder.estimate_size_in_bytes(b"", line, []) + MAX_KEY_BYTES > (
            MAX_MESSAGE_BYTES
        ):
            problems[number] = (
                f"{len(line)} bytes, over the broker's message limit "
                f"({MAX_MESSAGE_BYTES} bytes with the record's overhead and key)"
            )
        else:
            candidates.append(RawMessage(topic, 0, number, line))
    decoded = HANDLERS[kind](Policy()).decode(candidates)
    for dead in decoded.dead_letters:
        problems.setdefault(dead.offset, dead.error)
    keys: dict[int, bytes] = {}
    for subject, events in decoded.subjects.items():
        for number in events.offsets.tolist():
            keys.setdefault(number, subject.encode()[:MAX_KEY_BYTES])
    for message in candidates:
        if message.offset not in keys and message.offset not in problems:
            problems[message.offset] = "no events (an empty array)"
    if problems:
        first = min(problems)
        more = f" (and {len(problems) - 1} more bad lines)" if len(problems) > 1 else ""
        raise InputError(f"{path}:{first}: {problems[first]}{more}; nothing was sent")
    if not candidates:
        raise InputError(f"{path}: no events (an empty file)")
    return [(keys[m.offset], m.value) for m in candidates if m.value is not None]


def cmd_produce(args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaProducer

    settings = _settings(args)
    topic, kind = _input_topic(settings, args.topic)
    messages = _checked_messages(args.file, topic, kind)

    async def connect() -> AIOKafkaProducer:
        await ensure_topics(settings, [topic])
        producer = AIOKafkaProducer(
            **client_options(settings),
            linger_ms=5,
            acks="all",
            request_timeout_ms=10_000,
            max_request_size=MAX_MESSAGE_BYTES,
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def send_all() -> None:
        producer = await asyncio.wait_for(connect(), KAFKA_WAIT_SECONDS)
        try:
            pending = [await producer.send(topic, value, key=key) for key, value in messages]
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    _with_kafka(settings, send_all(), f"producing to {topic}")
    print(f"produced {plural(len(messages), 'message')} to {topic}")
    return 0


# --- schema -------------------------------------------------------------------------------


def cmd_schema(args: argparse.Namespace) -> int:
    """The JSON Schema of an input topic's messages: no service, no settings needed."""
    from ._schemas import schema_text, topic_kind
    from .subjects import HANDLERS

    kind = topic_kind(args.topic)
    if kind is None:
        raise UsageError(
            f"unknown topic {args.topic!r}: the topics with a schema are "
            f"{', '.join(HANDLERS)} (or a full name that ends in one); the decision and "
            "dead-letter formats are in docs/events.md"
        )
    sys.stdout.write(schema_text(kind))
    return 0


# --- parser -------------------------------------------------------------------------------

EXAMPLES: dict[str, tuple[str, ...]] = {
    "up": (
        "driftgate up",
        "driftgate up --no-demo --metrics-port 9200",
        "driftgate up --no-worker",
    ),
    "worker": (
        "DRIFTGATE_KAFKA_BOOTSTRAP=kafka:9092 "
        "DRIFTGATE_REDIS_URL=redis://:PASSWORD@redis:6379/0 driftgate worker",
    ),
    "status": ("driftgate status", "driftgate status --json"),
    "baseline": (
        "driftgate baseline --stream policy:gpt-4-mini",
        "driftgate baseline --stream policy:gpt-4-mini --from-file scores.jsonl",
    ),
    "calibrate": (
        "driftgate calibrate oracle.jsonl --stream policy:gpt-4-mini",
        "driftgate calibrate --stream policy:gpt-4-mini --pool",
    ),
    "audit": (
        "driftgate audit probe.jsonl --stream policy:gpt-4-mini --margin 0.05 --json",
        "driftgate audit probe.jsonl --stream policy:gpt-4-mini --pool",
    ),
    "plan": (
        "driftgate plan --budget 5000 --surrogate-cost 0.01 --oracle-cost 0.16 --r2 0.7",
        "driftgate plan --budget 5000 --surrogate-cost 0.01 --oracle-cost 0.16 "
        "--pilot pilot.jsonl --target-mde 0.01",
    ),
    "log": ("driftgate log --action rollback --hours 24",),
    "report": (
        "driftgate report policy:gpt-4-mini",
        "driftgate report inbox_triage --out memos/inbox_triage",
    ),
    "rollback": ("driftgate rollback inbox_triage --reason 'toxicity above 0.5%'",),
    "promote": ("driftgate promote inbox_triage", "driftgate promote inbox_triage --percent 50"),
    "pause": ("driftgate pause inbox_triage --reason 'incident review'",),
    "resume": ("driftgate resume inbox_triage",),
    "produce": ("driftgate produce events.jsonl --topic labels",),
    "schema": ("driftgate schema canary", "driftgate schema driftgate.telemetry"),
    "replay": REPLAY_EXAMPLES,
}

EVENT_FORMATS = (
    "event formats: every topic's fields, envelopes and examples, the decision and\n"
    "dead-letter formats: docs/events.md in the driftgate repository; the JSON Schema\n"
    "of a topic's events: driftgate schema TOPIC (also docs/schemas/TOPIC.json)"
)

EXIT_STATUS = (
    "exit status: 0 done; 2 bad usage or bad input (the message names it); "
    "1 a runtime failure (the message names the service)"
)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line answer to bad usage (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _version() -> str:
    try:
        return metadata.version("driftgate")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def _command(
    commands: Any, name: str, help_text: str, handler: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    examples = "\n".join(f"  {line}" for line in EXAMPLES[name])
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=f"example{'s' if len(EXAMPLES[name]) > 1 else ''}:\n{examples}\n\n{EXIT_STATUS}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    return parser


def _connection_flags(parser: argparse.ArgumentParser, *, kafka: bool, redis_: bool) -> None:
    if kafka:
        parser.add_argument(
            "--kafka-bootstrap",
            type=types.kafka_bootstrap,
            metavar="HOST:PORT",
            help="overrides DRIFTGATE_KAFKA_BOOTSTRAP",
        )
        parser.add_argument(
            "--topic-prefix", type=types.topic_prefix, help="overrides DRIFTGATE_TOPIC_PREFIX"
        )
    if redis_:
        parser.add_argument(
            "--redis-url", type=types.redis_url, metavar="URL", help="overrides DRIFTGATE_REDIS_URL"
        )


def _metrics_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port", type=types.port, help="overrides DRIFTGATE_METRICS_PORT (9108)"
    )
    parser.add_argument(
        "--metrics-host",
        type=types.host,
        help="overrides DRIFTGATE_METRICS_HOST (127.0.0.1: this host only)",
    )
    parser.add_argument(
        "--config", type=types.readable_file, metavar="FILE", help="overrides DRIFTGATE_CONFIG"
    )


def build_parser() -> argparse.ArgumentParser:
    every_example = "\n".join(f"  {EXAMPLES[name][0]}" for name in EXAMPLES)
    parser = _Parser(
        prog="driftgate",
        description=__doc__.splitlines()[0],
        epilog=f"examples:\n{every_example}\n\n{EXIT_STATUS}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"driftgate {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = _command(commands, "up", "embedded broker, Redis, worker, metrics and demo", cmd_up)
    _connection_flags(up, kafka=True, redis_=True)
    _metrics_flags(up)
    up.add_argument("--no-demo", action="store_true", help="do not run the synthetic producer")
    up.add_argument(
        "--no-worker",
        action="store_true",
        help="start no worker: the demo's events go to the workers already in the group "
        "(docker compose's demo profile)",
    )
    up.add_argument(
        "--state-dir", metavar="DIR", help="where Redis, the broker and the worker keep files"
    )

    worker = _command(commands, "worker", "the Faust worker (production)", cmd_worker)
    _connection_flags(worker, kafka=True, redis_=True)
    _metrics_flags(worker)
    worker.add_argument(
        "--loglevel", default="info", choices=["crit", "error", "warn", "info", "debug"]
    )
    worker.add_argument("--quiet", action="store_true", help="no banner or start-up spinner")

    status = _command(commands, "status", "counts, estimates, intervals and verdicts", cmd_status)
    _connection_flags(status, kafka=False, redis_=True)
    status.add_argument("--json", action="store_true")

    calibrate = _command(
        commands,
        "calibrate",
        "fit f: S -> Y, report its out-of-fold quality, make it the stream's active calibrator",
        cmd_calibrate,
    )
    calibrate.add_argument(
        "file",
        type=types.readable_file,
        metavar="FILE",
        nargs="?",
        help="JSONL with s and y (optional with --pool)",
    )
    calibrate.add_argument("--stream", type=types.subject_name, required=True)
    calibrate.add_argument(
        "--pool",
        action="store_true",
        help="refit on the active version's pairs + the pooled probes (+ FILE); empties the pool",
    )
    calibrate.add_argument(
        "--save",
        type=types.writable_file,
        metavar="F",
        help="also write the calibrator to F (JSON), for driftgate replay --calibrator F",
    )
    calibrate.add_argument("--json", action="store_true")
    _connection_flags(calibrate, kafka=False, redis_=True)

    audit = _command(commands, "audit", "transport audit of a probe slice", cmd_audit)
    audit.add_argument(
        "file",
        type=types.readable_file,
        metavar="FILE",
        help="JSONL with s, y and optionally cluster",
    )
    audit.add_argument("--stream", type=types.subject_name, required=True)
    audit.add_argument("--alpha", type=types.probability, default=0.05, help="in (0, 1)")
    audit.add_argument(
        "--margin", type=types.positive_number, help="equivalence mode: PASS inside +-margin"
    )
    audit.add_argument(
        "--family-size", type=types.positive_integer, default=1, help="Bonferroni over N audits"
    )
    audit.add_argument(
        "--pool",
        action="store_true",
        help="on PASS, add the probe's pairs to the stream's pool (calibrate --pool refits)",
    )
    audit.add_argument("--json", action="store_true")
    _connection_flags(audit, kafka=False, redis_=True)

    plan = _command(commands, "plan", "label budget plan", cmd_plan)
    plan.add_argument("--budget", type=types.positive_number, required=True)
    plan.add_argument("--surrogate-cost", type=types.positive_number, required=True)
    plan.add_argument("--oracle-cost", type=types.positive_number, required=True)
    plan.add_argument("--pilot", type=types.readable_file, help="JSONL with s and y")
    plan.add_argument(
        "--r2",
        type=types.share_below_one,
        help="assumed share of Var(Y) the calibrator explains, in [0, 1)",
    )
    plan.add_argument("--target-mde", type=types.positive_number)
    plan.add_argument("--json", action="store_true")

    log = _command(commands, "log", "the audit log of decisions and canary actions", cmd_log)
    log.add_argument("--action", choices=["none", "alert", "hold", "promote", "rollback"])
    log.add_argument(
        "--hours", type=types.hours, help=f"only the last H hours (0..{types.MAX_HOURS})"
    )
    log.add_argument("--json", action="store_true")
    _connection_flags(log, kafka=False, redis_=True)

    report = _command(
        commands,
        "report",
        "a decision memo for a stream, experiment or agent: Markdown, HTML and PNG plots",
        cmd_report,
    )
    report.add_argument("subject", type=types.subject_name, metavar="SUBJECT")
    report.add_argument(
        "--out", metavar="DIR", help="the folder to write (default: ./driftgate-report-SUBJECT)"
    )
    _connection_flags(report, kafka=False, redis_=True)

    baseline = _command(
        commands,
        "baseline",
        "set a stream's score drift baseline from a file of scores or its recent scores",
        cmd_baseline,
    )
    baseline.add_argument("--stream", type=types.subject_name, required=True)
    baseline.add_argument(
        "--from-file", type=types.readable_file, metavar="FILE", help="JSONL with s"
    )
    _connection_flags(baseline, kafka=False, redis_=True)

    rollback = _command(
        commands, "rollback", "roll back an agent's canary by hand (a canary event)", cmd_rollback
    )
    rollback.add_argument("agent", type=types.subject_name, metavar="AGENT")
    rollback.add_argument("--reason", type=types.one_line, help="kept in the audit log")
    rollback.add_argument("--actor", type=types.one_line, help="who (default: the user name)")
    _connection_flags(rollback, kafka=True, redis_=True)

    promote = _command(
        commands, "promote", "promote an agent's canary by hand (a canary event)", cmd_promote
    )
    promote.add_argument("agent", type=types.subject_name, metavar="AGENT")
    promote.add_argument(
        "--percent", type=types.percent, help="in (0, 100]; default: the ladder's next step"
    )
    promote.add_argument("--reason", type=types.one_line, help="kept in the audit log")
    promote.add_argument("--actor", type=types.one_line, help="who (default: the user name)")
    _connection_flags(promote, kafka=True, redis_=True)

    for name, what, handler in (
        ("pause", "hold an agent's canary by hand (a canary event)", cmd_pause),
        ("resume", "resume an agent's paused canary (a canary event)", cmd_resume),
    ):
        manual = _command(commands, name, what, handler)
        manual.add_argument("agent", type=types.subject_name, metavar="AGENT")
        manual.add_argument("--reason", type=types.one_line, help="kept in the audit log")
        manual.add_argument("--actor", type=types.one_line, help="who (default: the user name)")
        _connection_flags(manual, kafka=True, redis_=True)

    produce = _command(
        commands,
        "produce",
        "check JSONL events against the topic's schema, then publish them, a message per line",
        cmd_produce,
    )
    produce.add_argument("file", type=types.readable_file, metavar="FILE", help="JSONL events")
    produce.add_argument(
        "--topic",
        type=types.topic_name,
        required=True,
        help="labels, telemetry, canary or a full name ending in one",
    )
    _connection_flags(produce, kafka=True, redis_=False)
    produce.epilog = f"{EVENT_FORMATS}\n\n{produce.epilog}"

    schema = _command(
        commands,
        "schema",
        "print the JSON Schema (draft 2020-12) of the topic's events",
        cmd_schema,
    )
    schema.add_argument(
        "topic", metavar="TOPIC", help="labels, telemetry, canary or a full name ending in one"
    )
    schema.epilog = f"{EVENT_FORMATS}\n\n{schema.epilog}"
    add_replay(commands, _command)
    return parser


def _service_failure(args: argparse.Namespace, exc: Exception) -> str:
    """A Redis or Kafka error that no command turned into a message: name the service."""
    try:
        settings = _settings(args)
    except ConfigError:
        settings = Settings()
    if isinstance(exc, redis.RedisError | RedisClusterException):
        return f"Redis at {redact(settings.redis_url)}: {type(exc).__name__}: {exc}"
    return f"Kafka at {settings.kafka_bootstrap}: {type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    from aiokafka.errors import KafkaError

    try:
        return _main(argv, KafkaError)
    except _ReaderGone:
        # `driftgate log | head`: the reader closed the pipe, it has what it wanted. Point
        # stdout at /dev/null so that the interpreter's last flush does not fail again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


class _ReaderGone(Exception):
    """Standard output is a pipe whose reader has closed it."""


def _stdout_closed() -> bool:
    """Whether standard output is a pipe nobody reads any more (a broken pipe elsewhere,
    a service's stdin say, is a failure like any other)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _main(argv: Sequence[str] | None, kafka_error: type[Exception]) -> int:
    args = build_parser().parse_args(argv)
    # Only now: it imports scipy (over a second), which --version and a usage error
    # (answered by the parser) do without.
    from ._calibration import InputError

    if args.command != "worker":
        # The Kafka client's own log lines would come before the one-line message.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    secrets = secrets_of(
        getattr(args, "redis_url", None),
        os.environ.get("DRIFTGATE_KAFKA_SASL_PASSWORD"),
        os.environ.get("DRIFTGATE_WEBHOOK_URL"),
        os.environ.get("DRIFTGATE_API_TOKEN"),
    ) + secrets_of(os.environ.get("DRIFTGATE_REDIS_URL"), None, None)

    def fail(status: int, message: str) -> int:
        with contextlib.suppress(OSError):
            print(f"driftgate {args.command}: {scrub(message, secrets)}", file=sys.stderr)
        return status

    try:
        return int(args.handler(args))
    except (UsageError, InputError, ConfigError) as exc:
        return fail(2, str(exc))
    except (ServiceUnavailable, ServiceError, PermanentError, StateConflictError) as exc:
        return fail(1, str(exc))
    except (redis.RedisError, RedisClusterException, kafka_error) as exc:
        return fail(1, _service_failure(args, exc))
    except KeyboardInterrupt:
        return fail(130, "interrupted")
    except BrokenPipeError as exc:
        if _stdout_closed():
            raise _ReaderGone from None
        return fail(1, _unexpected(exc))
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, not a traceback
        return fail(1, _unexpected(exc))


def _unexpected(exc: Exception) -> str:
    if os.environ.get("DRIFTGATE_DEBUG"):
        raise exc
    return (
        f"unexpected {type(exc).__name__}: {exc} (a bug in driftgate; "
        "DRIFTGATE_DEBUG=1 shows where)"
    )


if __name__ == "__main__":
    sys.exit(main())

"""The ``driftgate`` command line.

Exit status: 0 done; 2 bad usage or bad input; 1 a runtime failure (a service
unreachable and so on). Each message names the problem.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import redis

from ._calibration import InputError, activate_calibrator, read_pairs
from ._config import ConfigError, Settings
from ._demo import reset_demo
from ._kafka import client_options
from ._preflight import TOPIC_NAMES, ServiceUnavailable, check_redis, ensure_topics
from ._services import ServiceError, ServiceProcess, port_open, start_broker, start_redis
from .pipeline import PermanentError
from .store import KeyLayout, ReadModel, SyncClient, connect, redact
from .store._admin import start_new_log_epochs
from .store._calibrators import StateConflictError, read_calibrator
from .subjects._labels import ActiveCalibrator

__all__ = ["main"]


class UsageError(ValueError):
    """Bad usage: exit status 2."""


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        kafka_bootstrap=getattr(args, "kafka_bootstrap", None),
        redis_url=getattr(args, "redis_url", None),
        metrics_port=getattr(args, "metrics_port", None),
        metrics_host=getattr(args, "metrics_host", None),
        config_path=getattr(args, "config", None),
        topic_prefix=getattr(args, "topic_prefix", None),
    )


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


# --- worker -------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    import faust
    from prometheus_client import CollectorRegistry

    from ._app import MonitorApp
    from .serve import GateAPI, StateCollector, serve

    settings = _settings(args)
    settings.policy  # noqa: B018 - validates DRIFTGATE_CONFIG before anything starts
    cluster = check_redis(settings.redis_url)
    created = asyncio.run(ensure_topics(settings))
    if created:
        print(f"driftgate: created topics {', '.join(created)}", file=sys.stderr)
    registry = CollectorRegistry()
    monitor = MonitorApp(settings, cluster, registry)
    read_model = ReadModel(connect(settings.redis_url, cluster), KeyLayout(settings.redis_prefix))
    registry.register(StateCollector(read_model))
    api = GateAPI(read_model, registry, monitor.health, settings.policy)
    try:
        serve(api, settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        raise ServiceUnavailable(
            f"metrics port {settings.metrics_host}:{settings.metrics_port} unavailable: {exc}"
        ) from exc
    print(
        f"driftgate worker: kafka {settings.kafka_bootstrap}, redis {redact(settings.redis_url)}"
        f"{' (cluster)' if cluster else ''}, "
        f"metrics http://{settings.metrics_host}:{settings.metrics_port}/metrics",
        file=sys.stderr,
        flush=True,
    )
    worker = faust.Worker(
        monitor.app, loglevel=args.loglevel, redirect_stdouts=False, quiet=args.quiet
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        if monitor.fatal_error is not None:
            raise ServiceUnavailable(str(monitor.fatal_error)) from None
        return int(exit_.code or 0)
    return 0


# --- up -----------------------------------------------------------------------------


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host or "127.0.0.1"), int(port or default_port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ensure_service(
    name: str, host: str, port: int, start: Any, started: list[ServiceProcess]
) -> str:
    if port_open(host, port):
        return "found running"
    if not _is_loopback(host):
        raise ServiceUnavailable(f"{name} unreachable at {host}:{port} (not loopback: not started)")
    started.append(start(port))
    return "started"


_DEMO_TEXT = (
    "on: stream demo:judge drifts after 10 s; agent demo-agent's canary (10%) turns toxic "
    "after 15 s"
)


def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings(args)
    settings.policy  # noqa: B018 - validates DRIFTGATE_CONFIG first
    state_dir = Path(args.state_dir or Path.home() / ".driftgate")
    state_dir.mkdir(parents=True, exist_ok=True)
    started: list[ServiceProcess] = []
    worker: subprocess.Popen[bytes] | None = None

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        kafka_host, kafka_port = _host_port(settings.kafka_bootstrap, 9092)
        kafka_how = _ensure_service(
            "Kafka",
            kafka_host,
            kafka_port,
            lambda port: start_broker(port, state_dir / "broker.log"),
            started,
        )
        redis_host, redis_port = _host_port(
            settings.redis_url.split("://", 1)[-1].split("/", 1)[0], 6379
        )
        redis_how = _ensure_service(
            "Redis",
            redis_host,
            redis_port,
            lambda port: start_redis(port, state_dir / "redis"),
            started,
        )
        env = dict(os.environ)
        env.update(
            DRIFTGATE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
            DRIFTGATE_REDIS_URL=settings.redis_url,
            DRIFTGATE_METRICS_PORT=str(settings.metrics_port),
            DRIFTGATE_TOPIC_PREFIX=settings.topic_prefix,
        )
        if settings.config_path:
            env["DRIFTGATE_CONFIG"] = settings.config_path
        check_redis(settings.redis_url)
        asyncio.run(ensure_topics(settings))
        client = _redis(settings)
        layout = KeyLayout(settings.redis_prefix)
        if kafka_how == "started":
            # A broker started here keeps nothing: its logs begin a new epoch of offsets.
            topics = [settings.topic(name) for name in TOPIC_NAMES]
            start_new_log_epochs(client, layout, topics, settings.partitions)
        if not args.no_demo:
            reset_demo(client, layout)
        client.close()
        worker = subprocess.Popen(
            [sys.executable, "-m", "monitor", "worker", "--loglevel", "warn", "--quiet"],
            env=env,
            start_new_session=True,
        )
        print(
            "driftgate up\n"
            f"  kafka    {settings.kafka_bootstrap} ({kafka_how})\n"
            f"  redis    {redact(settings.redis_url)} ({redis_how})\n"
            f"  metrics  http://{settings.metrics_host}:{settings.metrics_port}/metrics\n"
            f"  topics   {', '.join(settings.topic(t) for t in TOPIC_NAMES)}\n"
            f"  demo     {_DEMO_TEXT if not args.no_demo else 'off'}\n"
            "Ctrl-C stops everything started here.",
            flush=True,
        )
        asyncio.run(_supervise(settings, worker, demo=not args.no_demo))
        return 1 if worker.poll() not in (None, 0) else 0
    except KeyboardInterrupt:
        print("\ndriftgate up: stopping", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGINT)
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        for service in reversed(started):
            service.stop()


async def _supervise(settings: Settings, worker: subprocess.Popen[bytes], demo: bool) -> None:
    """Run the demo producer and print verdict changes until the worker exits."""
    from ._demo import run_demo_producer

    stop = asyncio.Event()
    producer = asyncio.create_task(run_demo_producer(settings, stop)) if demo else None
    read_model = ReadModel(_redis(settings), KeyLayout(settings.redis_prefix))
    shown: dict[str, str] = {}
    try:
        while worker.poll() is None:
            await asyncio.sleep(1.0)
            with contextlib.suppress(redis.RedisError):
                for record in read_model.snapshot().gates:
                    name = f"{record['gate']}|{record['subject']}"
                    if shown.get(name) != record["verdict"]:
                        shown[name] = record["verdict"]
                        evidence = record["evidence"]
                        print(
                            f"[{time.strftime('%H:%M:%S')}] {name}: {record['verdict']} "
                            f"{record['action']} ({record['reason']}) "
                            f"n={evidence.get('n')} "
                            f"estimate={_number(evidence.get('estimate'), '.4g')} "
                            f"ci=[{_number(evidence.get('ci_low'), '.4g')}, "
                            f"{_number(evidence.get('ci_high'), '.4g')}]",
                            flush=True,
                        )
            if producer is not None and producer.done():
                producer.result()  # surfaces a producer failure
    finally:
        stop.set()
        if producer is not None and not producer.done():
            await producer
        read_model.client.close()


# --- status, log ----------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    document = _read_model(settings).snapshot(with_history=True).status_document()
    if args.json:
        _print_json(document)
        return 0
    if not any(document.values()):
        print("nothing monitored yet")
    _print_streams(document["streams"])
    _print_experiments(document["experiments"], document["agents"])
    return 0


def _number(value: float | None, form: str = "+.4f") -> str:
    return "-" if value is None else format(value, form)


def _print_streams(streams: dict[str, Any]) -> None:
    for name, row in streams.items():
        calibrator = row["calibrator"]
        mean = "-" if row["residual_mean"] is None else f"{row['residual_mean']:+.4f}"
        low = "-inf" if row["ci_low"] is None else f"{row['ci_low']:+.4f}"
        high = "+inf" if row["ci_high"] is None else f"{row['ci_high']:+.4f}"
        note = " (identity: no calibrator fitted)" if calibrator["kind"] == "identity" else ""
        since = " since the detected change" if row["interval"] == "since_change" else ""
        print(
            f"{name}: {row['verdict']:<12} n={row['n']} labeled={row['labeled_n']} "
            f"mean residual {mean} [{low}, {high}] over {row['residual_n']} labels{since}; "
            f"calibrator {calibrator['kind']} v{calibrator['version']}{note}"
        )


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
            difference = (
                f"; vs control {_number(versus['estimate'])} "
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
    since = None if args.hours is None else int((time.time() - args.hours * 3600) * 1000)
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
            print(
                f"{record['ts']} {'canary':<14} {record['subject']:<24} "
                f"{record['action']}{percent} bundle={record['bundle_id']}{by}{why}"
            )
        else:
            print(
                f"{record['ts']} {record['gate']:<14} {record['subject']:<24} "
                f"{record['verdict']:<12} action={record['action']} reason={record['reason']}"
            )
    if not entries:
        print("no entries")
    return 0


# --- rollback, promote ----------------------------------------------------------------------


def _canary_action(args: argparse.Namespace, action: str, **fields: Any) -> int:
    """Publish a canary event for the agent's current bundle: the same path (decision,
    audit log) as the events of any deployment controller."""
    import getpass
    import uuid

    from ._kafka import send_events

    settings = _settings(args)
    agent = _read_model(settings).snapshot().status_document()["agents"].get(args.agent)
    if agent is None:
        raise UsageError(f"unknown agent {args.agent!r}: no canary of it was ever deployed")
    event = {
        "event_id": f"cli-{uuid.uuid4()}",
        "ts": time.time(),
        "agent": args.agent,
        "bundle_id": agent["bundle_id"],
        "action": action,
        "actor": args.actor or getpass.getuser(),
        **{name: value for name, value in fields.items() if value is not None},
    }
    from aiokafka.errors import KafkaError

    topic = settings.topic("canary")
    try:
        asyncio.run(send_events(settings, topic, [event], key=args.agent))
    except KafkaError as exc:
        raise ServiceUnavailable(f"Kafka at {settings.kafka_bootstrap} refused: {exc}") from exc
    print(f"{action} of {args.agent} (bundle {agent['bundle_id']}) sent to {topic}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    return _canary_action(args, "rollback", rationale=args.reason)


def cmd_promote(args: argparse.Namespace) -> int:
    settings = _settings(args)
    percent = args.percent
    if percent is None:
        agent = _read_model(settings).snapshot().status_document()["agents"].get(args.agent)
        current = agent["canary_percent"] if agent else 0.0
        ladder = settings.policy.for_agent(args.agent).canary.ladder
        percent = next((step for step in ladder if step > current), 100)
    if not 0 < percent <= 100:
        raise UsageError(f"--percent must be in (0, 100], got {percent}")
    return _canary_action(args, "promote", canary_percent=percent, rationale=args.reason)


# --- calibrate --------------------------------------------------------------------------


def cmd_calibrate(args: argparse.Namespace) -> int:
    from estimators import IsotonicCalibrator, QuantileSketch

    settings = _settings(args)
    pairs = read_pairs(args.file)
    model = IsotonicCalibrator().fit(pairs.s, pairs.y)
    baseline = QuantileSketch(settings.policy.score_drift.relative_accuracy).update(pairs.s)
    try:
        version = activate_calibrator(
            _redis(settings),
            KeyLayout(settings.redis_prefix),
            settings.policy,
            args.stream,
            model,
            baseline,
        )
    except StateConflictError as exc:
        raise ServiceUnavailable(str(exc)) from exc
    print(
        f"stream {args.stream}: isotonic calibrator v{version} active "
        f"({model.n} pairs, {model.knots_s.size} knots); residual statistics start fresh"
    )
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from estimators import residuals_by_decile, transport_audit

    settings = _settings(args)
    pairs = read_pairs(args.file)
    calibrator = ActiveCalibrator.from_fields(
        *read_calibrator(_redis(settings), KeyLayout(settings.redis_prefix), args.stream)
    )
    residuals = calibrator.model.residuals(pairs.s, pairs.y)
    result = transport_audit(
        residuals,
        alpha=args.alpha,
        clusters=pairs.clusters,
        margin=args.margin,
        family_size=args.family_size,
    )
    deciles = residuals_by_decile(pairs.s, residuals)
    document = {
        "stream": args.stream,
        "calibrator": {"kind": calibrator.kind, "version": calibrator.version},
        **result.to_dict(),
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
    for row in deciles:
        print(
            f"  decile {row.decile:>2}  s in [{row.score_low:.3f}, {row.score_high:.3f}]  "
            f"n={row.n:<4} mean residual {row.mean_residual:+.4f}"
        )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from estimators import VarianceModel, plan_for_budget, plan_for_mde

    if (args.pilot is None) == (args.r2 is None):
        raise UsageError("give exactly one of --pilot FILE or --r2 R")
    for name in ("budget", "surrogate_cost", "oracle_cost"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    if args.pilot is not None:
        pairs = read_pairs(args.pilot)
        if pairs.s.size < 10:
            raise InputError(f"{args.pilot}: a pilot needs at least 10 labeled pairs")
        model = VarianceModel.from_pilot(pairs.s, pairs.y)
    else:
        if not 0 <= args.r2 <= 1:
            raise UsageError("--r2 must be in [0, 1]")
        model = VarianceModel.from_r2(args.r2)
    plans = {"budget": plan_for_budget(args.budget, model, args.surrogate_cost, args.oracle_cost)}
    if args.target_mde is not None:
        if args.target_mde <= 0:
            raise UsageError("--target-mde must be positive")
        plans["target_mde"] = plan_for_mde(
            args.target_mde, model, args.surrogate_cost, args.oracle_cost
        )
    document = {
        "variance_model": model.__dict__,
        **{name: plan.to_dict() for name, plan in plans.items()},
    }
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


# --- produce ----------------------------------------------------------------------------


def _topic_name(settings: Settings, name: str) -> str:
    return settings.topic(name) if name in TOPIC_NAMES else name


def _message_key(line: bytes) -> bytes | None:
    with contextlib.suppress(orjson.JSONDecodeError):
        document = orjson.loads(line)
        first = document[0] if isinstance(document, list) and document else document
        if isinstance(first, dict):
            for field in ("stream", "experiment_id", "agent"):
                if isinstance(first.get(field), str):
                    return str(first[field]).encode()
    return None


def cmd_produce(args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    settings = _settings(args)
    topic = _topic_name(settings, args.topic)
    try:
        lines = [line for line in Path(args.file).read_bytes().splitlines() if line.strip()]
    except OSError as exc:
        raise InputError(f"cannot read {args.file}: {exc}") from exc

    async def send_all() -> None:
        producer = AIOKafkaProducer(**client_options(settings), linger_ms=5)
        try:
            await producer.start()
        except KafkaError as exc:
            raise ServiceUnavailable(
                f"Kafka unreachable at {settings.kafka_bootstrap}: {exc}"
            ) from exc
        try:
            pending = [await producer.send(topic, line, key=_message_key(line)) for line in lines]
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    asyncio.run(send_all())
    print(f"produced {len(lines)} messages to {topic}")
    return 0


# --- parser -------------------------------------------------------------------------------


def _connection_flags(parser: argparse.ArgumentParser, *, kafka: bool, redis_: bool) -> None:
    if kafka:
        parser.add_argument("--kafka-bootstrap", help="overrides DRIFTGATE_KAFKA_BOOTSTRAP")
        parser.add_argument("--topic-prefix", help="overrides DRIFTGATE_TOPIC_PREFIX")
    if redis_:
        parser.add_argument("--redis-url", help="overrides DRIFTGATE_REDIS_URL")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftgate", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="embedded broker, Redis, worker, metrics and demo")
    _connection_flags(up, kafka=True, redis_=True)
    up.add_argument("--metrics-port", type=int, help="overrides DRIFTGATE_METRICS_PORT")
    up.add_argument("--config", help="overrides DRIFTGATE_CONFIG")
    up.add_argument("--no-demo", action="store_true", help="do not run the synthetic producer")
    up.add_argument("--state-dir", help="where embedded Redis keeps its files (~/.driftgate)")
    up.set_defaults(handler=cmd_up)

    worker = commands.add_parser("worker", help="the Faust worker (production)")
    _connection_flags(worker, kafka=True, redis_=True)
    worker.add_argument("--metrics-port", type=int, help="overrides DRIFTGATE_METRICS_PORT")
    worker.add_argument("--metrics-host", help="overrides DRIFTGATE_METRICS_HOST (127.0.0.1)")
    worker.add_argument("--config", help="overrides DRIFTGATE_CONFIG")
    worker.add_argument(
        "--loglevel", default="info", choices=["crit", "error", "warn", "info", "debug"]
    )
    worker.add_argument("--quiet", action="store_true", help="no banner or start-up spinner")
    worker.set_defaults(handler=cmd_worker)

    status = commands.add_parser("status", help="counts, estimates, intervals and verdicts")
    _connection_flags(status, kafka=False, redis_=True)
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_status)

    calibrate = commands.add_parser("calibrate", help="fit f: S -> Y and make it active")
    calibrate.add_argument("file", help="JSONL with s and y")
    calibrate.add_argument("--stream", required=True)
    _connection_flags(calibrate, kafka=False, redis_=True)
    calibrate.set_defaults(handler=cmd_calibrate)

    audit = commands.add_parser("audit", help="transport audit of a probe slice")
    audit.add_argument("file", help="JSONL with s, y and optionally cluster")
    audit.add_argument("--stream", required=True)
    audit.add_argument("--alpha", type=float, default=0.05)
    audit.add_argument("--margin", type=float, help="equivalence mode: PASS inside +-margin")
    audit.add_argument("--family-size", type=int, default=1, help="Bonferroni over N audits")
    audit.add_argument("--json", action="store_true")
    _connection_flags(audit, kafka=False, redis_=True)
    audit.set_defaults(handler=cmd_audit)

    plan = commands.add_parser("plan", help="label budget plan")
    plan.add_argument("--budget", type=float, required=True)
    plan.add_argument("--surrogate-cost", type=float, required=True)
    plan.add_argument("--oracle-cost", type=float, required=True)
    plan.add_argument("--pilot", help="JSONL with s and y")
    plan.add_argument("--r2", type=float, help="assumed share of Var(Y) the calibrator explains")
    plan.add_argument("--target-mde", type=float)
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(handler=cmd_plan)

    log = commands.add_parser("log", help="the audit log of decisions and canary actions")
    log.add_argument("--action", choices=["none", "alert", "hold", "promote", "rollback"])
    log.add_argument("--hours", type=float)
    log.add_argument("--json", action="store_true")
    _connection_flags(log, kafka=False, redis_=True)
    log.set_defaults(handler=cmd_log)

    rollback = commands.add_parser(
        "rollback", help="roll back an agent's canary by hand (a canary event)"
    )
    rollback.add_argument("agent")
    rollback.add_argument("--reason", help="kept in the audit log")
    rollback.add_argument("--actor", help="who (default: the user name)")
    _connection_flags(rollback, kafka=True, redis_=True)
    rollback.set_defaults(handler=cmd_rollback)

    promote = commands.add_parser("promote", help="promote an agent's canary by hand")
    promote.add_argument("agent")
    promote.add_argument("--percent", type=float, help="default: the next step of the ladder")
    promote.add_argument("--reason", help="kept in the audit log")
    promote.add_argument("--actor", help="who (default: the user name)")
    _connection_flags(promote, kafka=True, redis_=True)
    promote.set_defaults(handler=cmd_promote)

    produce = commands.add_parser("produce", help="publish JSONL events, a message per line")
    produce.add_argument("file")
    produce.add_argument("--topic", required=True, help="labels, telemetry, canary or a full name")
    _connection_flags(produce, kafka=True, redis_=False)
    produce.set_defaults(handler=cmd_produce)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (UsageError, InputError, ConfigError) as exc:
        print(f"driftgate {args.command}: {exc}", file=sys.stderr)
        return 2
    except (ServiceUnavailable, ServiceError, PermanentError) as exc:
        print(f"driftgate {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

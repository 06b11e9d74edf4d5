"""Every mistake a new user made, through the real entry point (`python -m monitor`):
bad input exits 2 with one line that names it, an unreachable service exits 1 naming
it within 15 s, never a traceback; `produce` sends nothing unless every line is good."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from monitor.runtime._services import free_port

from .conftest import Deployment, consume, label

pytestmark = pytest.mark.integration

PLAN = ["plan", "--surrogate-cost", "0.01", "--oracle-cost", "0.16"]


@dataclass
class Outcome:
    argv: list[str]
    status: int
    stdout: str
    stderr: str
    seconds: float


# Each case in a process of its own, forked from one that imported the CLI once: the
# exit status and both streams are the process's own, without paying Python's start-up
# and the imports (1.5 s of CPU) once per case. `python -m monitor` itself is run cold
# by the tests below too.
FORKING_DRIVER = r"""
import json, os, sys, time
from monitor.cli import main

results = []
for case in json.load(sys.stdin):
    pipes = [os.pipe(), os.pipe()]
    sys.stdout.flush()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        for target, (read, write) in zip((1, 2), pipes):
            os.dup2(write, target)
            os.close(read)
            os.close(write)
        os.environ.clear()
        os.environ.update(case["env"])
        try:
            status = main(case["argv"])
        except SystemExit as exit_:  # argparse's usage errors and --help
            status = exit_.code
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    streams = []
    for read, write in pipes:
        os.close(write)
        with os.fdopen(read, encoding="utf-8", errors="replace") as stream:
            streams.append(stream.read())
    _, wait_status = os.waitpid(pid, 0)
    results.append(
        [os.waitstatus_to_exitcode(wait_status), *streams, time.monotonic() - started]
    )
print(json.dumps(results))
"""


def run_all(
    cases: list[list[str]], env: dict[str, str], envs: dict[int, dict[str, str]] | None = None
) -> list[Outcome]:
    """Each command line in a process of its own (forked, one after the other);
    ``envs`` gives some of them (by index) an environment of their own."""
    payload = [{"argv": argv, "env": (envs or {}).get(i, env)} for i, argv in enumerate(cases)]
    driver = subprocess.run(
        [sys.executable, "-c", FORKING_DRIVER],
        input=orjson.dumps(payload),
        capture_output=True,
        env=env,
        timeout=120,
        check=True,
    )
    return [
        Outcome(argv, status, stdout, stderr, seconds)
        for argv, (status, stdout, stderr, seconds) in zip(
            cases, orjson.loads(driver.stdout.splitlines()[-1]), strict=True
        )
    ]


def cold(argv: list[str], env: dict[str, str]) -> Outcome:
    """``python -m monitor ARGV`` from nothing: the entry point and its imports too."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "monitor", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Outcome(
        argv, result.returncode, result.stdout, result.stderr, time.monotonic() - started
    )


def closed_env(tmp_path: Path) -> dict[str, str]:
    """Services at ports where nothing listens (never the Redis on 6379)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTGATE_")}
    env.update(
        DRIFTGATE_REDIS_URL=f"redis://:hunter2@127.0.0.1:{free_port()}/0",
        DRIFTGATE_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        HOME=str(tmp_path),  # `up`'s state directory, were it to get that far
    )
    return env


def test_every_bad_input_found_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    probe = tmp_path / "probe.jsonl"
    probe.write_text('{"s": 0.1, "y": 0.2}\n{"s": 0.5, "y": 0.4}\n')
    audit = ["audit", str(probe), "--stream", "s"]
    constant = tmp_path / "constant.jsonl"
    constant.write_text("".join(f'{{"s": 0.5, "y": {i % 2}}}\n' for i in range(30)))
    huge = tmp_path / "huge.jsonl"
    huge.write_bytes(
        orjson.dumps({**label("e1", "judge", 0.5, 0.4), "covariates": {"t": "x" * 1_100_000}})
    )
    cases: list[tuple[str, list[str]]] = [
        ("argument --budget: must be a finite", [*PLAN, "--budget", "nan", "--r2", "0.5"]),
        ("argument --budget: must be a finite", [*PLAN, "--budget", "inf", "--r2", "0.5"]),
        ("does not buy one labeled item", [*PLAN, "--budget", "0.1", "--r2", "0.5"]),
        ("argument --r2: must be in [0, 1)", [*PLAN, "--budget", "100", "--r2", "1"]),
        ("argument --hours: must be a finite", ["log", "--hours", "nan"]),
        ("argument --hours: must be a number of hours", ["log", "--hours", "1e300"]),
        ("argument --hours: must be a number of hours", ["log", "--hours", "-1"]),
        ("argument --redis-url: must be a redis://", ["status", "--redis-url", "notaurl"]),
        ("DRIFTGATE_REDIS_URL must be a Redis URL", ["status"]),  # the environment's, below
        ("argument --metrics-port: must be in 1..65535", ["up", "--metrics-port", "99999"]),
        ("--family-size: must be at least 1", [*audit, "--family-size", "0"]),
        ("--alpha: must be a probability in (0, 1)", [*audit, "--alpha", "2"]),
        ("--alpha: must be a finite number", [*audit, "--alpha", "nan"]),
        ("--margin: must be a positive number", [*audit, "--margin", "-0.1"]),
        ("--margin: must be a finite number", [*audit, "--margin", "nan"]),
        ("argument --topic: must hold only", ["produce", str(probe), "--topic", "not a topic!"]),
        (f"{probe}:1: EventValidationError", ["produce", str(probe), "--topic", "labels"]),
        (f"{huge}:1: 1100", ["produce", str(huge), "--topic", "labels"]),
        (
            "a calibrator needs at least 20 labeled pairs, found 2",
            ["calibrate", str(probe), "--stream", "s"],
        ),
        ("a calibrator needs scores that differ", ["calibrate", str(constant), "--stream", "s"]),
        # Issue 21, point 7: a bootstrap server without a port; fewer labels than a
        # calibrator needs; a policy file that is not there (status read none).
        (
            "'localhost' has no port",
            ["produce", str(probe), "--topic", "labels", "--kafka-bootstrap", "localhost"],
        ),
        (
            "--budget 0.5 buys 2 labels: `driftgate calibrate` needs at least 20",
            [*PLAN, "--budget", "0.5", "--r2", "0.7"],
        ),
        ("cannot read DRIFTGATE_CONFIG /missing.yaml", ["status"]),
    ]
    env = closed_env(tmp_path)
    bad_url = {**env, "DRIFTGATE_REDIS_URL": "redis://:hunter2@127.0.0.1:notaport/0"}
    missing_config = {**env, "DRIFTGATE_CONFIG": "/missing.yaml"}
    outcomes = run_all(
        [argv for _, argv in cases], env, {8: bad_url, len(cases) - 1: missing_config}
    )
    # And the entry point itself, from a cold start, for two of them.
    outcomes += [cold(cases[0][1], env), cold(cases[8][1], bad_url)]
    cases += [cases[0], cases[8]]
    for (message, _), outcome in zip(cases, outcomes, strict=True):
        assert_one_line(outcome, 2, message)


def assert_one_line(outcome: Outcome, status: int, message: str) -> None:
    """Exit ``status``, one line on stderr that holds ``message``, no traceback, no secret."""
    shown = f"{outcome.argv}: {outcome.status} {outcome.stderr!r}"
    assert outcome.status == status, shown
    assert "Traceback" not in outcome.stderr and "hunter2" not in outcome.stderr, shown
    assert outcome.stdout == "", shown
    assert outcome.stderr.count("\n") == 1 and message in outcome.stderr, shown
    assert outcome.stderr.startswith(f"driftgate {outcome.argv[0]}: "), shown


def test_an_unreachable_service_exits_1_naming_it_within_15_seconds(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(orjson.dumps(label("e1", "judge", 0.5, 0.4)) + b"\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(f'{{"s": {i / 20}, "y": {i / 20}}}\n' for i in range(20)))
    env = closed_env(tmp_path)
    kafka, redis_url = env["DRIFTGATE_KAFKA_BOOTSTRAP"], env["DRIFTGATE_REDIS_URL"]
    shown_redis = redis_url.replace("hunter2", "***")
    produce = ["produce", str(events), "--topic", "labels"]
    cases: list[tuple[str, list[str]]] = [
        (f"Kafka unreachable at {kafka}", produce),
        (
            "Kafka unreachable at nosuch.invalid:9092",
            [*produce, "--kafka-bootstrap", "nosuch.invalid:9092"],
        ),
        (f"Redis unreachable at {shown_redis}", ["status"]),
        (f"Redis unreachable at {shown_redis}", ["log", "--json"]),
        (f"Redis unreachable at {shown_redis}", ["calibrate", str(pairs), "--stream", "s"]),
        (f"Redis unreachable at {shown_redis}", ["rollback", "agent-1"]),
        (f"Redis unreachable at {shown_redis}", ["worker"]),
    ]
    outcomes = run_all([argv for _, argv in cases], env)
    outcomes += [cold(cases[0][1], env), cold(cases[2][1], env)]  # start-up included
    cases += [cases[0], cases[2]]
    for (message, _), outcome in zip(cases, outcomes, strict=True):
        assert_one_line(outcome, 1, message)
        assert outcome.seconds < 15, outcome


def test_produce_sends_nothing_when_one_line_is_bad_and_everything_when_all_are_good(
    deployment: Deployment, tmp_path: Path
) -> None:
    good = [label(f"e{i}", "judge" if i % 2 else "other", 0.5, 0.4) for i in range(6)]
    envelope = [label(f"v{i}", "envelope", 0.5, None) for i in range(3)]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(
        b"\n".join([*map(orjson.dumps, good), b'{"s": 0.1, "y": 0.2}', orjson.dumps(envelope)])
    )
    result = deployment.cli("produce", str(bad), "--topic", "labels")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"driftgate produce: {bad}:7: EventValidationError: Object missing required field "
        "`event_id`; nothing was sent"
    )
    oked = tmp_path / "good.jsonl"
    oked.write_bytes(b"\n".join([*map(orjson.dumps, good), orjson.dumps(envelope)]) + b"\n")
    result = deployment.cli("produce", str(oked), "--topic", deployment.topic("labels"))
    assert result.returncode == 0, result.stderr
    # The emitter's columnar envelopes: one per stream (judge, other, envelope).
    assert result.stdout.strip() == (
        f"produced 9 events in 3 messages to {deployment.topic('labels')}"
    )
    records = asyncio.run(consume(deployment.kafka, deployment.topic("labels"), 3, 10))
    # Only the good file's events: the bad one sent nothing. Each envelope keyed by its
    # subject, its events in the file's order.
    sent: dict[str, list[tuple[str, float, float | None]]] = {}
    for record in records:
        document = orjson.loads(record.value)
        assert record.key == document["stream"].encode()
        columns = document["columns"]
        s = columns.get("s", [document.get("s")] * len(columns["event_id"]))
        y = columns.get("y", [document.get("y")] * len(columns["event_id"]))
        sent[document["stream"]] = list(zip(columns["event_id"], s, y, strict=True))
    expected: dict[str, list[tuple[str, float, float | None]]] = {}
    for event in [*good, *envelope]:
        expected.setdefault(event["stream"], []).append((event["event_id"], event["s"], event["y"]))
    assert sent == expected
    deployment.start_worker()
    deployment.wait_for_count("labels", "ok", 9)
    assert deployment.count("labels", "dlq") == 0


def test_a_wrong_database_is_exit_2_and_kafka_errors_are_one_plain_line(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Issue 21, point 7: a Redis database the server does not have is a configuration
    error; a rollback or a worker that cannot reach Kafka says so once, in one line (no
    ``KafkaConnectionError: KafkaConnectionError``, no ``Unclosed AIOKafkaProducer``, no
    line of the Kafka client's own before it)."""
    url = deployment.redis_server.url.rsplit("/", 1)[0] + "/99"
    result = deployment.cli("status", DRIFTGATE_REDIS_URL=url)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "names a database this Redis does not have" in result.stderr, result.stderr

    deployment.start_worker()
    deploy = {
        "event_id": "d1",
        "ts": time.time(),
        "agent": "bot",
        "bundle_id": "b1",
        "action": "deploy",
        "canary_percent": 10,
    }
    deployment.produce("canary", [orjson.dumps(deploy)], [b"bot"])
    deployment.wait_for(lambda: "bot" in deployment.status_now()["agents"], 30, "the agent")
    deployment.stop_workers()
    closed = f"127.0.0.1:{free_port()}"
    for argv in (["rollback", "bot"], ["worker"]):
        result = deployment.cli(*argv, DRIFTGATE_KAFKA_BOOTSTRAP=closed)
        shown = f"{argv}: {result.returncode} {result.stderr!r}"
        assert result.returncode == 1, shown
        assert result.stderr.count("\n") == 1, shown
        assert result.stderr.startswith(f"driftgate {argv[0]}: Kafka"), shown
        assert "KafkaConnectionError: KafkaConnectionError" not in result.stderr, shown
        assert "Unclosed" not in result.stderr, shown

"""The ``driftgate`` parser: every command, its flags, help text and examples.

A command's handler is looked up in its module when the parser is built (``_observe.
cmd_status``), so that the parser names each command group once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable
from importlib import metadata
from typing import Any, NoReturn

from ..config import ConfigError
from ..config import _args as types
from ..slices import REGISTRY
from . import _observe, _produce, _up, _worker
from ._replay import EXAMPLES as REPLAY_EXAMPLES
from ._replay import add_replay

__all__ = ["DESCRIPTION", "EXAMPLES", "Commands", "build_parser"]

DESCRIPTION = "The ``driftgate`` command line."

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
        "driftgate calibrate oracle.jsonl --stream policy:gpt-4-mini --covariates "
        "domain,difficulty --mode auto",
    ),
    "audit": (
        "driftgate audit probe.jsonl --stream policy:gpt-4-mini --margin 0.05 --json",
        "driftgate audit probe.jsonl --stream policy:gpt-4-mini --pool",
    ),
    "plan": (
        "driftgate plan --budget 5000 --surrogate-cost 0.01 --oracle-cost 0.16 --r2 0.7",
        "driftgate plan --budget 5000 --surrogate-cost 0.01 --oracle-cost 0.16 "
        "--pilot pilot.jsonl --target-mde 0.01",
        "driftgate plan --experiment demo-ab --config policy.yaml",
    ),
    "experiments": ("driftgate experiments", "driftgate experiments --json"),
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
    "schema": (
        "driftgate schema canary",
        "driftgate schema driftgate.telemetry",
        "driftgate schema labels --columnar",
    ),
    "replay": REPLAY_EXAMPLES,
}

EVENT_FORMATS = (
    "event formats: every topic's fields, envelopes and examples, the decision and\n"
    "dead-letter formats: docs/events.md in the driftgate repository; the JSON Schema\n"
    "of a topic's events: driftgate schema TOPIC (also docs/schemas/TOPIC.json), of its\n"
    "columnar envelopes: driftgate schema TOPIC --columnar (TOPIC.columnar.json)"
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
    commands: Any,
    name: str,
    help_text: str,
    handler: Callable[[argparse.Namespace], int],
    examples: tuple[str, ...] | None = None,
) -> argparse.ArgumentParser:
    lines = EXAMPLES[name] if examples is None else examples
    shown = "\n".join(f"  {line}" for line in lines)
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=f"example{'s' if len(lines) > 1 else ''}:\n{shown}\n\n{EXIT_STATUS}",
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


class Commands:
    """What a subject kind adds its commands with (its ``commands`` entry gets one)."""

    def __init__(self, subparsers: Any) -> None:
        self._subparsers = subparsers

    def add(
        self,
        name: str,
        help_text: str,
        handler: Callable[[argparse.Namespace], int],
        examples: tuple[str, ...] | None = None,
    ) -> argparse.ArgumentParser:
        """A command with its help, examples (default: :data:`EXAMPLES`'s) and handler."""
        return _command(self._subparsers, name, help_text, handler, examples)

    @staticmethod
    def connection_flags(parser: argparse.ArgumentParser, *, kafka: bool, redis_: bool) -> None:
        """``--kafka-bootstrap`` and ``--topic-prefix``, and ``--redis-url``."""
        _connection_flags(parser, kafka=kafka, redis_=redis_)


def build_parser() -> argparse.ArgumentParser:
    every_example = "\n".join(f"  {EXAMPLES[name][0]}" for name in EXAMPLES)
    parser = _Parser(
        prog="driftgate",
        description=DESCRIPTION,
        epilog=f"examples:\n{every_example}\n\n{EXIT_STATUS}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"driftgate {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = _command(commands, "up", "embedded broker, Redis, worker, metrics and demo", _up.cmd_up)
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

    worker = _command(commands, "worker", "the Faust worker (production)", _worker.cmd_worker)
    _connection_flags(worker, kafka=True, redis_=True)
    _metrics_flags(worker)
    worker.add_argument(
        "--loglevel", default="info", choices=["crit", "error", "warn", "info", "debug"]
    )
    worker.add_argument("--quiet", action="store_true", help="no banner or start-up spinner")

    status = _command(
        commands, "status", "counts, estimates, intervals and verdicts", _observe.cmd_status
    )
    _connection_flags(status, kafka=False, redis_=True)
    status.add_argument("--json", action="store_true")

    log = _command(
        commands, "log", "the audit log of decisions and canary actions", _observe.cmd_log
    )
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
        _observe.cmd_report,
    )
    report.add_argument("subject", type=types.subject_name, metavar="SUBJECT")
    report.add_argument(
        "--out", metavar="DIR", help="the folder to write (default: ./driftgate-report-SUBJECT)"
    )
    _connection_flags(report, kafka=False, redis_=True)

    # The kinds of DRIFTGATE_SUBJECTS may add commands; a bad value is the command's
    # error to report (exit 2, from its settings), not the parser's.
    with contextlib.suppress(ConfigError, argparse.ArgumentTypeError):
        REGISTRY.load(types.module_names(os.environ.get("DRIFTGATE_SUBJECTS", "")))
    every_kind = Commands(commands)
    for kind in REGISTRY:  # each subject kind's commands (labels: calibrate, audit, ...)
        if kind.commands is not None:
            kind.commands(every_kind)

    produce = _command(
        commands,
        "produce",
        "check JSONL events against the topic's schema, then publish them in columnar envelopes",
        _produce.cmd_produce,
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
        _produce.cmd_schema,
    )
    schema.add_argument(
        "topic", metavar="TOPIC", help="labels, telemetry, canary or a full name ending in one"
    )
    schema.add_argument(
        "--columnar",
        action="store_true",
        help="the schema of the topic's columnar envelopes (docs/schemas/TOPIC.columnar.json)",
    )
    schema.epilog = f"{EVENT_FORMATS}\n\n{schema.epilog}"
    add_replay(commands, _command)
    return parser

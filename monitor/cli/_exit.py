"""The exit-code mapping: each failure one line on stderr, secrets scrubbed.

0 done; 2 bad usage or bad input (:class:`UsageError`, an input file's
:class:`~monitor.workflows._pairs.InputError`, a :class:`~monitor.config.ConfigError`);
1 a runtime failure (a service unreachable or refusing, named with where it was looked
for); 130 interrupted. A reader that closed standard output (``driftgate log | head``)
ends the command quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import sys

from ..config import ConfigError, Settings, scrub, secrets_of
from ..pipeline import PermanentError
from ..runtime._preflight import ServiceUnavailable
from ..runtime._services import ServiceError
from ..store import STORE_ERRORS, redact
from ..store._calibrators import StateConflictError
from ._common import UsageError, load_settings

__all__ = ["ReaderGone", "run"]


def _service_failure(args: argparse.Namespace, exc: Exception) -> str:
    """A Redis or Kafka error that no command turned into a message: name the service."""
    try:
        settings = load_settings(args)
    except ConfigError:
        settings = Settings()
    if isinstance(exc, STORE_ERRORS):
        return f"Redis at {redact(settings.redis_url)}: {type(exc).__name__}: {exc}"
    return f"Kafka at {settings.kafka_bootstrap}: {type(exc).__name__}: {exc}"


class ReaderGone(Exception):
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


def run(args: argparse.Namespace, kafka_error: type[Exception]) -> int:
    """Run the parsed command; its failure is an exit status and one line on stderr."""
    # Only now: it imports scipy (over a second), which --version and a usage error
    # (answered by the parser) do without.
    from ..workflows._pairs import InputError

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
    except (*STORE_ERRORS, kafka_error) as exc:
        return fail(1, _service_failure(args, exc))
    except KeyboardInterrupt:
        return fail(130, "interrupted")
    except BrokenPipeError as exc:
        if _stdout_closed():
            raise ReaderGone from None
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

"""Which Kafka, Redis and metrics port ``driftgate up`` uses, chosen before it starts or
writes anything, and the lock that keeps one ``up`` per state directory.

``up`` touches only what it started. A service named by a flag or a variable is used as
it is when it answers (and then ``up`` resets none of its subjects) or started there when
it does not; a service not named is always started afresh, on its default port when that
port is free and on a free one otherwise, so a second ``up`` beside a first one (or
beside any Redis on 6379) runs on services of its own instead of adopting theirs.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from ..config import ENVIRONMENT, ConfigError, Settings
from ..store import redact
from ._preflight import ServiceUnavailable
from ._services import free_port, port_open

__all__ = [
    "DEFAULT_PORTS",
    "ServiceChoice",
    "StateDirectoryInUse",
    "UpServices",
    "choose_services",
    "lock_state_directory",
]

# Where `up` puts what it starts when nothing is named and the port is free.
DEFAULT_PORTS = {"kafka": 9092, "redis": 6379, "metrics": 9108}

# The flag beside each variable, for messages that name both.
_FLAGS = {
    "kafka_bootstrap": "--kafka-bootstrap",
    "redis_url": "--redis-url",
    "metrics_port": "--metrics-port",
}


class StateDirectoryInUse(ConfigError):
    """Another ``driftgate up`` runs on this state directory: exit status 2."""


@dataclass(frozen=True)
class ServiceChoice:
    """One service of ``up``: where it is, and whether ``up`` starts it."""

    host: str
    port: int
    start: bool
    named: bool
    """Given by a flag or a variable (a service found running there is not ``up``'s)."""

    @property
    def how(self) -> str:
        """For the banner."""
        if self.start:
            return "started" if self.named else "started: nothing named it"
        return "found running: named, so its subjects are left as they are"


@dataclass(frozen=True)
class UpServices:
    """What ``up`` will use: the settings its worker gets, and each service's choice."""

    settings: Settings
    kafka: ServiceChoice
    redis: ServiceChoice
    metrics: ServiceChoice | None
    """None when ``up`` starts no worker (no metrics of its own)."""


def _named_by(attribute: str) -> str:
    return f"{_FLAGS[attribute]} / {ENVIRONMENT[attribute]}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bindable(host: str, port: int) -> bool:
    """Nothing listens on ``host:port`` (tried by binding, so a running server there is
    never connected to, let alone written to)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        try:
            sock.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def _own_port(default: int, host: str = "127.0.0.1") -> int:
    return default if _bindable(host, default) else free_port()


def _kafka_address(bootstrap: str) -> tuple[str, int]:
    """The first bootstrap server's host and port (the argument check requires a port)."""
    host, _, number = bootstrap.split(",")[0].strip().rpartition(":")
    return host.strip("[]"), int(number)


def _named_service(name: str, attribute: str, host: str, port: int) -> ServiceChoice:
    if port_open(host, port):
        return ServiceChoice(host, port, start=False, named=True)
    if not _is_loopback(host):
        raise ServiceUnavailable(
            f"{name} unreachable at {host}:{port} (named by {_named_by(attribute)}; "
            "not loopback: not started)"
        )
    return ServiceChoice(host, port, start=True, named=True)


def _redis_named(settings: Settings) -> ServiceChoice:
    parts = urlsplit(settings.redis_url)
    if parts.scheme == "unix":
        raise ConfigError(
            "driftgate up starts Redis on TCP only: give a redis:// URL (--redis-url / "
            "DRIFTGATE_REDIS_URL)"
        )
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    # A Redis up cannot start (on another host, with TLS, for an ACL user) is refused
    # here, before anything else waits on it, naming the URL (without its password).
    if not _is_loopback(host) and not port_open(host, port):
        raise ServiceUnavailable(
            f"Redis unreachable at {redact(settings.redis_url)}, and driftgate up starts "
            "one on loopback only"
        )
    choice = _named_service("Redis", "redis_url", host, port)
    if choice.start and parts.scheme == "rediss":
        cannot = "does not start one with TLS: start it yourself, or use redis://"
    elif choice.start and parts.username not in (None, "", "default"):
        cannot = (
            f"starts one with a password only, not for the ACL user {parts.username!r}: "
            "start it yourself"
        )
    else:
        return choice
    raise ServiceUnavailable(
        f"Redis unreachable at {redact(settings.redis_url)}, and driftgate up {cannot}"
    )


def _metrics(settings: Settings, defaults: dict[str, int]) -> ServiceChoice:
    host = settings.metrics_host
    if "metrics_port" not in settings.named:
        return ServiceChoice(host, _own_port(defaults["metrics"], host), start=True, named=False)
    if not _bindable(host, settings.metrics_port):
        raise ConfigError(
            f"the metrics port {host}:{settings.metrics_port} (named by "
            f"{_named_by('metrics_port')}) is in use: name a free one, or leave it out "
            "and driftgate up picks one"
        )
    return ServiceChoice(host, settings.metrics_port, start=True, named=True)


def choose_services(
    settings: Settings, with_worker: bool, defaults: dict[str, int] | None = None
) -> UpServices:
    """Every port ``up`` will use, checked before anything is started or written.

    ``defaults`` replaces :data:`DEFAULT_PORTS` (the tests point it at servers of their
    own, never at the machine's 6379). A named metrics port that is taken is a
    :class:`ConfigError` (exit 2): nothing else could serve the worker's metrics there.
    """
    defaults = DEFAULT_PORTS if defaults is None else defaults
    if "kafka_bootstrap" in settings.named:
        host, port = _kafka_address(settings.kafka_bootstrap)
        kafka = _named_service("Kafka", "kafka_bootstrap", host, port)
    else:
        kafka = ServiceChoice("127.0.0.1", _own_port(defaults["kafka"]), start=True, named=False)
        settings = replace(settings, kafka_bootstrap=f"127.0.0.1:{kafka.port}")
    if "redis_url" in settings.named:
        redis = _redis_named(settings)
    else:
        redis = ServiceChoice("127.0.0.1", _own_port(defaults["redis"]), start=True, named=False)
        settings = replace(settings, redis_url=f"redis://127.0.0.1:{redis.port}/0")
    metrics = _metrics(settings, defaults) if with_worker else None
    if metrics is not None:
        settings = replace(settings, metrics_port=metrics.port)
    return UpServices(settings, kafka, redis, metrics)


def lock_state_directory(state_dir: Path) -> IO[str]:
    """Hold ``state_dir/up.pid`` for as long as this process runs (the kernel lets go of
    it when the process dies, even by ``kill -9``): a second ``up`` on the same state
    directory would share its Redis files and logs, so it is refused, naming the first.

    Returns the open file; keep it open.
    """
    path = state_dir / "up.pid"
    lock = open(path, "a+")  # noqa: SIM115 - held open for the life of `up`
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise StateDirectoryInUse(
            f"the state directory {state_dir} is in use by driftgate up (pid {holder}): "
            "stop that one first, or give another --state-dir"
        ) from None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock

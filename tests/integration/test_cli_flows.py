"""User flows through the CLI: `driftgate up`, and recalibrating a live stream."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from monitor.runtime._services import free_port, port_open
from monitor.slices import status_document
from monitor.store import KeyLayout, ReadModel, connect

from .conftest import Deployment, encode, label, run_cli

pytestmark = pytest.mark.integration


def run_up_until_the_demo_fails(state_dir: Path) -> float:
    """`driftgate up` on fresh ports; returns seconds until FAIL showed, after Ctrl-C."""
    kafka_port, redis_port, metrics_port = free_port(), free_port(), free_port()
    env = dict(os.environ)
    env.update(
        DRIFTGATE_KAFKA_BOOTSTRAP=f"127.0.0.1:{kafka_port}",
        DRIFTGATE_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        DRIFTGATE_METRICS_PORT=str(metrics_port),
    )
    started = time.monotonic()
    up = subprocess.Popen(
        [sys.executable, "-m", "monitor", "up", "--state-dir", str(state_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in up.stdout])  # type: ignore[union-attr]
    reader.start()
    seen: list[str] = []
    try:
        while time.monotonic() - started < 60:
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                continue
            output = "".join(seen)
            if (
                "residual_drift|demo:judge: FAIL" in output
                and "guardrail|demo-agent: FAIL rollback" in output
            ):
                break
        flipped_after = time.monotonic() - started
        output = "".join(seen)
        assert "residual_drift|demo:judge: FAIL" in output, output
        # The demo's canary turned toxic and was rolled back, within the first minute too.
        assert "guardrail|demo-agent: FAIL rollback (toxicity_rate)" in output, output
        verdicts = [line.split(": ")[1].split()[0] for line in seen if "demo:judge: " in line]
        assert verdicts[0] in ("INCONCLUSIVE", "PASS"), verdicts  # calibrated first, then drift
        assert f"127.0.0.1:{kafka_port} (started)" in output
        assert f"redis://127.0.0.1:{redis_port}/0 (started)" in output
        assert f"http://127.0.0.1:{metrics_port}/metrics" in output
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        metrics = urllib.request.urlopen(url, timeout=10).read().decode()
        assert 'driftgate_gate_status{gate="residual_drift",subject="demo:judge"} 2.0' in metrics
    finally:
        up.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = up.wait(60)
        reader.join(10)
        up.stdout.close()  # type: ignore[union-attr]
    rest = "".join(lines.queue)
    assert code == 0, rest
    assert "driftgate up: SIGINT: stopping everything it started" in rest, rest
    assert "\x1b" not in output + rest  # no terminal colors in a pipe
    # The worker stops before the broker it talks to: no error at the end of its log.
    worker_log = (state_dir / "worker.log").read_text()
    assert "ERROR" not in worker_log.split("Kafka at")[-1], worker_log[-3000:]
    for port in (kafka_port, redis_port, metrics_port):
        assert not port_open("127.0.0.1", port), f"port {port} still open after Ctrl-C"
    return flipped_after


def start_up(state_dir: Path, *flags: str) -> tuple[subprocess.Popen[str], list[int], str]:
    """`driftgate up --no-demo [flags]` on fresh ports, once it printed its banner (and its
    worker, if it starts one, serves metrics): the process, its ports (Kafka, Redis,
    metrics) and the banner."""
    ports = [free_port(), free_port(), free_port()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTGATE_")}
    env.update(
        DRIFTGATE_KAFKA_BOOTSTRAP=f"127.0.0.1:{ports[0]}",
        DRIFTGATE_REDIS_URL=f"redis://127.0.0.1:{ports[1]}/0",
        DRIFTGATE_METRICS_PORT=str(ports[2]),
    )
    up, text = launch_up(state_dir, env, "--no-demo", *flags)
    assert "  worker   " in text, text + up.stderr.read()  # type: ignore[union-attr]
    if "--no-worker" not in flags:
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", ports[2]) and time.monotonic() < deadline:
            time.sleep(0.2)  # the worker's metrics: it is up
    return up, ports, text


def worker_pid(banner: str) -> int:
    assert "  worker   pid " in banner, banner
    return int(banner.split("  worker   pid ")[1].split()[0])


def test_up_stops_everything_on_sighup_and_stops_when_its_worker_dies(tmp_path: Path) -> None:
    # Closing the terminal (SIGHUP) stops everything `up` started, as Ctrl-C does.
    up, ports, banner = start_up(tmp_path)
    first_worker = worker_pid(banner)
    assert all(port_open("127.0.0.1", port) for port in ports)
    up.send_signal(signal.SIGHUP)
    out, err = up.communicate(timeout=60)
    assert up.returncode == 0, err
    assert "SIGHUP: stopping everything it started" in out
    assert not any(port_open("127.0.0.1", port) for port in ports)
    with pytest.raises(ProcessLookupError):
        os.kill(first_worker, 0)
    for log in ("worker.log", "broker.log", "redis/redis.log"):
        assert "\x1b" not in (tmp_path / log).read_text(errors="replace"), log  # plain text

    # A worker that dies is noticed: `up` says which, shows its last lines, stops the rest
    # and exits 1.
    worker_log = tmp_path / "worker.log"
    earlier = worker_log.stat().st_size  # `up` appends: this run's lines come after
    up, ports, banner = start_up(tmp_path)
    second_worker = worker_pid(banner)
    # Once it has logged its first line (a worker killed before that has no lines to show).
    deadline = time.monotonic() + 30
    while b"driftgate worker: kafka" not in worker_log.read_bytes()[earlier:]:
        assert time.monotonic() < deadline, "the worker logged nothing in 30 s"
        time.sleep(0.1)
    os.kill(second_worker, signal.SIGKILL)
    out, err = up.communicate(timeout=60)
    assert up.returncode == 1, out + err
    lines = err.splitlines()
    assert lines[0] == (
        f"driftgate up: the worker (pid {second_worker}) was killed by SIGKILL; "
        f"the last lines of {tmp_path / 'worker.log'}:"
    ), err
    assert "driftgate worker: kafka 127.0.0.1:" in err  # this run's lines, from its log
    assert lines[-1] == "driftgate up: stopping everything it started"
    assert "Traceback" not in err
    assert not any(port_open("127.0.0.1", port) for port in ports)


def test_up_without_a_worker_starts_only_the_services(tmp_path: Path) -> None:
    """`--no-worker` (docker compose's demo profile, beside the stack's worker): the
    broker and Redis it needed, no worker and no metrics of its own; Ctrl-C stops them."""
    up, (kafka, redis_port, metrics), banner = start_up(tmp_path, "--no-worker")
    assert "  worker   none (--no-worker; the broker was started here, so no worker" in banner
    assert port_open("127.0.0.1", kafka) and port_open("127.0.0.1", redis_port)
    time.sleep(2.0)  # what a worker would have bound by now
    assert not port_open("127.0.0.1", metrics)
    assert not (tmp_path / "worker.log").exists()
    up.send_signal(signal.SIGINT)
    _, err = up.communicate(timeout=60)
    assert up.returncode == 0, err
    assert not port_open("127.0.0.1", kafka) and not port_open("127.0.0.1", redis_port)


def test_up_shows_the_gate_flip_within_a_minute_and_ctrl_c_stops_everything(
    tmp_path: Path,
) -> None:
    assert run_up_until_the_demo_fails(tmp_path) < 60
    # Again on the same state: Redis keeps its data (AOF) but the new in-memory broker
    # starts with empty logs; the old offset fences must not hide the new events.
    assert run_up_until_the_demo_fails(tmp_path) < 60


def test_calibrate_a_live_stream_without_restarting_the_worker(
    deployment: Deployment, tmp_path: Path
) -> None:
    rng = np.random.default_rng(21)
    deployment.start_worker()

    def batch(first: int, count: int) -> tuple[list[bytes], np.ndarray, np.ndarray]:
        s = rng.uniform(0, 1, count)
        y = s**2 + rng.normal(0, 0.05, count)  # a judge whose scale is not the label's
        events = [
            label(f"j-{first + i}", "judge", float(a), float(b))
            for i, (a, b) in enumerate(zip(s, y, strict=True))
        ]
        return [encode(events[i : i + 100]) for i in range(0, count, 100)], s, y

    messages, s, y = batch(0, 1000)
    deployment.produce("labels", messages)
    deployment.wait_for_count("labels", "ok", 1000)
    before = orjson.loads(deployment.cli("status", "--json").stdout)["streams"]["judge"]
    assert before["verdict"] == "FAIL"
    assert before["calibrator"] == {"kind": "identity", "version": 0}
    assert "identity: no calibrator fitted" in deployment.cli("status").stdout

    pairs = tmp_path / "oracle.jsonl"
    pairs.write_bytes(
        b"\n".join(orjson.dumps({"s": float(a), "y": float(b)}) for a, b in zip(s, y, strict=True))
    )
    result = deployment.cli("calibrate", str(pairs), "--stream", "judge")
    assert result.returncode == 0, result.stderr
    assert "isotonic calibrator v1" in result.stdout

    messages, _, _ = batch(1000, 1000)
    deployment.produce("labels", messages)
    deployment.wait_for_count("labels", "ok", 2000)
    after = orjson.loads(deployment.cli("status", "--json").stdout)["streams"]["judge"]
    assert after["calibrator"] == {"kind": "isotonic", "version": 1}
    assert after["labeled_n"] == 1000
    assert after["verdict"] == "PASS"
    decisions = [orjson.loads(r.value) for r in deployment.consume_all("decisions", expected=2)]
    assert [d["verdict"] for d in decisions if d["subject"] == "judge"][-1] == "PASS"


def test_audit_a_probe_against_the_active_calibrator(
    deployment: Deployment, tmp_path: Path
) -> None:
    rng = np.random.default_rng(22)
    s = rng.uniform(size=500)
    fit = tmp_path / "fit.jsonl"
    fit.write_bytes(b"\n".join(orjson.dumps({"s": float(a), "y": float(a)}) for a in s))
    unfitted = deployment.cli("audit", str(fit), "--stream", "policy:a")
    assert unfitted.returncode == 2
    assert "stream 'policy:a' has no calibrator to audit" in unfitted.stderr
    assert deployment.cli("calibrate", str(fit), "--stream", "policy:a").returncode == 0

    probe = tmp_path / "probe.jsonl"
    ps = rng.uniform(size=60)
    probe.write_bytes(
        b"\n".join(
            orjson.dumps({"s": float(a), "y": float(a) + 0.2 + float(e), "cluster": f"p{i // 3}"})
            for i, (a, e) in enumerate(zip(ps, rng.normal(0, 0.05, 60), strict=True))
        )
    )
    result = deployment.cli("audit", str(probe), "--stream", "policy:a", "--json")
    assert result.returncode == 0, result.stderr
    audit = orjson.loads(result.stdout)
    assert audit["status"] == "FAIL"
    assert audit["calibrator"] == {"kind": "isotonic", "version": 1}
    assert audit["method"] == "t_cluster_robust" and audit["clusters"] == 20
    assert audit["delta"] == pytest.approx(0.2, abs=0.03)
    assert len(audit["deciles"]) == 10
    text = deployment.cli("audit", str(probe), "--stream", "policy:a").stdout
    assert text.startswith("Transport: FAIL | Group: policy:a | N=60")
    equivalence = deployment.cli(
        "audit", str(probe), "--stream", "policy:a", "--margin", "0.5", "--json"
    )
    assert orjson.loads(equivalence.stdout)["status"] == "PASS"


# --- `up` touches only what it started (issue 21, point 1) ---------------------------


def launch_up(
    state_dir: Path, env: dict[str, str], *flags: str, command: list[str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """`driftgate up [flags]` with ``env``, once it printed its banner (or exited)."""
    up = subprocess.Popen(
        [
            *(command or [sys.executable, "-m", "monitor", "up"]),
            *flags,
            "--state-dir",
            str(state_dir),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    banner = []
    for line in up.stdout:  # type: ignore[union-attr]
        banner.append(line)
        if line.startswith("Ctrl-C stops everything"):
            break
    return up, "".join(banner)


def named_env(kafka: int, redis_port: int, metrics: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTGATE_")}
    env.update(
        DRIFTGATE_KAFKA_BOOTSTRAP=f"127.0.0.1:{kafka}",
        DRIFTGATE_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        DRIFTGATE_METRICS_PORT=str(metrics),
    )
    return env


def demo_labels(env: dict[str, str]) -> int:
    """The demo stream's ``n`` of ``status --json``, read here: the waits poll it, and a
    ``driftgate`` process a poll would pay its start-up (seconds on a loaded machine)."""
    client = connect(env["DRIFTGATE_REDIS_URL"], False)
    try:
        document = status_document(ReadModel(client, KeyLayout()).snapshot()).to_builtins()
    finally:
        client.close()
    stream = document["streams"].get("demo:judge")
    return 0 if stream is None else int(stream["n"])


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def audit_log(env: dict[str, str]) -> list[Any]:
    """``driftgate log --json``: the audit log's entries."""
    result = run_cli("log", "--json", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)  # type: ignore[no-any-return]


def test_a_second_up_leaves_the_first_one_alone(tmp_path: Path) -> None:
    ports = [free_port(), free_port(), free_port()]
    env = named_env(*ports)
    first, banner = launch_up(tmp_path / "first", env)
    try:
        assert f"127.0.0.1:{ports[0]} (started)" in banner, banner
        wait_until(lambda: demo_labels(env) >= 200, 60, "the demo's labels never came")

        # The same state directory: refused, naming the running one, before anything.
        again = subprocess.run(
            [sys.executable, "-m", "monitor", "up", "--state-dir", str(tmp_path / "first")],
            env=named_env(free_port(), free_port(), free_port()),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 2, again.stdout + again.stderr
        assert again.stderr == (
            f"driftgate up: the state directory {tmp_path / 'first'} is in use by driftgate up "
            f"(pid {first.pid}): stop that one first, or give another --state-dir\n"
        )

        # The first's services named again, its metrics port too: refused before anything
        # is written (it used to reset the demo's subjects, then fail on the port).
        before = demo_labels(env)
        second = subprocess.run(
            [sys.executable, "-m", "monitor", "up", "--state-dir", str(tmp_path / "second")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"the metrics port 127.0.0.1:{ports[2]}" in second.stderr
        assert "is in use" in second.stderr
        assert demo_labels(env) >= before

        # Named services and a free metrics port: it joins them, resetting nothing.
        before = demo_labels(env)
        log_before = len(audit_log(env))
        assert log_before > 0
        third, banner = launch_up(tmp_path / "third", env, "--no-worker")
        assert "found running: named" in banner, banner + third.stderr.read()  # type: ignore[union-attr]
        assert demo_labels(env) >= before
        third.send_signal(signal.SIGINT)
        third.communicate(timeout=60)
        assert third.returncode == 0
        log_after = audit_log(env)
        assert len(log_after) >= log_before
        # The first is still whole: its services were not stopped by the third.
        assert all(port_open("127.0.0.1", port) for port in ports)
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)


def test_up_leaves_a_redis_on_its_default_port_untouched(tmp_path: Path) -> None:
    """A Redis on the port `up` would use by default (here one of the test's: never the
    machine's 6379) is left as it is: `up` starts its own elsewhere and says where."""
    from monitor.runtime._services import start_redis

    theirs_port = free_port()
    theirs = start_redis(theirs_port, tmp_path / "theirs")
    client = redis_client(theirs_port)
    try:
        client.mset({"theirs:a": "1", "theirs:b": "2", "driftgate:kinds": "x"})
        keys_before = client.dbsize()
        defaults = {"kafka": free_port(), "redis": theirs_port, "metrics": free_port()}
        # `driftgate up` itself, with its default ports pointed at the test's.
        command = [
            sys.executable,
            "-c",
            "import sys; from monitor import cli; from monitor.runtime import _up_services as s; "
            f"s.DEFAULT_PORTS.update({defaults!r}); sys.exit(cli.main(['up']+sys.argv[1:]))",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTGATE_")}
        up, banner = launch_up(tmp_path / "state", env, command=command)
        try:
            assert "(started: nothing named it)" in banner, banner + up.stderr.read()  # type: ignore[union-attr]
            assert f"127.0.0.1:{defaults['kafka']} (started" in banner, banner
            assert f"redis://127.0.0.1:{theirs_port}/" not in banner, banner
            own = int(banner.split("  redis    redis://127.0.0.1:")[1].split("/")[0])
            wait_until(lambda: demo_labels(env_for(banner, env)) > 0, 60, "no demo labels")
            assert client.dbsize() == keys_before
            assert client.get("driftgate:kinds") == b"x"
        finally:
            up.send_signal(signal.SIGINT)
            up.communicate(timeout=60)
        assert up.returncode == 0
        assert client.dbsize() == keys_before
        assert not port_open("127.0.0.1", own)
    finally:
        client.close()
        theirs.stop()


def redis_client(port: int) -> Any:
    import redis

    return redis.Redis(port=port)


def env_for(banner: str, env: dict[str, str]) -> dict[str, str]:
    """The variables that point a command at the services an `up` printed."""
    kafka = banner.split("  kafka    ")[1].split()[0]
    redis_url = banner.split("  redis    ")[1].split()[0]
    return {**env, "DRIFTGATE_KAFKA_BOOTSTRAP": kafka, "DRIFTGATE_REDIS_URL": redis_url}


def test_kill_9_of_up_stops_what_it_started(tmp_path: Path) -> None:
    up, ports, banner = start_up(tmp_path)
    worker = worker_pid(banner)
    os.kill(up.pid, signal.SIGKILL)
    up.communicate(timeout=10)
    wait_until(
        lambda: not any(port_open("127.0.0.1", port) for port in ports),
        30,
        "a broker, Redis or worker outlived `up`'s kill -9",
    )
    wait_until(lambda: not pid_alive(worker), 30, "the worker outlived `up`'s kill -9")
    # Its state directory is free again: the kernel let go of the lock.
    up, ports, _ = start_up(tmp_path)
    up.send_signal(signal.SIGINT)
    up.communicate(timeout=60)
    assert up.returncode == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

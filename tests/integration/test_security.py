"""Security: Redis passwords (and TLS) and Kafka's SASL settings pass through; no secret
appears in a log, a metric, status, the API or an error; the endpoints bind to loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from monitor.runtime._services import ServiceProcess, free_port, start_redis, wait_for_port
from monitor.store import KeyLayout, ReadModel

from .conftest import Deployment, RedisServer, encode, label
from .test_cli_errors import run_all

pytestmark = pytest.mark.integration

# Characters a URL must escape, so both the written and the decoded form are looked for.
PASSWORD = "hunter2-S3cret/p@ss:word"
WRONG_PASSWORD = "wr0ng-Passw0rd"
SASL_PASSWORD = "kafka-S3cret-pw"
WEBHOOK_TOKEN = "T0KEN-b4d9e1"
API_TOKEN = "api-T0ken-0f-the-security-test"
SECRETS = (
    PASSWORD,
    quote(PASSWORD, safe=""),
    WRONG_PASSWORD,
    SASL_PASSWORD,
    WEBHOOK_TOKEN,
    API_TOKEN,
)


def with_password(port: int, password: str, scheme: str = "redis") -> str:
    return f"{scheme}://:{quote(password, safe='')}@127.0.0.1:{port}/0"


@dataclass
class PasswordRedis(RedisServer):
    """A Redis that requires a password (``requirepass``), which its URL carries."""

    password: str = PASSWORD

    @property
    def url(self) -> str:
        return with_password(self.ports[0], self.password)

    def start(self) -> None:
        self.processes = [
            start_redis(self.ports[0], self.directory, appendonly=False, password=self.password)
        ]


@pytest.fixture
def secured(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Deployment]:
    server = PasswordRedis(tmp_path / "redis")
    server.start()
    deployment = Deployment(kafka_bootstrap, server, tmp_path)
    yield deployment
    deployment.stop_workers()
    server.stop()


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {where}: {text[-2000:]}"


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on ``port`` (Linux's /proc/net)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        with open(table) as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    raw = bytes.fromhex(address)
                    if width == 8:
                        found.add(".".join(str(b) for b in reversed(raw)))
                    else:
                        found.add(raw.hex())
    return found


API_PATHS = ("/metrics", "/healthz", "/v1/gates", "/v1/gates/residual_drift/judge")


def get(url: str, token: str | None = API_TOKEN) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return (
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
            .read()
            .decode()
        )
    except urllib.error.HTTPError as error:  # 401, 404 and 503 answers are JSON too
        return error.read().decode()


def test_a_password_in_the_redis_url_never_shows(secured: Deployment, tmp_path: Path) -> None:
    webhook = f"http://127.0.0.1:{free_port()}/hooks/{WEBHOOK_TOKEN}"  # nothing listens
    worker = secured.start_worker(DRIFTGATE_WEBHOOK_URL=webhook, DRIFTGATE_API_TOKEN=API_TOKEN)
    biased = [label(f"b-{i}", "judge", 0.2, 0.9) for i in range(200)]  # FAIL, action alert
    secured.produce("labels", [encode(biased[:100]), encode(biased[100:])])
    secured.wait_for_count("labels", "ok", 200)

    def webhook_attempted() -> bool:
        client = secured.redis_server.client()
        try:
            return any(r.get("kind") == "webhook" for r in ReadModel(client, KeyLayout()).audit())
        finally:
            client.close()

    # The webhook's failed attempts reach the audit log (where it went, not the token).
    secured.wait_for(webhook_attempted, 30, "a webhook attempt")
    metrics_url = f"http://127.0.0.1:{worker.metrics_port}"  # type: ignore[attr-defined]
    seen = {path: get(metrics_url + path) for path in API_PATHS}
    assert 'driftgate_gate_status{gate="residual_drift",subject="judge"} 2.0' in seen["/metrics"]
    assert "residual_bias" in seen["/v1/gates/residual_drift/judge"]
    # The worker's token guards the API (not /metrics, nor /healthz).
    seen["unauthorized"] = get(metrics_url + "/v1/gates", token=None)
    assert "needs DRIFTGATE_API_TOKEN" in seen["unauthorized"]
    assert "driftgate_gate_status" in get(metrics_url + "/metrics", token=None)
    # Bound to loopback (the default), and only there.
    assert listening_addresses(worker.metrics_port) == {"127.0.0.1"}  # type: ignore[attr-defined]

    # The commands, with every secret setting there is (SASL unused by these: not checked
    # against a broker here), and the refusals: a wrong password, a malformed URL, a
    # worker that cannot log in, `up` that will not start a TLS Redis.
    env = secured.env(
        DRIFTGATE_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        DRIFTGATE_KAFKA_SASL_USERNAME="driftgate",
        DRIFTGATE_KAFKA_SASL_PASSWORD=SASL_PASSWORD,
        DRIFTGATE_WEBHOOK_URL=webhook,
        DRIFTGATE_API_TOKEN=API_TOKEN,
        HOME=str(tmp_path),
    )
    port = secured.redis_server.ports[0]
    wrong = with_password(port, WRONG_PASSWORD)
    tls = with_password(free_port(), PASSWORD, scheme="rediss")
    cases: list[tuple[list[str], str | None, int, str]] = [
        (["status"], None, 0, "judge: FAIL"),
        (["status", "--json"], None, 0, '"verdict": "FAIL"'),
        (["log"], None, 0, "attempt 1"),
        (["log", "--json"], None, 0, '"url": "http://127.0.0.1:'),
        (["status"], wrong, 1, "refused the credentials"),
        (["log"], wrong.replace(f":{port}/", ":port/"), 2, "must be a Redis URL"),
        (["worker"], wrong, 1, "refused the credentials"),
        (["up", "--no-demo"], tls, 1, "does not start one with TLS"),
        # Beyond loopback without the token: refused before anything starts.
        (["worker", "--metrics-host", "0.0.0.0"], None, 2, "DRIFTGATE_API_TOKEN is required"),
    ]
    envs = {i: {**env, "DRIFTGATE_REDIS_URL": url} for i, (_, url, _, _) in enumerate(cases) if url}
    envs[len(cases) - 1] = {k: v for k, v in env.items() if k != "DRIFTGATE_API_TOKEN"}
    outcomes = run_all([argv for argv, _, _, _ in cases], env, envs)
    for (argv, _, status, message), outcome in zip(cases, outcomes, strict=True):
        text = outcome.stdout + outcome.stderr
        assert outcome.status == status and message in text, (argv, text[-2000:])
        seen[f"{' '.join(argv)} ({status})"] = text

    secured.stop_workers()
    seen["worker log"] = secured.worker_log(0).decode(errors="replace")
    assert "redis://:***@127.0.0.1" in seen["worker log"]  # the address, without the password
    for where, text in seen.items():
        assert_no_secret(where, text)


def test_rediss_with_a_password_passes_through(tmp_path: Path) -> None:
    """A TLS Redis that requires a password: the URL's ``rediss://``, password and CA
    option reach the client; a certificate it cannot verify fails naming Redis."""
    openssl, server = shutil.which("openssl"), shutil.which("redis-server")
    if openssl is None or server is None:
        pytest.skip("needs openssl and redis-server")
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        [
            server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(tmp_path / "cert.pem"),
            "--tls-key-file", str(tmp_path / "key.pem"),
            "--tls-ca-cert-file", str(tmp_path / "cert.pem"),
            "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "",
            "--dir", str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    tls = ServiceProcess("redis", str(port), process)
    try:
        wait_for_port("127.0.0.1", port, 15.0, process)
        url = with_password(port, PASSWORD, scheme="rediss")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTGATE_")}
        pairs = tmp_path / "pairs.jsonl"
        pairs.write_text("".join(f'{{"s": {i / 20}, "y": {i / 20}}}\n' for i in range(20)))
        trusted = {**env, "DRIFTGATE_REDIS_URL": f"{url}?ssl_ca_certs={tmp_path / 'cert.pem'}"}
        written, status, untrusted = run_all(
            [["calibrate", str(pairs), "--stream", "tls"], ["status", "--json"], ["status"]],
            trusted,
            {2: {**env, "DRIFTGATE_REDIS_URL": url}},  # the system's CAs do not know this one
        )
        assert written.status == 0 and "isotonic calibrator v1" in written.stdout, written
        assert status.status == 0 and '"tls"' in status.stdout, status
        assert untrusted.status == 1 and untrusted.seconds < 15, untrusted
        assert "Redis unreachable at rediss://:***@127.0.0.1" in untrusted.stderr
        assert "certificate verify failed" in untrusted.stderr
        for outcome in (written, status, untrusted):
            assert_no_secret(" ".join(outcome.argv), outcome.stdout + outcome.stderr)
    finally:
        tls.stop()


def test_kafka_sasl_settings_reach_the_broker_and_a_refusal_names_kafka(
    tmp_path: Path,
) -> None:
    """The embedded broker with authentication on (and no user it would accept): the
    SASL settings are offered, refused, and the refusal names Kafka, not the password."""
    from monitor.runtime._services import broker_binary

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    with open(tmp_path / "broker.log", "wb") as log:
        process = subprocess.Popen(
            [
                broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
                url, "--storage-engine", "memory://tansu/", "--authentication",
            ],
            env={**os.environ, "NO_COLOR": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    broker = ServiceProcess("kafka", url, process)
    redis_server = RedisServer(tmp_path / "redis")
    redis_server.start()
    try:
        wait_for_port("127.0.0.1", port, 15.0, process)
        events = tmp_path / "events.jsonl"
        events.write_bytes(encode(label("e1", "judge", 0.5, 0.4)) + b"\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTGATE_")}
        env.update(
            DRIFTGATE_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}",
            DRIFTGATE_REDIS_URL=redis_server.url,
            DRIFTGATE_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
            DRIFTGATE_KAFKA_SASL_USERNAME="driftgate",
            DRIFTGATE_KAFKA_SASL_PASSWORD=SASL_PASSWORD,
            DRIFTGATE_METRICS_PORT=str(free_port()),
        )
        produce = ["produce", str(events), "--topic", "labels"]
        scram = {**env, "DRIFTGATE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}
        plain = {**env, "DRIFTGATE_KAFKA_SASL_MECHANISM": "PLAIN"}
        outcomes = run_all([produce, ["worker"], produce], scram, {2: plain})
        for outcome, message in zip(
            outcomes,
            [
                f"Kafka at 127.0.0.1:{port} refused the SASL SCRAM-SHA-512 credentials",
                f"Kafka at 127.0.0.1:{port} refused the SASL SCRAM-SHA-512 credentials",
                "DRIFTGATE_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT: check it",
            ],
            strict=True,
        ):
            shown = f"{outcome.argv}: {outcome.stderr!r}"
            assert outcome.status == 1 and outcome.seconds < 15, shown
            assert outcome.stderr.count("\n") == 1 and message in outcome.stderr, shown
            assert_no_secret(" ".join(outcome.argv), outcome.stdout + outcome.stderr)
        # The PLAIN client offered its mechanism in a SASL handshake (which this broker,
        # SCRAM only, refused): the settings reached the broker.
        assert "Sasl(NoSharedMechanism)" in (tmp_path / "broker.log").read_text(errors="replace")
    finally:
        broker.stop()
        redis_server.stop()

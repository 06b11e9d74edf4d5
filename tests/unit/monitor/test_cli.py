"""CLI commands that need no service: plan, and usage errors (exit status 2)."""

from __future__ import annotations

import argparse
import io
import math
import os
import shlex
import signal
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from estimators import VarianceModel, plan_for_budget
from monitor.cli import build_parser, main
from monitor.cli._parser import EXAMPLES
from monitor.cli._up import StopRequested, _Console, _news, _StopSignals
from monitor.events._decisions import GateDocument


@pytest.fixture(autouse=True)
def _nothing_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Services at closed ports (never the Redis on 6379): a command that went past its
    checks would exit 1, not 2."""
    for variable in list(os.environ):
        if variable.startswith("DRIFTGATE_"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("DRIFTGATE_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("DRIFTGATE_KAFKA_BOOTSTRAP", "127.0.0.1:1")


def test_plan_from_r2_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "plan",
            "--budget",
            "5000",
            "--surrogate-cost",
            "0.01",
            "--oracle-cost",
            "0.16",
            "--r2",
            "0.7",
            "--target-mde",
            "0.01",
            "--json",
        ]
    )
    assert code == 0
    document = orjson.loads(capsys.readouterr().out)
    model = VarianceModel.from_r2(0.7)
    expected = plan_for_budget(5000, model, 0.01, 0.16)
    # The contract's fields at the top level: the budget's plan and the variance model.
    assert (document["n_samples"], document["m_oracle"]) == (expected.n_scored, expected.m_labeled)
    assert (document["total_cost"], document["mde"]) == (expected.total_cost, expected.mde)
    assert (document["sigma2_eval"], document["sigma2_cal"]) == (model.s2_eval, model.s2_cal)
    assert document["total_cost"] <= document["budget"] == 5000
    # The square-root law: m / n = sqrt(s2_cal c_S / (s2_eval c_Y)), to rounding.
    ratio = math.sqrt(model.s2_cal * 0.01 / (model.s2_eval * 0.16))
    assert document["m_oracle"] / document["n_samples"] == pytest.approx(ratio, rel=1e-3)
    target = document["target_mde"]
    assert target["mde_target"] == 0.01 and target["mde"] <= 0.01
    assert target["total_cost"] > 0 and target["m_oracle"] <= target["n_samples"]


def test_plan_from_a_pilot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    s = rng.uniform(size=200)
    pilot = tmp_path / "pilot.jsonl"
    pilot.write_bytes(
        b"\n".join(
            orjson.dumps({"s": float(a), "y": float(a + e)})
            for a, e in zip(s, rng.normal(0, 0.1, 200), strict=True)
        )
    )
    assert (
        main(
            [
                "plan",
                "--budget",
                "100",
                "--surrogate-cost",
                "0.01",
                "--oracle-cost",
                "0.5",
                "--pilot",
                str(pilot),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "pilot n=200" in out and "plan for the budget" in out


def test_plan_needs_exactly_one_variance_source(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["plan", "--budget", "1", "--surrogate-cost", "0.1", "--oracle-cost", "0.1"]
    assert main(argv) == 2
    assert "exactly one of --pilot FILE or --r2 R" in capsys.readouterr().err
    pilot = Path(__file__)  # exists; never read: the usage error comes first
    assert main([*argv, "--r2", "0.5", "--pilot", str(pilot)]) == 2
    assert "exactly one of" in capsys.readouterr().err


def test_argparse_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["status", "--no-such-flag"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


# --- one validation layer: every listed bad input, in process -------------------------

PLAN = ["plan", "--surrogate-cost", "0.01", "--oracle-cost", "0.16"]


def _exit_status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        return int(exit_.code or 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*PLAN, "--budget", "nan", "--r2", "0.5"], "argument --budget: must be a finite number"),
        ([*PLAN, "--budget", "inf", "--r2", "0.5"], "argument --budget: must be a finite number"),
        ([*PLAN, "--budget", "0", "--r2", "0.5"], "argument --budget: must be a positive number"),
        ([*PLAN, "--budget", "0.1", "--r2", "0.5"], "--budget 0.1 does not buy one labeled item"),
        ([*PLAN, "--budget", "100", "--r2", "1"], "argument --r2: must be in [0, 1), got '1'"),
        ([*PLAN, "--budget", "100", "--r2", "0.5", "--target-mde", "-1"], "--target-mde"),
        (["log", "--hours", "nan"], "argument --hours: must be a finite number"),
        (["log", "--hours", "1e300"], "argument --hours: must be a number of hours in 0..876000"),
        (["log", "--hours", "-1"], "argument --hours: must be a number of hours"),
        (["status", "--redis-url", "notaurl"], "argument --redis-url: must be a redis://"),
        (["up", "--metrics-port", "99999"], "argument --metrics-port: must be in 1..65535"),
        (["worker", "--metrics-host", "not a host"], "argument --metrics-host"),
        (["audit", "{file}", "--stream", "s", "--family-size", "0"], "--family-size: must be at"),
        (["audit", "{file}", "--stream", "s", "--alpha", "2"], "--alpha: must be a probability"),
        (["audit", "{file}", "--stream", "s", "--alpha", "nan"], "--alpha: must be a finite"),
        (["audit", "{file}", "--stream", "s", "--margin", "-0.1"], "--margin: must be a positive"),
        (["audit", "{file}", "--stream", "s", "--margin", "nan"], "--margin: must be a finite"),
        (["audit", "{file}", "--stream", ""], "argument --stream: must not be empty"),
        (["calibrate", "{missing}", "--stream", "s"], "argument FILE: must name an existing file"),
        (["promote", "a", "--percent", "150"], "argument --percent: must be a percent"),
        (["rollback", "a", "--reason", "x" * 1001], "argument --reason: must be at most 1000"),
        (["produce", "{file}", "--topic", "bad topic!"], "argument --topic: must hold only"),
        (["produce", "{file}", "--topic", "t" * 250], "argument --topic: must be at most 249"),
        (["produce", "{file}", "--topic", "decisions"], "--topic 'decisions' is not an input"),
        (["produce", "{file}", "--topic", "labels", "--kafka-bootstrap", "k:0"], "bootstrap"),
        (["status", "--nonsense"], "unrecognized arguments: --nonsense"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_input_exits_2_with_one_line_that_names_it(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    probe = tmp_path / "probe.jsonl"
    probe.write_text('{"s": 0.1, "y": 0.2}\n{"s": 0.5, "y": 0.4}\n')
    argv = [
        a.format(file=probe, missing=tmp_path / "missing.jsonl") if "{" in a else a for a in argv
    ]
    assert _exit_status(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert message in lines[0]
    assert lines[0].startswith("driftgate")
    assert "Traceback" not in captured.err


def test_bad_settings_from_the_environment_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        "DRIFTGATE_REDIS_URL": ("redis://:hunter2@127.0.0.1:notaport/0", "DRIFTGATE_REDIS_URL"),
        "DRIFTGATE_KAFKA_BOOTSTRAP": ("kafka:port", "DRIFTGATE_KAFKA_BOOTSTRAP must be host:port"),
        "DRIFTGATE_METRICS_PORT": ("99999", "DRIFTGATE_METRICS_PORT must be in 1..65535"),
        "DRIFTGATE_TOPIC_PREFIX": ("a b", "DRIFTGATE_TOPIC_PREFIX must hold only"),
        "DRIFTGATE_KAFKA_SECURITY_PROTOCOL": ("SASL_SSL", "DRIFTGATE_KAFKA_SASL_USERNAME is"),
    }
    for variable, (value, message) in cases.items():
        with monkeypatch.context() as patch:
            patch.setenv(variable, value)
            assert main(["log", "--hours", "1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
        assert "hunter2" not in err


@pytest.mark.parametrize("command", [["worker"], ["up", "--no-demo"]])
def test_the_api_beyond_loopback_without_a_token_exits_2_before_anything_starts(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Kafka and Redis are at closed ports: a command past the check would exit 1 (or,
    for `up`, start a broker of its own)."""
    assert main([*command, "--metrics-host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "DRIFTGATE_API_TOKEN is required when the HTTP API binds beyond loopback" in err
    assert "DRIFTGATE_METRICS_HOST=0.0.0.0" in err
    monkeypatch.setenv("DRIFTGATE_METRICS_HOST", "::")
    assert main(command) == 2
    assert "DRIFTGATE_API_TOKEN is required" in capsys.readouterr().err


def test_with_the_token_the_worker_goes_on_to_its_services(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DRIFTGATE_API_TOKEN", "a-token-of-the-tests-0123456789")
    assert main(["worker", "--metrics-host", "0.0.0.0"]) == 1  # Redis is at a closed port
    err = capsys.readouterr().err
    assert "Redis" in err and "a-token-of-the-tests-0123456789" not in err


def test_a_bad_token_exits_2_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DRIFTGATE_API_TOKEN", "too short")
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert "DRIFTGATE_API_TOKEN must hold only" in err and "too short" not in err


def test_produce_checks_every_line_before_it_connects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad lines exit 2 naming file and line, before any connection (the bootstrap here
    is a closed port: reaching it would exit 1)."""
    good = '{"event_id": "e1", "ts": 1.7e9, "stream": "judge", "s": 0.5, "y": 0.4}'
    telemetry = (
        '{"event_id": "t1", "ts": 1.7e9, "experiment_id": "x", "unit_id": "u", "variant": "a"}'
    )
    cases = {
        "calibration format": ('{"s": 0.1, "y": 0.2}', ":1: EventValidationError: Object missing"),
        "not JSON": ("{not json", ":2: JSONDecodeError"),
        "wrong topic's event": (telemetry, ":2: EventValidationError"),
        "a bad envelope element": (f'[{good}, {{"event_id": "e2"}}]', "at `$[1]`"),
        "an empty envelope": ("[]", ":2: no events (an empty array)"),
        "a string for s": (good.replace("0.5", '"0.5"'), "Expected `float | null`, got `str`"),
        "over a megabyte": (good.replace('"judge"', '"' + "j" * 1_100_000 + '"'), "bytes, over"),
    }
    for name, (line, message) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        lines = [line] if name == "calibration format" else [good, line]
        path.write_text("\n".join(lines) + "\n")
        argv = ["produce", str(path), "--topic", "labels", "--kafka-bootstrap", "127.0.0.1:1"]
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert f"{path}:" in err and message in err and "nothing was sent" in err, (name, err)
    several = tmp_path / "several.jsonl"
    several.write_text('{"s": 1}\n{"s": 2}\n{"s": 3}\n')
    assert main(["produce", str(several), "--topic", "labels"]) == 2
    assert f"{several}:1: " in (err := capsys.readouterr().err) and "(and 2 more bad lines)" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert main(["produce", str(empty), "--topic", "labels"]) == 2
    assert "no events (an empty file)" in capsys.readouterr().err


def test_an_unreachable_service_exits_1_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"event_id": "e1", "ts": 1.7e9, "stream": "judge", "s": 0.5}\n')
    closed = "127.0.0.1:1"
    assert main(["produce", str(events), "--topic", "labels", "--kafka-bootstrap", closed]) == 1
    assert f"Kafka unreachable at {closed}" in capsys.readouterr().err
    assert main(["status", "--redis-url", "redis://:hunter2@127.0.0.1:1/0"]) == 1
    err = capsys.readouterr().err
    assert "Redis unreachable at redis://:***@127.0.0.1:1/0" in err and "hunter2" not in err


def test_an_unexpected_error_is_one_line_with_secrets_scrubbed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitor.cli import _observe

    def broken(args: object) -> int:
        raise RuntimeError("lost redis://:hunter2@r:6379/0 and s3cr3t")

    monkeypatch.setenv("DRIFTGATE_KAFKA_SASL_PASSWORD", "s3cr3t")
    monkeypatch.setattr(_observe, "cmd_status", broken)
    assert main(["status", "--redis-url", "redis://:hunter2@r:6379/0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected RuntimeError" in err, err
    assert "hunter2" not in err and "s3cr3t" not in err
    monkeypatch.setenv("DRIFTGATE_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["status"])


def test_a_broken_pipe_that_is_not_stdout_is_a_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken pipe to a service (redis-server's stdin in `up`) is exit 1, named; only a
    reader closing standard output ends the command quietly."""
    from monitor.cli import _observe

    def broken(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(_observe, "cmd_status", broken)
    assert main(["status"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected BrokenPipeError" in err, err


# --- help and version -----------------------------------------------------------------


def test_help_shows_an_example_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    (subcommands,) = [
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ]
    assert set(subcommands.choices) == set(EXAMPLES)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    examples = capsys.readouterr().out.split("examples:")[1]
    for command, subparser in subcommands.choices.items():
        assert f"  {EXAMPLES[command][0]}\n" in examples, command
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "exit status: 0 done" in text
        for example in EXAMPLES[command]:
            assert f"  {example}\n" in text.split("example")[-1], (command, example)
            # Each example is a command line the parser takes (a file it names: any file).
            words = shlex.split(example.split("driftgate ", 1)[1])[1:]
            words = [
                __file__ if word.endswith((".jsonl", ".yaml", ".json")) else word for word in words
            ]
            assert subparser.parse_args(words).handler is not None, example


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"driftgate {version('driftgate')}"


# --- `driftgate up`: signals and output -------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_every_stop_signal_stops_up_alike(signum: int) -> None:
    stops = _StopSignals()
    with stops.installed(), pytest.raises(StopRequested, match=signal.Signals(signum).name):
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises before this ends
    assert signal.getsignal(signum) is not stops  # the previous handler is back
    # While a child starts, the stop waits until the child is on the list to stop.
    stops, started = _StopSignals(), []
    with stops.installed(), pytest.raises(StopRequested), stops.deferred():
        os.kill(os.getpid(), signum)
        time.sleep(0.05)
        started.append("child")
    assert started == ["child"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_color_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert _Console(_Terminal()).verdict("FAIL") == "\x1b[31mFAIL\x1b[0m"
    assert _Console(_Terminal()).verdict("INCONCLUSIVE") == "INCONCLUSIVE"
    assert _Console(io.StringIO()).verdict("FAIL") == "FAIL"  # a file or a pipe
    monkeypatch.setenv("NO_COLOR", "1")
    assert _Console(_Terminal()).verdict("FAIL") == "FAIL"


def test_up_prints_a_gates_first_record_a_new_verdict_and_an_escalation() -> None:
    def record(verdict: str, action: str) -> GateDocument:
        return GateDocument("g", "s", verdict, action, "r", None, None, {}, None, "stream")

    assert _news(None, record("INCONCLUSIVE", "none"))  # the first one, whatever it says
    assert _news(("PASS", "none"), record("FAIL", "alert"))
    # A breach judged before the canary's deploy was applied alerts; once the deploy is
    # applied it asks for the rollback: the same verdict, news all the same.
    assert _news(("FAIL", "alert"), record("FAIL", "rollback"))
    assert not _news(("FAIL", "rollback"), record("FAIL", "none"))  # settled: no news
    assert not _news(("FAIL", "alert"), record("FAIL", "alert"))


def test_a_closed_terminal_does_not_stop_the_stopping() -> None:
    stream = _Terminal()
    console = _Console(stream)
    stream.close()  # as a terminal is, once closed (SIGHUP)
    console.say("driftgate up: SIGHUP: stopping everything it started")  # raises nothing


def test_a_reader_that_closes_the_pipe_early_is_not_an_error() -> None:
    """`driftgate plan ... | head -1`: the command stops quietly with exit 0, no traceback
    and no 'unexpected BrokenPipeError'."""
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line is written
    for command in (
        [
            "plan",
            "--r2",
            "0.5",
            "--budget",
            "1000",
            "--surrogate-cost",
            "0.01",
            "--oracle-cost",
            "1",
        ],
        ["--help"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "monitor", *command],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
        assert (done.returncode, done.stderr) == (0, ""), (command, done.stderr)
    os.close(write_end)


def test_a_baseline_file_too_small_is_refused_before_redis_is_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scores = tmp_path / "scores.jsonl"
    scores.write_text('{"s": 0.5}\n{"s": 0.4}\n')
    code = main(
        [
            "baseline",
            "--stream",
            "p",
            "--from-file",
            str(scores),
            "--redis-url",
            "redis://127.0.0.1:1/0",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{scores}: a baseline needs at least 100 scores" in err and "found 2" in err


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"s": 0.5}\n{"s": 1e300}\n', ":2: Expected `float` <= 1e+100 - at `$.s`"),
        (b'{"s": 0.5}\nnot json\n', ":2: JSON is malformed"),
        (b'{"s": 0.5}\n{"y": 1}\n', ":2: Object missing required field `s`"),
        (b"\x1f\x8b\x08\x00", ":1: a gzip file, not JSON Lines"),
    ],
)
def test_a_bad_score_file_names_its_line_and_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, problem: str
) -> None:
    scores = tmp_path / "scores.jsonl"
    scores.write_bytes(content)
    code = main(["baseline", "--stream", "p", "--from-file", str(scores)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{scores}{problem}" in err and err.count("\n") == 1, err

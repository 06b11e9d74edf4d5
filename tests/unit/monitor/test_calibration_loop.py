"""The calibration loop's pieces that need no service: reading pair files (bad files named
by file, line and problem), progress only on a terminal, the stored pair encoding, the
quality table and the next step after an audit."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np
import orjson
import pytest

from estimators import (
    AuditResult,
    DecileResidual,
    calibration_quality,
    residuals_by_decile,
    transport_audit,
)
from monitor.cli import main
from monitor.store._calibrators import StateConflictError, decode_pairs, encode_pairs
from monitor.workflows._audit import next_step
from monitor.workflows._calibration import quality_lines
from monitor.workflows._pairs import InputError, Progress, read_pairs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write_pairs(path: Path, s: np.ndarray, y: np.ndarray) -> Path:
    path.write_bytes(
        b"\n".join(orjson.dumps({"s": float(a), "y": float(b)}) for a, b in zip(s, y, strict=True))
    )
    return path


# --- progress ------------------------------------------------------------------------------


def test_progress_shows_on_a_terminal_at_most_once_a_second_and_erases_itself() -> None:
    terminal, clock = Terminal(), Clock()
    progress = Progress(terminal, every=1.0, clock=clock)
    progress.show("reading: 1 lines")  # within the first second: nothing
    clock.now = 1.5
    progress.show("reading: 2 lines")
    clock.now = 2.0
    progress.show("reading: 3 lines")  # half a second later: nothing
    clock.now = 2.6
    progress.show("reading: 4 lines")
    progress.close()
    assert terminal.getvalue() == (
        "\r\x1b[Kreading: 2 lines\r\x1b[Kreading: 4 lines\r\x1b[K"  # erased at the end
    )


def test_progress_is_silent_in_pipes_and_captured_output() -> None:
    pipe, clock = io.StringIO(), Clock()
    progress = Progress(pipe, every=0.0, clock=clock)
    clock.now = 10.0
    progress.show("reading: 1 lines")
    progress.close()
    assert pipe.getvalue() == "" and not progress.enabled


def test_reading_a_large_file_reports_its_lines_on_a_terminal(tmp_path: Path) -> None:
    count = 3 * 65_536
    path = tmp_path / "large.jsonl"
    path.write_bytes(b'{"s": 0.5, "y": 1}\n' * count)
    terminal = Terminal()
    pairs = read_pairs(path, Progress(terminal, every=0.0))
    assert pairs.s.size == count
    assert f"reading {path}: 131,072 of {count:,} lines" in terminal.getvalue()
    quiet = io.StringIO()
    read_pairs(path, Progress(quiet, every=0.0))
    assert quiet.getvalue() == ""


# --- bad input files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        (b'{"s": 0.1, "y": 0.2}\n{"s": NaN, "y": 1}\n', 2, "JSON is malformed"),
        (b'{"s": 0.1, "y": 0.2}\n{"s": 0.3}\n', 2, "missing required field `y`"),
        (b'{"s": 0.1, "y": 0.2}\n\n{"s": "0.3", "y": 1}\n', 3, "got `str` - at `$.s`"),
        (b'{"s": 0.1, "y": 0.2}\n{"s": 1e300, "y": 1}\n', 2, "<= 1e+100 - at `$.s`"),
        (b'{"s": 0.1, "y": 0.2}\n{"s": 0.1, "y"\n', 2, "truncated"),
        (b"s,y\n0.1,0.2\n", 1, "one JSON object with s and y"),
        (gzip.compress(b'{"s": 0.1, "y": 0.2}\n', mtime=0), 1, "a gzip file, not JSON Lines"),
        (
            b'{"s": 0.1, "y": 0.2, "cluster": "p1"}\n{"s": 0.2, "y": 0.3, "cluster": 7}\n'
            b'{"s": 0.3, "y": 0.4}\n',
            3,
            "no cluster, though line 1 has one ('cluster' is on 2 of 3 lines",
        ),
    ],
)
def test_a_bad_line_is_named_by_file_line_and_problem(
    tmp_path: Path, content: bytes, line: int, problem: str
) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        read_pairs(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert problem in str(caught.value)


def test_a_byte_order_mark_and_crlf_lines_are_read(tmp_path: Path) -> None:
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"s": 0.1, "y": 0.2}\r\n{"s": 0.3, "y": 0.4}\r\n')
    pairs = read_pairs(path)
    assert pairs.s.tolist() == [0.1, 0.3] and pairs.y.tolist() == [0.2, 0.4]


@pytest.mark.parametrize("command", ["calibrate", "audit", "plan"])
def test_every_command_that_reads_pairs_rejects_a_bad_line_with_exit_2(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for variable in list(os.environ):
        if variable.startswith("DRIFTGATE_"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("DRIFTGATE_REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"s": 0.1, "y": 0.2}\n' * 30 + b'{"s": 0.1, "y": true}\n')
    costs = ["--budget", "10", "--surrogate-cost", "0.1", "--oracle-cost", "1"]
    argv = {
        "calibrate": ["calibrate", str(path), "--stream", "s"],
        "audit": ["audit", str(path), "--stream", "s"],
        "plan": ["plan", *costs, "--pilot", str(path)],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"driftgate {command}: {path}:31: Expected `float`, got `bool`")
    assert err.count("\n") == 1


def test_calibrate_without_a_file_needs_pool(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--stream", "s"]) == 2
    assert "give FILE (JSONL with s and y), or --pool" in capsys.readouterr().err


# --- stored pairs --------------------------------------------------------------------------


def test_pairs_round_trip_as_float64_and_a_foreign_value_is_refused() -> None:
    rng = np.random.default_rng(71)
    s, y = rng.uniform(size=1000), rng.normal(size=1000)
    blob = encode_pairs(s, y)
    assert len(blob) == 16 + 16 * 1000
    back_s, back_y = decode_pairs(blob)
    assert np.array_equal(back_s, s) and np.array_equal(back_y, y)
    with pytest.raises(StateConflictError, match="pair format"):
        decode_pairs(blob[:-8])
    with pytest.raises(StateConflictError, match="truncated"):
        decode_pairs(b"dg")


# --- the quality table ---------------------------------------------------------------------


def test_quality_table_shows_the_figures_rounded_for_people() -> None:
    rng = np.random.default_rng(72)
    s = rng.uniform(size=500)
    quality = calibration_quality(s, s**2 + rng.normal(0, 0.05, 500))
    lines = quality_lines(quality)
    assert f"R^2 {quality.r2:.3f}" in lines[0]
    assert f"mean absolute error {quality.mean_absolute_error:.4f}" in lines[0]
    assert lines[1].split() == [
        "decile", "n", "score", "range", "mean", "S", "mean", "Y", "mean", "f(S)", "mean",
        "residual",
    ]  # fmt: skip
    first = quality.deciles[0]
    assert lines[2].split()[:2] == ["1", "50"]
    assert f"{first.mean_residual:+.4f}" in lines[2]
    assert len(lines) == 12


# --- next step after an audit --------------------------------------------------------------


def audit_of(
    bias: float, noise: float, margin: float | None = None, seed: int = 73
) -> tuple[AuditResult, list[DecileResidual]]:
    rng = np.random.default_rng(seed)
    s = rng.uniform(size=60)
    residuals = bias + rng.normal(0, noise, 60)
    result = transport_audit(residuals, margin=margin)
    return result, residuals_by_decile(s, residuals)


def test_pass_says_reuse_and_how_to_pool() -> None:
    result, deciles = audit_of(0.0, 0.1)
    assert result.status == "PASS"
    step = next_step(result, deciles, "policy:a", "probe.jsonl", 3)
    assert step.action == "reuse"
    assert step.text.startswith("reuse calibrator v3")
    assert step.command == "driftgate audit probe.jsonl --stream policy:a --pool"
    pooled = next_step(result, deciles, "policy:a", "probe.jsonl", 3, pooled=True)
    assert pooled.command == "driftgate calibrate --stream policy:a --pool"


def test_warn_says_enlarge_the_probe_and_names_the_worst_decile() -> None:
    result, deciles = audit_of(0.03, 0.01)
    assert result.status == "WARN"
    step = next_step(result, deciles, "policy:a", "probe.jsonl", 1)
    worst = max(deciles, key=lambda d: abs(d.mean_residual))
    assert step.action == "enlarge_probe" and step.worst_decile == worst
    assert "enlarge the next probe to at least 120 labels" in step.text
    assert f"the worst is decile {worst.decile} " in step.text
    assert f"mean residual {worst.mean_residual:+.4f}" in step.text


def test_fail_says_collect_stratified_labels_and_gives_the_command() -> None:
    result, deciles = audit_of(0.1, 0.05)
    assert result.status == "FAIL"
    step = next_step(result, deciles, "policy:a b", "probe.jsonl", 2)
    assert step.action == "recalibrate"
    assert "collect 100-200 more target labels stratified by score decile" in step.text
    assert step.command == "driftgate calibrate TARGET_LABELS.jsonl --stream 'policy:a b'"
    assert step.text.endswith(step.command)


def test_equivalence_verdicts_have_their_own_next_steps() -> None:
    result, deciles = audit_of(0.0, 0.1, margin=0.2)
    assert result.status == "PASS"
    assert "within +-0.2" in next_step(result, deciles, "a", "p", 1).text

    result, deciles = audit_of(0.01, 0.1, margin=0.04)
    assert result.status == "INCONCLUSIVE"
    step = next_step(result, deciles, "a", "p", 1)
    assert step.action == "label_more" and step.labels_needed is not None
    half = (result.interval.high - result.interval.low) / 2
    total = result.n + step.labels_needed
    # With that many labels the interval (same spread) fits; with one fewer it does not.
    room = 0.04 - abs(result.delta)
    assert half * np.sqrt(result.n / total) < room <= half * np.sqrt(result.n / (total - 1))
    assert f"Label about {step.labels_needed} more probe items" in step.text

    result, deciles = audit_of(0.06, 0.1, margin=0.05)
    assert result.status == "INCONCLUSIVE" and abs(result.delta) >= 0.05
    step = next_step(result, deciles, "a", "p", 1)
    assert step.action == "recalibrate" and "treat it as a FAIL" in step.text

    result, deciles = audit_of(0.3, 0.05, margin=0.05)
    assert result.status == "FAIL"
    assert next_step(result, deciles, "a", "p", 1).action == "recalibrate"


def test_a_pilot_whose_labels_are_all_equal_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Its variance would be 0 and the plan a division by zero (exit 1 before).
    s = np.linspace(0, 1, 20)
    pilot = write_pairs(tmp_path / "pilot.jsonl", s, np.ones(20))
    costs = ["--budget", "100", "--surrogate-cost", "0.01", "--oracle-cost", "1"]
    assert main(["plan", *costs, "--pilot", str(pilot)]) == 2
    assert f"{pilot}: every label is 1: a pilot needs labels that vary" in capsys.readouterr().err
    short = write_pairs(tmp_path / "short.jsonl", s[:9], s[:9])
    assert main(["plan", *costs, "--pilot", str(short)]) == 2
    assert "a pilot needs at least 10 labeled pairs, found 9" in capsys.readouterr().err

"""CLI commands that need no service: plan, and usage errors (exit status 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from estimators import VarianceModel, plan_for_budget
from monitor.cli import main


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
    expected = plan_for_budget(5000, VarianceModel.from_r2(0.7), 0.01, 0.16)
    assert document["budget"]["n_scored"] == expected.n_scored
    assert document["budget"]["m_labeled"] == expected.m_labeled
    assert document["target_mde"]["mde"] <= 0.01


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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["plan", "--budget", "1", "--surrogate-cost", "1", "--oracle-cost", "1"],
            "exactly one of",
        ),
        (
            [
                "plan",
                "--budget",
                "-1",
                "--surrogate-cost",
                "1",
                "--oracle-cost",
                "1",
                "--r2",
                "0.5",
            ],
            "--budget must be positive",
        ),
        (
            ["plan", "--budget", "1", "--surrogate-cost", "1", "--oracle-cost", "1", "--r2", "2"],
            "--r2 must be in [0, 1]",
        ),
    ],
)
def test_bad_plan_usage_exits_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_argparse_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["status", "--no-such-flag"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2

"""The demo's pre-registered A/B experiment through a real broker, Redis and worker: the
registry, ``plan --experiment``, the memo of ``report EXPERIMENT`` with every item of the
analysis, and a policy change after the start recorded as a deviation."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import orjson
import yaml

from estimators import cuped_sample_size, two_proportion_sample_size
from monitor.presentation._format import count, number
from monitor.runtime._demo import (
    DEMO_EXPERIMENT,
    DEMO_EXPERIMENT_POLICY,
    ab_telemetry,
    demo_policy,
)

from .conftest import Deployment, encode

ENVELOPES = 300  # 15,000 units: past the anytime-valid plan's 2,688 per arm


def _policy(path: Path, **changes: object) -> Path:
    document = demo_policy()
    document["experiments"][DEMO_EXPERIMENT] = {**DEMO_EXPERIMENT_POLICY, **changes}
    path.write_text(yaml.safe_dump(document))
    return path


def _send(deployment: Deployment, rng: np.random.Generator, first: int, envelopes: int) -> int:
    values = [
        encode(ab_telemetry(rng, "it", (first + k) * 50, time.time())) for k in range(envelopes)
    ]
    deployment.produce("telemetry", values, [DEMO_EXPERIMENT.encode()] * len(values))
    return sum(len(orjson.loads(v)) for v in values)


def test_report_of_the_demo_experiment_shows_every_item(
    deployment: Deployment, tmp_path: Path
) -> None:
    policy = _policy(tmp_path / "policy.yaml")
    deployment.start_worker(DRIFTGATE_CONFIG=str(policy))
    rng = np.random.default_rng(7)
    sent = _send(deployment, rng, 0, ENVELOPES)
    deployment.wait_for_count("telemetry", "ok", sent, timeout=120)

    status = deployment.status()["experiments"][DEMO_EXPERIMENT]
    analysis = status["analysis"]
    treatment = analysis["variants"]["treatment"]
    assert analysis["registered"] and analysis["deviations"] == []

    # The registry lists it, decided, with where its memo goes.
    listed = deployment.cli("experiments", "--json", DRIFTGATE_CONFIG=str(policy))
    assert listed.returncode == 0, listed.stderr
    (row,) = orjson.loads(listed.stdout)["experiments"]
    assert row["experiment"] == DEMO_EXPERIMENT
    assert sorted(row["variants"]) == ["control", "treatment"]
    assert row["pre_registered"] and row["first_event"] and row["last_event"]
    assert row["decision"] == analysis["recommendation"]["decision"]
    assert row["status"] == ("decided" if row["decision"] in ("ship", "iterate") else "running")

    # plan --experiment sizes it by the guide's formula and CUPED's.
    planned = deployment.cli(
        "plan", "--experiment", DEMO_EXPERIMENT, "--json", DRIFTGATE_CONFIG=str(policy)
    )
    assert planned.returncode == 0, planned.stderr
    plan = orjson.loads(planned.stdout)
    n = two_proportion_sample_size(0.6, 0.05, 0.05, 0.8)
    assert plan["n_per_arm"] == n == analysis["plan"]["n_per_arm"]
    assert plan["n_per_arm_cuped"] == cuped_sample_size(n, 0.08)
    assert plan["n_per_arm_anytime"] > plan["n_per_arm_cuped"]

    out = tmp_path / "memo"
    result = deployment.cli("report", DEMO_EXPERIMENT, "--out", str(out))
    assert result.returncode == 0, result.stderr
    memo = (out / "report.md").read_text()
    assert (out / "report.html").is_file()
    # The pre-registered MDE and power, with the power achieved.
    assert "| MDE | 0.05 |" in memo
    power = treatment["power"]
    assert (
        f"| power | 0.8 | treatment: fixed-horizon {number(power['fixed_horizon'], '.3f')}, "
        f"anytime-valid {number(power['anytime'], '.3f')} |"
    ) in memo
    assert f"{count(n)} (CUPED {count(plan['n_per_arm_cuped'])}" in memo
    # Effect sizes with anytime-valid intervals: difference (CUPED), ratio, Hedges' g.
    difference = treatment["difference"]
    assert treatment["cuped"]["applied"] and difference["ci_low"] < difference["ci_high"]
    assert f"| treatment | difference (CUPED) | {difference['estimate']:+.4f} [" in memo
    assert f"| treatment | ratio to control | {treatment['ratio']['estimate']:.4f} [" in memo
    assert f"| treatment | Hedges' g | {treatment['hedges_g']:+.3f} |" in memo
    # CUPED's theta and R^2.
    cuped = treatment["cuped"]
    assert f"| treatment | {cuped['theta']:.4f} | {cuped['r2']:.4f} |" in memo
    # Balance (split test, pre-period) and missingness.
    assert "| split (SRM) | all |" in memo and "| pre-period balance | treatment |" in memo
    assert "| primary outcome missing | treatment |" in memo
    # Subgroups under BH: one row per segment.
    assert "Benjamini-Hochberg" in memo
    for cell in treatment["subgroups"]:
        assert f"| treatment | {cell['segment']} |" in memo
    assert len(treatment["subgroups"]) == 3
    # Non-inferiority where the margin is declared.
    assert f"| treatment | 0.02 | {number(treatment['non_inferiority']['ci_low'])} |" in memo
    # Guardrail outcomes, cost deltas.
    assert f"Guardrail gate: {analysis['guardrails']}" in memo
    assert "| treatment | toxicity_rate |" in memo
    assert "Cost deltas" in memo and f"{treatment['cost']['relative']['estimate']:+.2%}" in memo
    # Ship / hold / iterate, and the sign-off.
    decision = analysis["recommendation"]["decision"]
    assert decision in ("ship", "hold", "iterate")
    assert f"Recommendation: {decision}" in memo
    assert f"Recommended: {decision}" in memo.split("## Sign-off")[1]
    assert "Signature:" in memo.split("## Sign-off")[1]
    # The demo's treatment beats control by 7 points: with 15,000 units it ships.
    assert (decision, analysis["recommendation"]["variant"]) == ("ship", "treatment")

    # A change after the start is a deviation: logged, shown, the locked plan kept.
    deployment.stop_workers()
    changed = _policy(tmp_path / "changed.yaml", mde=0.03)
    deployment.start_worker(DRIFTGATE_CONFIG=str(changed))
    sent += _send(deployment, rng, ENVELOPES, 1)
    deployment.wait_for_count("telemetry", "ok", sent, timeout=60)
    log = deployment.cli("log", "--json")
    assert log.returncode == 0, log.stderr
    deviations = [e for e in orjson.loads(log.stdout) if e.get("kind") == "deviation"]
    assert [d["changes"] for d in deviations] == [{"mde": [0.05, 0.03]}]
    text_log = deployment.cli("log")
    assert "deviation" in text_log.stdout and "mde 0.05 -> 0.03" in text_log.stdout
    result = deployment.cli("report", DEMO_EXPERIMENT, "--out", str(out))
    assert result.returncode == 0, result.stderr
    memo = (out / "report.md").read_text()
    assert "| MDE | 0.05 |" in memo and "mde 0.05 -> 0.03" in memo
    assert "deviations: 1" in memo

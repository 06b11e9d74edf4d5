from __future__ import annotations

import numpy as np

from estimators import SampleRatioSequence, SplitCounts
from monitor.gates._srm import srm_gate

VARIANTS = ["canary", "control"]  # sorted, as the experiments keep them


def test_a_broken_split_holds() -> None:
    """10% declared, 30% observed: the assignment is broken; HOLD, never a rollback."""
    sequence = SampleRatioSequence([0.1, 0.9]).update([300, 700])
    verdict = srm_gate("agent", sequence, VARIANTS, 0.001, 100)
    assert (verdict.gate, verdict.subject) == ("srm", "agent")
    assert (verdict.verdict, verdict.action, verdict.reason) == ("HOLD", "hold", "srm")
    evidence = verdict.evidence
    assert evidence["counts"] == {"canary": 300, "control": 700}
    assert evidence["expected"] == {"canary": 0.1, "control": 0.9}
    assert evidence["n"] == 1000 and evidence["threshold"] == 0.001
    assert evidence["p_value"] == evidence["estimate"] == sequence.p_value
    assert evidence["p_value"] <= 0.001
    assert evidence["method"] == "dirichlet_multinomial_e_process"


def test_a_mismatch_once_seen_keeps_holding() -> None:
    """The p-value is a running minimum: later traffic on plan does not clear it."""
    sequence = SampleRatioSequence([0.1, 0.9]).update([300, 700]).update([1000, 9000])
    assert srm_gate("agent", sequence, VARIANTS, 0.001, 100).verdict == "HOLD"


def test_a_matching_split_passes() -> None:
    sequence = SampleRatioSequence([0.1, 0.9])
    for _ in range(20):
        sequence.update([50, 450])
    verdict = srm_gate("agent", sequence, VARIANTS, 0.001, 100)
    assert (verdict.verdict, verdict.action, verdict.reason) == ("PASS", "none", "no_mismatch")
    assert verdict.evidence["counts"] == {"canary": 1000, "control": 9000}


def test_a_matching_split_on_few_units_is_inconclusive() -> None:
    sequence = SampleRatioSequence([0.1, 0.9]).update([9, 81])
    verdict = srm_gate("agent", sequence, VARIANTS, 0.001, 100)
    assert (verdict.verdict, verdict.action, verdict.reason) == (
        "INCONCLUSIVE",
        "none",
        "insufficient_data",
    )
    assert verdict.evidence["counts"] == {"canary": 9, "control": 81}


def test_without_a_sequence_it_is_inconclusive() -> None:
    verdict = srm_gate("exp", None, [], 0.001, 100)
    assert (verdict.verdict, verdict.action, verdict.reason) == (
        "INCONCLUSIVE",
        "none",
        "insufficient_data",
    )
    assert verdict.evidence == {
        "n": 0,
        "estimate": None,
        "ci_low": None,
        "ci_high": None,
        "threshold": 0.001,
        "method": "dirichlet_multinomial_e_process",
        "counted": None,  # no canary traffic yet: nothing counted
        "capped": False,
    }


def test_three_variants_and_the_alpha_given() -> None:
    sequence = SampleRatioSequence([1 / 3, 1 / 3, 1 / 3]).update([400, 300, 300])
    assert 0.001 < sequence.p_value < 0.01
    assert srm_gate("exp", sequence, ["a", "b", "c"], 0.01, 100).verdict == "HOLD"
    strict = srm_gate("exp", sequence, ["a", "b", "c"], 0.001, 100)
    assert strict.verdict == "PASS"
    assert strict.evidence["counts"] == {"a": 400, "b": 300, "c": 300}


def test_a_split_with_all_traffic_on_one_side_is_not_applicable() -> None:
    """A canary at 0% or 100%: there is no split to test, whatever the counts say."""
    broken = SampleRatioSequence([0.1, 0.9]).update([300, 700])
    for sequence in (broken, None):
        verdict = srm_gate("agent", sequence, VARIANTS, 0.001, 100, applicable=False)
        assert (verdict.verdict, verdict.action, verdict.reason) == (
            "PASS",
            "none",
            "not_applicable",
        )
        assert verdict.evidence["method"] == "dirichlet_multinomial_e_process"


def test_the_evidence_says_what_was_counted_and_whether_it_froze() -> None:
    split = SplitCounts(cap=3)
    split.update(["canary", "control"], np.array([1, 2], dtype=np.uint64))
    sequence = SampleRatioSequence([0.1, 0.9]).update([1, 1])
    evidence = srm_gate("agent", sequence, VARIANTS, 0.001, 100, split=split).evidence
    assert (evidence["counted"], evidence["capped"], evidence["cap"]) == ("units", False, 3)
    split.update(["control", "control"], np.array([3, 4], dtype=np.uint64))
    evidence = srm_gate("agent", sequence, VARIANTS, 0.001, 100, split=split).evidence
    assert (evidence["counted"], evidence["capped"]) == ("units", True)
    events = SplitCounts(units=False)
    evidence = srm_gate("agent", sequence, VARIANTS, 0.001, 100, split=events).evidence
    assert (evidence["counted"], evidence["capped"], "cap" in evidence) == ("events", False, False)

"""The sample ratio mismatch gate: does the traffic split match the declared one?"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from estimators import SampleRatioSequence, SplitCounts

from ._verdict import Verdict

__all__ = ["srm_gate"]

GATE = "srm"


def srm_gate(
    subject: str,
    sequence: SampleRatioSequence | None,
    variants: Sequence[str],
    alpha: float,
    min_n: int,
    applicable: bool = True,
    split: SplitCounts | None = None,
) -> Verdict:
    """HOLD when the sequential test rejects the declared split at ``alpha``.

    A split that does not match the one declared (10% to the canary, say) means the
    assignment is broken and no comparison of the variants can be trusted: the verdict
    is HOLD (reason ``srm``), never a rollback. The test is Lindon and Malek's
    anytime-valid multinomial e-process, so checking it after every batch is safe.

    ``split`` is what feeds it: the evidence says what one count is (``counted``:
    ``units`` or ``events``) and whether the counts froze at their cap (``capped``,
    with ``cap``), so that a reader knows the test stopped gaining power there.
    Before the stage's canary traffic starts there is no split (nor a test): the
    verdict is INCONCLUSIVE, ``counted`` None.
    """
    evidence: dict[str, Any] = {
        "n": 0 if sequence is None else sequence.n,
        "estimate": None if sequence is None else sequence.p_value,
        "ci_low": None,
        "ci_high": None,
        "threshold": alpha,
        "method": "dirichlet_multinomial_e_process",
        "counted": None if split is None else split.counted,
        "capped": False if split is None else split.full,
    }
    if split is not None and split.units:
        evidence["cap"] = split.cap
    if not applicable:  # all traffic on one side (a canary at 0% or 100%): no split to test
        return Verdict(GATE, subject, "PASS", "none", "not_applicable", evidence)
    if sequence is None:
        return Verdict(GATE, subject, "INCONCLUSIVE", "none", "insufficient_data", evidence)
    evidence.update(
        p_value=sequence.p_value,
        counts=dict(zip(variants, sequence.counts, strict=True)),
        expected=dict(zip(variants, sequence.expected, strict=True)),
    )
    if sequence.rejects(alpha):
        return Verdict(GATE, subject, "HOLD", "hold", "srm", evidence)
    if sequence.n < min_n:
        return Verdict(GATE, subject, "INCONCLUSIVE", "none", "insufficient_data", evidence)
    return Verdict(GATE, subject, "PASS", "none", "no_mismatch", evidence)

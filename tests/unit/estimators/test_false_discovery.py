from __future__ import annotations

import numpy as np
import pytest

from estimators import benjamini_hochberg


def test_benjamini_hochberg_by_hand() -> None:
    p = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205])
    adjusted, reject = benjamini_hochberg(p, 0.05)
    ranked = p * p.size / np.arange(1, p.size + 1)
    by_hand = np.minimum.accumulate(ranked[::-1])[::-1]
    assert adjusted == pytest.approx(by_hand)
    assert reject.tolist() == [True, True] + [False] * 6

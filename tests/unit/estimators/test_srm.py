from __future__ import annotations

import math
from collections import Counter

import numpy as np
import orjson
import pytest
from scipy import stats
from scipy.special import gammaln, xlogy

from estimators import SampleRatioSequence, SplitCounts

PATHS = 2000


def log_e_values(
    counts: np.ndarray, expected: list[float], concentration: float = 100.0
) -> np.ndarray:
    """The class's log e-value for every count vector along the last axis, vectorized."""
    p = np.asarray(expected)
    a = concentration * p
    x = counts.astype(np.float64)
    return (
        gammaln(concentration)
        - gammaln(concentration + x.sum(axis=-1))
        + (gammaln(a + x) - gammaln(a)).sum(axis=-1)
        - xlogy(x, p).sum(axis=-1)
    )


@pytest.mark.parametrize(
    ("expected", "counts", "concentration"),
    [
        ([0.1, 0.9], [12, 88], 100.0),
        ([0.1, 0.9], [30, 70], 100.0),
        ([0.5, 0.3, 0.2], [40, 41, 19], 100.0),
        ([0.25, 0.25, 0.5], [3, 9, 4], 5.0),
    ],
)
def test_e_value_is_the_dirichlet_multinomial_over_multinomial_likelihood_ratio(
    expected: list[float], counts: list[int], concentration: float
) -> None:
    srm = SampleRatioSequence(expected, concentration=concentration).update(counts)
    n = sum(counts)
    mixture = stats.dirichlet_multinomial.pmf(
        counts, alpha=concentration * np.asarray(expected), n=n
    )
    null = stats.multinomial.pmf(counts, n=n, p=expected)
    assert math.exp(srm.log_e_value) == pytest.approx(mixture / null, rel=1e-9)
    assert srm.log_e_value == pytest.approx(log_e_values(np.array(counts), expected, concentration))
    assert srm.counts == counts and srm.n == n


def test_running_maximum_p_value_and_batching() -> None:
    srm = SampleRatioSequence([0.5, 0.5])
    assert (srm.log_e_value, srm.max_log_e_value, srm.p_value) == (0.0, 0.0, 1.0)
    srm.update([70, 30])
    peak = srm.log_e_value
    assert peak > 0 and srm.p_value == pytest.approx(math.exp(-peak))
    srm.update([30, 70])  # back on plan: the e-value falls, the sequential p-value does not
    assert srm.log_e_value < peak
    assert srm.max_log_e_value == peak and srm.p_value == pytest.approx(math.exp(-peak))
    # The e-value depends on the counts only, not on how they were batched.
    one_batch = SampleRatioSequence([0.5, 0.5]).update([100, 100])
    assert one_batch.log_e_value == pytest.approx(srm.log_e_value, rel=1e-12)
    assert one_batch.max_log_e_value < srm.max_log_e_value
    assert srm.rejects(math.exp(-peak) * 1.01) and not srm.rejects(math.exp(-peak) * 0.99)


def test_bad_arguments_and_no_merge() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        SampleRatioSequence([0.2, 0.7])
    with pytest.raises(ValueError, match="positive"):
        SampleRatioSequence([0.0, 1.0])
    with pytest.raises(ValueError, match="2 categories"):
        SampleRatioSequence([1.0])
    with pytest.raises(ValueError, match="concentration"):
        SampleRatioSequence([0.5, 0.5], concentration=0.0)
    srm = SampleRatioSequence([0.5, 0.5])
    with pytest.raises(ValueError, match="2 counts"):
        srm.update([1, 2, 3])
    with pytest.raises(ValueError, match="non-negative integers"):
        srm.update([1.5, 2])
    with pytest.raises(ValueError, match="non-negative integers"):
        srm.update([-1, 2])
    with pytest.raises(TypeError):
        srm + SampleRatioSequence([0.5, 0.5])  # type: ignore[misc]  # no merge
    assert srm.n == 0


@pytest.mark.slow
@pytest.mark.parametrize("expected", [[0.1, 0.9], [0.5, 0.5], [0.2, 0.3, 0.5]])
def test_false_rejections_under_the_null_stay_below_alpha(expected: list[float]) -> None:
    """Looked at after every 50 units up to 20,000 (400 looks), at alpha 0.05."""
    rng = np.random.default_rng(70 + len(expected))
    counts = np.cumsum(rng.multinomial(50, expected, size=(PATHS, 400)), axis=1)
    # Cross-check the vectorized e-process against the class on the first path.
    srm = SampleRatioSequence(expected)
    for look, batch in enumerate(np.diff(counts[0], axis=0, prepend=0)):
        srm.update(batch)
        assert srm.log_e_value == pytest.approx(log_e_values(counts[0, look], expected))
    rejected = (log_e_values(counts, expected).max(axis=1) >= math.log(1 / 0.05)).mean()
    slack = 3 * math.sqrt(0.05 * 0.95 / PATHS)
    assert rejected <= 0.05 + slack, f"{expected}: false rejections {rejected:.4f}"


def first_rejection(share: float, units: int, alpha: float, seed: int) -> np.ndarray:
    """Units until a declared 10/90 split is rejected, looked at after every unit."""
    rng = np.random.default_rng(seed)
    canary = np.cumsum(rng.random((PATHS, units)) < share, axis=1)
    n = np.arange(1, units + 1)
    rejects = log_e_values(np.stack([canary, n - canary], axis=-1), [0.1, 0.9]) >= math.log(
        1 / alpha
    )
    return np.where(rejects.any(axis=1), rejects.argmax(axis=1) + 1, units + 1)


def test_a_canary_receiving_three_times_its_share_is_caught_within_a_few_hundred_units() -> None:
    """Declared 10%, receiving 30%: rejected at alpha = 0.001 within 300 units in every
    path (measured: median 84, 99% by 171, all by 226 units over 2,000 paths)."""
    first = first_rejection(0.3, 400, 0.001, seed=75)
    report = (
        f"units to reject: median {np.median(first):.0f}, "
        f"99% {np.quantile(first, 0.99):.0f}, max {first.max()}"
    )
    assert first.max() <= 300, report
    assert np.median(first) <= 120, report
    srm = SampleRatioSequence([0.1, 0.9])  # the class agrees on one path
    rng = np.random.default_rng(76)
    canary = rng.random(300) < 0.3
    for start in range(0, 300, 10):
        srm.update(
            [int(canary[start : start + 10].sum()), 10 - int(canary[start : start + 10].sum())]
        )
    assert srm.rejects(0.001) and srm.p_value < 0.001


def test_a_small_imbalance_is_not_rejected_within_2000_units() -> None:
    """Declared 10%, receiving 10.5%: too small to reject at 0.001 within 2,000 units
    (measured: 0.1% of paths)."""
    first = first_rejection(0.105, 2000, 0.001, seed=77)
    rejected = (first <= 2000).mean()
    assert rejected <= 0.02, f"rejected within 2,000 units in {rejected:.4f} of paths"


# --- SplitCounts: distinct units in bounded memory ------------------------------------------------


def digests(pairs: list[tuple[str, int]]) -> np.ndarray:
    """Stand-in digests of (category, unit): distinct pairs, distinct numbers."""
    return np.array([hash(pair) % 2**63 + 1 for pair in pairs], dtype=np.uint64)


def test_split_counts_count_each_unit_once_per_category_in_any_batching() -> None:
    rng = np.random.default_rng(80)
    categories, units = rng.integers(0, 3, 5000).tolist(), rng.integers(0, 800, 5000).tolist()
    pairs = [(str(c), u) for c, u in zip(categories, units, strict=True)]
    oracle = Counter(category for category, _ in set(pairs))
    one = SplitCounts(cap=10_000)
    added = one.update([c for c, _ in pairs], digests(pairs))
    assert one.counts == added == dict(oracle) and one.remembered == len(set(pairs))
    batched = SplitCounts(cap=10_000)
    for start in range(0, len(pairs), 333):
        chunk = pairs[start : start + 333]
        batched.update([c for c, _ in chunk], digests(chunk))
    assert batched == one and batched.counted == "units" and not batched.full


def test_split_counts_freeze_at_the_cap_in_arrival_order_and_forget_the_digests() -> None:
    split = SplitCounts(cap=5)
    pairs = [("a", 1), ("b", 2), ("a", 1), ("a", 3)]
    assert split.update([c for c, _ in pairs], digests(pairs)) == {"a": 2, "b": 1}
    pairs = [("b", 2), ("b", 4), ("a", 5), ("b", 6), ("a", 7)]  # room for two new pairs
    assert split.update([c for c, _ in pairs], digests(pairs)) == {"a": 1, "b": 1}
    assert split.full and split.counts == {"a": 3, "b": 2} and split.remembered == 0
    assert split.update(["a"], digests([("a", 99)])) == {} and split.counts["a"] == 3
    restored = SplitCounts.from_state(orjson.loads(orjson.dumps(split.to_state())))
    assert restored == split and restored.full


def test_split_counts_without_units_count_events() -> None:
    split = SplitCounts(units=False)
    assert split.update(["a", "a", "b"]) == {"a": 2, "b": 1}
    assert split.update(["a"]) == {"a": 1}
    assert (split.counted, split.counts, split.remembered) == ("events", {"a": 3, "b": 1}, 0)


def test_split_counts_state_is_compact_and_exact() -> None:
    split = SplitCounts(cap=50_000)
    units = np.arange(1, 20_001, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    split.update(["x"] * units.size, units)
    encoded = orjson.dumps(split.to_state())
    assert len(encoded) < 11 * units.size  # base64 of 8 bytes a unit, not a list of ints
    restored = SplitCounts.from_state(orjson.loads(encoded))
    assert restored == split and restored.remembered == 20_000
    assert restored.update(["x", "x"], units[:2]) == {}  # still remembered after the trip


def test_split_counts_bad_arguments() -> None:
    with pytest.raises(ValueError, match="cap"):
        SplitCounts(cap=0)
    with pytest.raises(ValueError, match="digest"):
        SplitCounts().update(["a"])
    with pytest.raises(ValueError, match="2 digests"):
        SplitCounts().update(["a", "b"], np.array([1], dtype=np.uint64))
    with pytest.raises(TypeError):
        SplitCounts() + SplitCounts()  # type: ignore[operator]


def test_split_counts_remember_the_same_units_however_the_batches_fall() -> None:
    """Batch by batch (a look after every event included), the counts and the digests
    remembered are those of one batch of everything: each new digest is inserted in
    order, none twice."""
    rng = np.random.default_rng(7)
    units = rng.integers(1, 400, 3_000).astype(np.uint64)  # many repeats
    variants = np.where(units % 10 == 0, "canary", "control").tolist()
    whole = SplitCounts(cap=10_000)
    whole.update(variants, units)
    for size in (1, 7, 500):
        split = SplitCounts(cap=10_000)
        for start in range(0, units.size, size):
            split.update(variants[start : start + size], units[start : start + size])
        assert split.counts == whole.counts
        assert split.to_state()["seen"] == whole.to_state()["seen"]
        assert split.remembered == np.unique(units).size
